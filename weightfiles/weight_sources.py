"""The folder of weight files a run loads: -cache_dir, filled from the web if empty, or -network.

Without -network, a `-cache_dir` that holds no generator is filled from the first source that
works: the 2020 link, then NVIDIA's FFHQ pickle (CDN, then Google Drive), checked by MD5 before
it is unpickled and converted. `-network` names a cache folder (or a `.pt` file in one), a
network file of any family in families.FAMILIES, such a file's URL, or a generator that comes in a
Python package (releases.PACKAGED: `dcgan-digiface`); a network file is converted once into
`-cache_dir/<name>/`, and a later run finds that conversion (its generator.json) without touching
the network. A folder of 2020 files with no gaussian fit anywhere gets the 2020 mapping.pt, to
fit one from.

All of this happens under the cache folder's lock (files.preparing), so processes starting
together on an empty cache do one download and one conversion between them; when it fails, the
disk is left as it was.
"""
import difflib
import hashlib
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

from weightfiles import conversion, releases, torch_files, weights
from runkit.files import file_md5, preparing
from weightfiles.download import fetch, short_reason
from errors import WeightsError

logger = logging.getLogger("pulse")


def fetch_2020_file(source, cache_dir):
    """A 2020 synthesis.pt, kept only if it loads as one."""
    path = fetch(source.url, Path(cache_dir) / source.file, source.md5, source.size)
    try:
        weights.load_network(cache_dir, "synthesis")
    except WeightsError:
        path.unlink()
        raise


def fill_default_cache(cache_dir, keep_pickle=False):
    """Make sure `cache_dir` holds a generator, from the default source chain if need be."""
    if weights.holds_generator(cache_dir):
        return
    with preparing(cache_dir):
        if weights.holds_generator(cache_dir):  # made by another process while this one waited
            return
        logger.info(f"no generator in {cache_dir}/: downloading NVIDIA's FFHQ model (about 300 MB) and converting it")

        def attempt(source):
            if source.file.endswith(".pt"):
                return fetch_2020_file(source, cache_dir)
            return conversion.fetch_and_convert(source, cache_dir, keep_pickle)
        releases.fetch_first(releases.sources(*releases.DEFAULT_CHAIN), attempt,
                             f"no generator weights in {cache_dir}/", releases.ways_on(cache_dir))


def fetch_2020_mapping(folder):
    """The 2020 fallback for a folder of 2020 files without any gaussian fit: their mapping.pt, to fit one."""
    if weights.read_record(folder) or not weights.lacks_gaussian_fit(folder):  # converted folders have their own
        return
    with preparing(folder):
        if weights.lacks_gaussian_fit(folder):
            releases.fetch_first(releases.sources("2020 mapping"),
                                 lambda source: fetch(source.url, Path(folder) / source.file, source.md5, source.size),
                                 f"{folder}/ has no gaussian_fit.pt nor a mapping.pt to fit one from",
                                 [f"Put the 2020 mapping.pt (or a gaussian_fit.pt) into {folder}/"])


def is_url(text):
    return urlparse(str(text)).scheme in ("http", "https")


def url_folder_name(url):
    """The pickle's name in the URL; a URL with a query (as Drive's are) also gets a hash of itself."""
    parsed = urlparse(url)
    name = Path(unquote(parsed.path)).stem or "network"
    return f"{name}-{hashlib.md5(url.encode()).hexdigest()[:8]}" if parsed.query else name


def convert_once(folder, is_current, convert):
    """`folder` after `convert()` has written into it, unless its generator.json passes `is_current`."""
    if not is_current(weights.read_record(folder)):
        with preparing(folder.parent, inside=folder):
            if not is_current(weights.read_record(folder)):  # else another process converted it meanwhile
                convert()
    return folder


def is_checkpoint_to_convert(path):
    """A `.pt` written by torch.save outside a cache folder: a network file (rosinality's, a DCGAN's),
    not one of the cache's own files."""
    return torch_files.is_torch_save_file(path) and not weights.holds_generator(path.parent)


def convert_file_once(path, folder):
    """`folder` holding the conversion of the network file at `path`, converted unless it already is."""
    md5 = file_md5(path)
    return convert_once(folder, lambda record: record.get("md5") == md5,
                        lambda: conversion.convert(path, folder))


def packaged_hint(path):
    """For a -network that is a bare name (no folder, no suffix) and no file: the packaged generators' names,
    and the closest one (a typo of one, such as dcgan_digiface)."""
    if path.suffix or len(path.parts) != 1:
        return ""
    close = difflib.get_close_matches(path.name, releases.PACKAGED, n=1)
    return (f", nor a packaged generator ({', '.join(releases.PACKAGED)})"
            + (f": did you mean {close[0]}?" if close else ""))


def network_folder(network, cache_dir, keep_pickle=False):
    """The folder of weight files for `-network`: a packaged generator's name, a folder as it is (a
    `.pt` file stands for its folder, unless it is a checkpoint to convert), a network file (a
    pickle, a torch.save file; a path or a URL) converted once."""
    cache_dir = Path(cache_dir)
    if network in releases.PACKAGED:
        return convert_file_once(releases.packaged_file(network), cache_dir / network)
    if is_url(network):
        folder = cache_dir / url_folder_name(network)
        source = releases.Source(network, network, Path(unquote(urlparse(network).path)).name or "network.pkl")

        def convert():
            try:
                conversion.fetch_and_convert(source, folder, keep_pickle)
            except OSError as e:
                raise releases.network_error(network, f": {short_reason(e)}") from e
        return convert_once(folder, lambda record: record.get("source") == network, convert)
    path = Path(network)
    if path.suffix == ".pt" and path.is_file() and not is_checkpoint_to_convert(path):
        path = path.parent
    if path.is_dir():
        if not weights.holds_generator(path):
            raise releases.network_error(network, f": {path} holds no generator (no synthesis.pt)")
        return path
    if not path.is_file():
        raise releases.network_error(network, f": no such file or folder{packaged_hint(path)}")
    return convert_file_once(path, cache_dir / path.stem)


def weights_folder(network, cache_dir, keep_pickle=False):
    """Where run.py loads the generator from (see the module's doc)."""
    if network:
        folder = network_folder(network, cache_dir, keep_pickle)
    else:
        fill_default_cache(cache_dir, keep_pickle)
        folder = Path(cache_dir)
    fetch_2020_mapping(folder)
    return folder
