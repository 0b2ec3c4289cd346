"""Where the generator weights are published: NVIDIA's StyleGAN-1 pickles, the 2020 links, and the
generators that come inside a Python package (PACKAGED, named by -network NAME).

NVIDIA's files are licensed CC BY-NC 4.0 (github.com/NVlabs/stylegan). The CDN is where NVIDIA
mirrored its StyleGAN Drive folder (its metric networks are served from there); the Drive
ids are the ones in NVIDIA's README. Every list of sources is read from SOURCES when it is
tried (tests put their own server's there).
"""
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

from runkit.files import file_digest
from weightfiles.download import short_reason
from errors import WeightsError, about_setting

logger = logging.getLogger("pulse")

CDN = "https://nvlabs-fi-cdn.nvidia.com/stylegan/networks"


@dataclass(frozen=True)
class Source:
    label: str  # how the user is told about it
    url: str
    file: str  # name of the downloaded file: a 2020 `.pt`, or a network pickle to convert
    md5: str | None = None  # required for NVIDIA's files: nothing else is unpickled as theirs
    size: int | None = None


@dataclass(frozen=True)
class NvidiaPickle:
    """One of NVIDIA's released StyleGAN-1 pickles. Its MD5 is written here only: a download is
    checked against it before it is unpickled, and a conversion recognises the file by it."""
    title: str  # what it is, for messages
    file: str
    md5: str
    drive_id: str

    def sources(self):
        return [Source("NVIDIA's CDN", f"{CDN}/{self.file}", self.file, self.md5),
                Source("NVIDIA's Google Drive", f"https://drive.google.com/uc?id={self.drive_id}&export=download",
                       self.file, self.md5)]


NVIDIA_PICKLES = {
    "ffhq": NvidiaPickle("FFHQ 1024x1024", "karras2019stylegan-ffhq-1024x1024.pkl",
                         "9f4c085b663ed283f5853cc662bd0883", "1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ"),
    "celebahq": NvidiaPickle("CelebA-HQ 1024x1024", "karras2019stylegan-celebahq-1024x1024.pkl",
                             "6604978f22ef7caea1ef5ca723282b43", "1MGqJl28pN4t7SAtSrPdSRJSQJqahkzUf"),
}
LINKS_2020 = {  # the 2020 Google Drive links (dead since 2021, kept as the fallback they were)
    "synthesis.pt": "https://drive.google.com/uc?id=1TCViX1YpQyRsklTVYEJwdbmK91vklCo8",
    "mapping.pt": "https://drive.google.com/uc?id=14R6iHGf5iuVx3DMNsACAl7eBr7Vdpd0k",
}
SOURCES = {
    "2020": [Source("the 2020 PULSE link", LINKS_2020["synthesis.pt"], "synthesis.pt")],
    "2020 mapping": [Source("the 2020 PULSE link", LINKS_2020["mapping.pt"], "mapping.pt")],
    **{name: release.sources() for name, release in NVIDIA_PICKLES.items()},
}


def nvidia_pickle_with(md5):
    """The NvidiaPickle whose MD5 is `md5`, or None."""
    return next((release for release in NVIDIA_PICKLES.values() if release.md5 == md5), None)


@dataclass(frozen=True)
class Packaged:
    """A generator's weight file shipped inside a Python package: only that file is read, by the
    family's reader (never the package's code, which is never imported)."""
    distribution: str  # the package's name on PyPI
    version: str
    file: str  # the weight file's path among the installed distribution's files
    sha256: str
    about: str  # what it is, for the docs and messages

    @property
    def install(self):
        # --no-deps: the package's own requirements (wandb, ...) are not needed to read one file;
        # --ignore-requires-python: its metadata asks for Python < 3.13, which reading a file does not.
        return f"pip install --no-deps --ignore-requires-python {self.distribution}=={self.version}"


PACKAGED = {
    "dcgan-digiface": Packaged("gan-face-generate", "1.1.1", "gan_face_generate/weights.tar",
                               "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
                               "the PyTorch tutorial's DCGAN (z of 100, 64x64 RGB) trained on DigiFace-1M"),
}


def network_error(network, rest):
    """A WeightsError about the network `network` (its name, path or URL), with `rest` after it: the API
    names the argument (network='...'), the scripts the flag (-network ...)."""
    return about_setting(WeightsError, "network", lambda named: named(network) + rest)


def packaged_file(name):
    """The installed weight file of PACKAGED[name], its SHA-256 checked; WeightsError in one line
    saying what to install when the package is missing, or refusing a file whose hash differs."""
    packaged = PACKAGED[name]
    try:
        distribution = importlib.metadata.distribution(packaged.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise network_error(name, f" needs the weights of the PyPI package {packaged.distribution}: "
                                  f"{packaged.install}") from None
    found = [f for f in distribution.files or () if f.as_posix() == packaged.file]
    path = Path(distribution.locate_file(found[0])) if found else None
    if path is None or not path.is_file():
        raise network_error(name, f": the installed {packaged.distribution} has no {packaged.file}; "
                                  f"reinstall it: {packaged.install}")
    if file_digest(path, "sha256") != packaged.sha256:
        raise network_error(name, f": {path} is not {packaged.distribution} {packaged.version}'s "
                                  f"{Path(packaged.file).name} (its SHA-256 differs); refusing it: {packaged.install}")
    return path


DEFAULT_CHAIN = ("2020", "ffhq")  # what run.py tries when -cache_dir has no synthesis.pt
DOWNLOADABLE = tuple(NVIDIA_PICKLES)  # convert_weights.py --download NAME


def sources(*names):
    """The sources of the named releases, in order."""
    return [source for name in names for source in SOURCES[name]]


def fetch_first(candidates, attempt, missing, by_hand):
    """`attempt(source)` for each source in turn until one works; else one WeightsError of short lines:
    `missing`, each source with why it failed, then `by_hand` (what the user can do instead)."""
    failures = []
    for source in candidates:
        logger.info(f"getting the weights from {source.label}: {source.url}")
        try:
            return attempt(source)
        except (OSError, WeightsError) as e:
            failures.append(f"  - {source.label}: {short_reason(e)}")
    raise WeightsError("\n".join([f"{missing}, and every source failed:", *failures, *by_hand]))


def ways_on(cache_dir):
    """What a user without a working source can do instead (docs/weights.md)."""
    return ["To go on by hand (docs/weights.md):",
            f"  - convert a pickle you have: python convert_weights.py PICKLE -cache_dir {cache_dir}",
            f"  - put the 2020 synthesis.pt and mapping.pt into {cache_dir}/",
            "  - or run on a StyleGAN2 pickle with -network FILE_OR_URL"]
