"""Network files -> a cache folder PULSE loads: the library under convert_weights.py and -network.

A network file of any family in families.FAMILIES becomes the cache folder weights.py describes:
synthesis.pt, mapping.pt, gaussian_fit.pt (the last two where the family needs a fit) and
generator.json.

The format is told from the file's content (read_network). NVIDIA's pickles are read by
nvidia_pickles.py's allowlist unpickler, torch.save files (rosinality's, the DCGAN's) by
torch_files.py (weights_only): nothing stored in either (NVIDIA's network source code included)
is ever executed. Which family a file is, how its weights are read and whether it needs a fit is
families.py's answer.
"""
import logging
from pathlib import Path

from weightfiles import families, nvidia_pickles, releases, torch_files, weights
from runkit.files import file_md5, preparing
from weightfiles.download import fetch
from errors import WeightsError

logger = logging.getLogger("pulse")


def report_network(path):
    """The file's MD5, telling NVIDIA's released pickles apart from other pickles (warned about)."""
    md5 = file_md5(path)
    release = releases.nvidia_pickle_with(md5)
    if release:
        logger.info(f"recognised NVIDIA's {release.title} ({release.file})")
    elif not torch_files.is_torch_save_file(path):
        logger.warning(f"warning: {path} (MD5 {md5}) is not one of NVIDIA's released pickles that this port "
                       f"knows; converting it anyway")
    return md5


def gaussian_fit_of(family, mapping, md5):
    """The gaussian fit of the network file whose MD5 is `md5`: the one its family ships for that very
    file (Family.bundled_fit), else fitted from its `mapping` network."""
    bundled = family.bundled_fit(md5)
    if bundled:
        logger.info(f"taking the bundled {bundled.name} of this network: the 2020 fit")
        return weights.load_gaussian_fit(bundled)
    return weights.fit_gaussian(mapping)


def check_cache_family(cache_dir, family):
    """Refuse to write over a generator of another family (the user's 2020 files, say)."""
    there = weights.folder_family(cache_dir)
    if there not in (None, family):
        raise WeightsError(f"{cache_dir} already holds a {families.family(there).title} generator; "
                           f"convert into another -cache_dir")


def read_network(path):
    """The object in the network file at `path`, for families.family_of: a file torch.save wrote is
    read as a torch_files.TorchFile, any other as NVIDIA's pickle."""
    if torch_files.is_torch_save_file(path):
        return torch_files.read(path)
    return nvidia_pickles.read(path)


def convert(network_path, cache_dir, source=None):
    """Write the cache folder (weights.py) of the network file at `network_path` into `cache_dir`;
    `source` (default: the file's path) is recorded in generator.json. Returns the file's MD5."""
    md5 = report_network(network_path)
    network_file = read_network(network_path)
    cache_dir = Path(cache_dir)
    name = families.family_of(network_file)
    check_cache_family(cache_dir, name)
    family = families.FAMILIES[name]
    synthesis_state, mapping_state, attributes = family.read(network_file, str(network_path))
    where = f"the network in {network_path}"
    synthesis = families.build(name, "synthesis", synthesis_state, attributes, where)
    mapping = families.build(name, "mapping", mapping_state, attributes, where) if family.needs_fit else None
    logger.info(f"converted a {synthesis.resolution}x{synthesis.resolution} generator ({family.title}: "
                f"{synthesis.num_ws} ws of {synthesis.dlatent_size}, {len(synthesis.noise_sizes)} noise layers)")
    fit = gaussian_fit_of(family, mapping, md5) if family.needs_fit else None
    record = {"family": name, "attributes": attributes, "source": source or str(Path(network_path).resolve()),
              "md5": md5}
    weights.save_generator(cache_dir, record, synthesis, mapping, fit)
    logger.info(f"saved the generator to {cache_dir}/")
    return md5


def fetch_and_convert(source, cache_dir, keep_pickle=False):
    """Download `source`'s network file into `cache_dir` (verified before it is read), convert it there
    and delete it unless `keep_pickle`; returns its MD5. A file kept earlier is reused."""
    network_path = Path(cache_dir) / source.file
    if not (network_path.is_file() and source.md5 in (None, file_md5(network_path))):
        fetch(source.url, network_path, source.md5, source.size)
    md5 = convert(network_path, cache_dir, source=source.url)
    if not keep_pickle:
        network_path.unlink()
    return md5


def download_release(name, cache_dir, keep_pickle=False):
    """NVIDIA's `name` pickle from the first of its sources that works, converted into `cache_dir`."""
    def attempt(source):
        return fetch_and_convert(source, cache_dir, keep_pickle)
    with preparing(cache_dir):
        return releases.fetch_first(releases.sources(name), attempt, f"no {name} weights in {cache_dir}/",
                                    releases.ways_on(cache_dir))
