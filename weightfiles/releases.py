"""Where the generator weights are published: NVIDIA's StyleGAN-1 pickles and the 2020 links.

NVIDIA's files are licensed CC BY-NC 4.0 (github.com/NVlabs/stylegan). The CDN is where NVIDIA
mirrored its StyleGAN Drive folder (its metric networks are served from there); the Drive
ids are the ones in NVIDIA's README.

For tests only: the environment variable PULSE_TEST_WEIGHT_SOURCES, a JSON object
`{"sources": {"2020": [...], "ffhq": [...]}, "gaussian_draws": N}`, replaces the listed
source lists (each source an object with the fields of `Source`) and the number of draws of
the gaussian fit made after converting a model that is not FFHQ.
"""
import json
import os
from dataclasses import dataclass

from weightfiles.download import short_reason
from weightfiles.errors import WeightsError

TEST_OVERRIDE = "PULSE_TEST_WEIGHT_SOURCES"
CDN = "https://nvlabs-fi-cdn.nvidia.com/stylegan/networks"


@dataclass(frozen=True)
class Source:
    label: str  # how the user is told about it
    url: str
    file: str  # name of the downloaded file: a 2020 `.pt`, or a network pickle to convert
    md5: str | None = None  # required for NVIDIA's files: nothing else is unpickled as theirs
    size: int | None = None


def nvidia_release(file, md5, drive_id):
    return [Source("NVIDIA's CDN", f"{CDN}/{file}", file, md5),
            Source("NVIDIA's Google Drive", f"https://drive.google.com/uc?id={drive_id}&export=download", file, md5)]


LINKS_2020 = {  # the 2020 Google Drive links (dead since 2021, kept as the fallback they were)
    "synthesis.pt": "https://drive.google.com/uc?id=1TCViX1YpQyRsklTVYEJwdbmK91vklCo8",
    "mapping.pt": "https://drive.google.com/uc?id=14R6iHGf5iuVx3DMNsACAl7eBr7Vdpd0k",
}
SOURCES = {
    "2020": [Source("the 2020 PULSE link", LINKS_2020["synthesis.pt"], "synthesis.pt")],
    "2020 mapping": [Source("the 2020 PULSE link", LINKS_2020["mapping.pt"], "mapping.pt")],
    "ffhq": nvidia_release("karras2019stylegan-ffhq-1024x1024.pkl", "9f4c085b663ed283f5853cc662bd0883",
                           "1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ"),
    "celebahq": nvidia_release("karras2019stylegan-celebahq-1024x1024.pkl", "6604978f22ef7caea1ef5ca723282b43",
                               "1MGqJl28pN4t7SAtSrPdSRJSQJqahkzUf"),
}
DEFAULT_CHAIN = ("2020", "ffhq")  # what run.py tries when -cache_dir has no synthesis.pt
DOWNLOADABLE = ("ffhq", "celebahq")  # convert_weights.py --download NAME


def test_override():
    text = os.environ.get(TEST_OVERRIDE)
    return json.loads(text) if text else {}


def sources(*names):
    """The sources of the named releases, in order (the test override where it names them)."""
    override = test_override().get("sources", {})
    return [Source(**s) if name in override else s
            for name in names for s in override.get(name, SOURCES[name])]


def gaussian_draws(default):
    return test_override().get("gaussian_draws", default)


def fetch_first(candidates, attempt, missing, by_hand, log=print):
    """`attempt(source)` for each source in turn until one works; else one WeightsError of short lines:
    `missing`, each source with why it failed, then `by_hand` (what the user can do instead)."""
    failures = []
    for source in candidates:
        log(f"getting the weights from {source.label}: {source.url}")
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
