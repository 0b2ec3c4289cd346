"""The folder of weight files a run loads: -cache_dir, filled from the web if empty, or -network.

Without -network, a `-cache_dir` that has no synthesis.pt is filled from the first source
that works: the 2020 link, then NVIDIA's FFHQ pickle (CDN, then Google Drive), checked by
MD5 before it is unpickled and converted. `-network` names a folder of 2020 `.pt` files (or of a
converted network), a network file convert_weights.py reads (NVIDIA's StyleGAN-1, StyleGAN2 or
StyleGAN3 pickle, a rosinality checkpoint), or such a file's URL; a file is converted once into `-cache_dir/<name>/`, and a later run finds that conversion without
touching the network.

All of this happens under the cache folder's lock (files.folder_lock), so processes starting
together on an empty cache do one download and one conversion between them.
"""
import hashlib
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import convert_weights
import releases
import weights
from download import fetch
from files import atomic_path, file_md5, folder_lock

RECORD = "converted_from.json"  # written last: a folder with it holds a finished conversion


def fetch_2020_file(source, cache_dir):
    """A 2020 synthesis.pt, kept only if it loads as one."""
    path = fetch(source.url, Path(cache_dir) / source.file, source.md5, source.size)
    try:
        weights.load_synthesis(path)
    except weights.WeightsError:
        path.unlink()
        raise


def fill_default_cache(cache_dir, keep_pickle=False, log=print):
    """Make sure `cache_dir` has a generator (a synthesis.pt, or a converted network), from the
    default source chain if need be."""
    if weights.holds_generator(cache_dir):
        return
    with folder_lock(cache_dir, log):
        if weights.holds_generator(cache_dir):  # made by another process while this one waited
            return
        log(f"no synthesis.pt in {cache_dir}/: downloading NVIDIA's FFHQ model (about 300 MB) and converting it")

        def attempt(source):
            if source.file.endswith(".pt"):
                return fetch_2020_file(source, cache_dir)
            return convert_weights.fetch_and_convert(source, cache_dir, keep_pickle, releases.gaussian_draws(), log)
        releases.fetch_first(releases.sources(*releases.DEFAULT_CHAIN), attempt, cache_dir, log)


def is_url(text):
    return urlparse(str(text)).scheme in ("http", "https")


def url_folder_name(url):
    """The pickle's name in the URL; a URL with a query (as Drive's are) also gets a hash of itself."""
    parsed = urlparse(url)
    name = Path(unquote(parsed.path)).stem or "network"
    return f"{name}-{hashlib.md5(url.encode()).hexdigest()[:8]}" if parsed.query else name


def finished_conversion(folder):
    """The record of the conversion in `folder`, or {} when there is none (or it is incomplete)."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if weights.holds_generator(folder) else {}


def convert_once(folder, is_current, convert, log):
    """`folder` after `convert()` has written into it, unless a finished conversion passes `is_current`."""
    if not is_current(finished_conversion(folder)):
        with folder_lock(folder.parent, log):
            if not is_current(finished_conversion(folder)):  # else another process converted it meanwhile
                record = convert()
                with atomic_path(folder / RECORD) as tmp:
                    tmp.write_text(json.dumps(record, indent=1) + "\n")
    return folder


def network_folder(network, cache_dir, keep_pickle=False, log=print):
    """The folder of weight files for `-network`: a folder as it is, a pickle (file or URL) converted once."""
    cache_dir = Path(cache_dir)
    if is_url(network):
        folder = cache_dir / url_folder_name(network)
        source = releases.Source(network, network, Path(unquote(urlparse(network).path)).name or "network.pkl")

        def convert():
            try:
                md5 = convert_weights.fetch_and_convert(source, folder, keep_pickle, releases.gaussian_draws(), log)
            except OSError as e:
                raise weights.WeightsError(f"-network {network}: {e}") from e
            return {"source": network, "md5": md5}
        return convert_once(folder, lambda record: record.get("source") == network, convert, log)
    path = Path(network)
    if path.is_dir():
        if not weights.holds_generator(path):
            raise weights.WeightsError(f"-network {network}: the folder has no synthesis.pt "
                                       f"(nor a converted network, <family>-synthesis.pt)")
        return path
    if not path.is_file():
        raise weights.WeightsError(f"-network {network}: no such file or folder")
    md5 = file_md5(path)
    folder = cache_dir / path.stem

    def convert():
        convert_weights.convert(path, folder, releases.gaussian_draws(), log)
        return {"source": str(path.resolve()), "md5": md5}
    return convert_once(folder, lambda record: record.get("md5") == md5, convert, log)


def weights_folder(network, cache_dir, keep_pickle=False, log=print):
    """Where run.py loads the generator from (see the module's doc)."""
    if network:
        return network_folder(network, cache_dir, keep_pickle, log)
    fill_default_cache(cache_dir, keep_pickle, log)
    return Path(cache_dir)
