"""Finding, checking and loading the generator weights.

A file is looked up in `-cache_dir` by its plain name, then by the 2020 cache names
`<md5 of url>_<name>`. Filling an empty cache is weight_sources.py's job; the one download
made here is the 2020 `mapping.pt`, when the gaussian fit has to be rebuilt. Every `.pt` is read with
`weights_only=True` and `map_location`, so the 2020 files (old pickle format, CUDA storages)
load on any machine and a downloaded file can never run code. `gaussian_fit.pt` (the latent
statistics PULSE needs) is bundled; when it is missing it is rebuilt from `mapping.pt`.

A cache folder holding `stylegan2-synthesis.pt` holds a StyleGAN2 generator instead (written by
convert_weights.py; never downloaded from the 2020 links, never given the bundled StyleGAN-1 fit).
"""
import hashlib
import json
from pathlib import Path

import torch

import stylegan2
import stylegan3
from download import fetch
from files import atomic_path
from stylegan import G_mapping, synthesis_from_state_dict

URLS = {  # the 2020 Google Drive links (dead since 2021, kept as the fallback they were)
    "synthesis.pt": "https://drive.google.com/uc?id=1TCViX1YpQyRsklTVYEJwdbmK91vklCo8",
    "mapping.pt": "https://drive.google.com/uc?id=14R6iHGf5iuVx3DMNsACAl7eBr7Vdpd0k",
}
SCRIPT_DIR = Path(__file__).resolve().parent
GAUSSIAN_FIT_DRAWS = 1_000_000


class WeightsError(RuntimeError):
    """A weights file is missing, damaged or of the wrong kind (the message says which)."""


def cached_file(cache_dir, name):
    """`cache_dir/name`, or a 2020-style `<md5>_...` / `<anything>_name` file, or None."""
    cache_dir = Path(cache_dir)
    if (cache_dir / name).is_file():
        return cache_dir / name
    url_md5 = hashlib.md5(URLS[name].encode()).hexdigest() if name in URLS else None
    for candidate in sorted(cache_dir.glob(f"*_{name}")) + sorted(cache_dir.glob(f"{url_md5}_*")):
        if candidate.is_file() and not candidate.name.startswith("."):
            return candidate
    return None


def find_or_download(cache_dir, name):
    """Path of `name` in the cache, downloaded from its 2020 link if need be; WeightsError if impossible."""
    found = cached_file(cache_dir, name)
    if found:
        return found
    destination = Path(cache_dir) / name
    try:
        fetch(URLS[name], destination)
    except OSError as e:  # any network or HTTP failure ends the same way: tell the user what to do
        raise WeightsError(
            f"{name} is not in {cache_dir}/ and could not be downloaded ({e}).\n"
            f"Put the 2020 {name} at {destination}, or convert NVIDIA's StyleGAN pickle with "
            f"`python convert_weights.py karras2019stylegan-ffhq-1024x1024.pkl -cache_dir {cache_dir}` "
            f"(see README, 'Getting the weights').") from e
    return destination


def load_tensors(path):
    """A dict of tensors from a `.pt` file, safely; WeightsError naming the file otherwise."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path} is not a readable PyTorch weights file ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path} does not hold a dict of tensors")
    return data


def load_synthesis(path):
    """The synthesis network stored at `path`, its architecture inferred from the tensors."""
    state = load_tensors(path)
    try:
        model = synthesis_from_state_dict(state)
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path} is not a StyleGAN-1 synthesis network: {str(e).splitlines()[0]}") from e
    return model.eval().requires_grad_(False)


def load_mapping(path):
    state = load_tensors(path)
    model = G_mapping()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path} is not a StyleGAN-1 mapping network: {str(e).splitlines()[0]}") from e
    return model.eval().requires_grad_(False)


def load_gaussian_fit(path, dlatent_size=512):
    fit = load_tensors(path)
    if set(fit) != {"mean", "std"} or any(v.shape != (dlatent_size,) for v in fit.values()):
        raise WeightsError(f"{path} is not a gaussian fit: expected 'mean' and 'std' of shape [{dlatent_size}]")
    return fit


@torch.no_grad()
def fit_gaussian(mapping, draws=GAUSSIAN_FIT_DRAWS, seed=0, chunk=32768, device="cpu"):
    """The 2020 recipe: mean and std of LeakyReLU(5)(mapping(z)) over `draws` z ~ N(0, I).

    Draws come from the CPU generator seeded with `seed`, in chunks (so memory stays small)
    that continue one random stream; sums are kept in float64, std is unbiased as in 2020.
    """
    generator = torch.Generator().manual_seed(seed)
    mapping = mapping.to(device)
    total = torch.zeros(512, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total)
    for start in range(0, draws, chunk):
        z = torch.randn(min(chunk, draws - start), 512, generator=generator).to(device)
        w = torch.nn.functional.leaky_relu(mapping(z), negative_slope=5).double()
        total += w.sum(0)
        total_sq += (w * w).sum(0)
    mean = total / draws
    var = (total_sq - draws * mean * mean) / (draws - 1)
    return {"mean": mean.float().cpu(), "std": var.sqrt().float().cpu()}


def save_tensors(tensors, path):
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)


def gaussian_fit_for(cache_dir, dlatent_size=512, log=print):
    """Load gaussian_fit.pt from the cache or the script folder, or rebuild it from mapping.pt."""
    return cached_gaussian_fit([Path(cache_dir), SCRIPT_DIR], cache_dir, dlatent_size, log,
                               lambda: load_mapping(find_or_download(cache_dir, "mapping.pt")), "mapping.pt")


def cached_gaussian_fit(folders, cache_dir, dlatent_size, log, load_mapping_network, mapping_name):
    """gaussian_fit.pt from the first of `folders` that has one, else fitted and saved to `cache_dir`."""
    for folder in folders:
        if (folder / "gaussian_fit.pt").is_file():
            return load_gaussian_fit(folder / "gaussian_fit.pt", dlatent_size)
    mapping = load_mapping_network()
    log(f"gaussian_fit.pt not found: fitting it from {mapping_name}")
    return fit_and_save_gaussian(mapping, Path(cache_dir) / "gaussian_fit.pt", GAUSSIAN_FIT_DRAWS, log)


def fit_and_save_gaussian(mapping, destination, draws, log):
    """fit_gaussian of `mapping`, saved to `destination` and returned."""
    log(f"fitting the latent gaussian ({draws:,} draws of the mapping network)")
    fit = fit_gaussian(mapping, draws=draws)
    save_tensors(fit, destination)
    log(f"saved {destination}")
    return fit


# ---- StyleGAN2 (converted from NVIDIA's stylegan2-ada-pytorch pickles by convert_weights.py) ----

STYLEGAN2_FILES = {"synthesis": "stylegan2-synthesis.pt", "mapping": "stylegan2-mapping.pt",
                   "attributes": "stylegan2.json"}


def is_stylegan2_cache(cache_dir):
    return (Path(cache_dir) / STYLEGAN2_FILES["synthesis"]).is_file()


def holds_generator(folder):
    """Whether `folder` has a generator to load: a StyleGAN-1 synthesis.pt or a StyleGAN2 one."""
    return cached_file(folder, "synthesis.pt") is not None or is_stylegan2_cache(folder)


def built_networks(family, source, synthesis_state, mapping_state, build_synthesis, build_mapping):
    """(synthesis, mapping), frozen, from `build_*(state)` loaded with their state dicts; WeightsError
    naming `source` if the tensors do not fit the `family`'s networks."""
    try:
        synthesis = build_synthesis(synthesis_state)
        synthesis.load_state_dict(synthesis_state, strict=True)
        mapping = build_mapping(mapping_state)
        mapping.load_state_dict(mapping_state, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise WeightsError(f"{source} is not a {family} generator this port can run: "
                           f"{str(e).strip().splitlines()[0]}") from e
    return synthesis.eval().requires_grad_(False), mapping.eval().requires_grad_(False)


def stylegan2_networks(synthesis_state, mapping_state, attributes, source):
    """(synthesis, mapping) built from NVIDIA-named state dicts and the attributes not in them
    (`conv_clamp`, `mapping_lr_multiplier`); WeightsError naming `source` if they do not fit."""
    return built_networks(
        "StyleGAN2", source, synthesis_state, mapping_state,
        lambda state: stylegan2.synthesis_from_state_dict(state, attributes["conv_clamp"]),
        lambda state: stylegan2.mapping_from_state_dict(state, attributes["mapping_lr_multiplier"]))


def stylegan3_networks(synthesis_state, mapping_state, attributes, source):
    """(synthesis, mapping) of a StyleGAN3 from NVIDIA-named state dicts and the attributes not in
    them (`synthesis`: stylegan3.attributes_of_pickle's, `mapping_lr_multiplier`)."""
    return built_networks(
        "StyleGAN3", source, synthesis_state, mapping_state,
        lambda state: stylegan3.synthesis_from_state_dict(state, attributes["synthesis"]),
        lambda state: stylegan2.mapping_from_state_dict(state, attributes["mapping_lr_multiplier"]))


def save_stylegan2(cache_dir, synthesis_state, mapping_state, attributes):
    cache_dir = Path(cache_dir)
    save_tensors(synthesis_state, cache_dir / STYLEGAN2_FILES["synthesis"])
    save_tensors(mapping_state, cache_dir / STYLEGAN2_FILES["mapping"])
    with atomic_path(cache_dir / STYLEGAN2_FILES["attributes"]) as tmp:
        Path(tmp).write_text(json.dumps(attributes, indent=1))


def load_stylegan2(cache_dir):
    """(synthesis, mapping) of the StyleGAN2 generator in `cache_dir`."""
    paths = {name: Path(cache_dir) / file for name, file in STYLEGAN2_FILES.items()}
    try:
        attributes = json.loads(paths["attributes"].read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{paths['attributes']} is missing or not JSON ({e}); convert the network again "
                           f"with convert_weights.py") from e
    if not isinstance(attributes, dict):
        raise WeightsError(f"{paths['attributes']} does not hold the generator's attributes")
    return stylegan2_networks(load_tensors(paths["synthesis"]), load_tensors(paths["mapping"]), attributes,
                              paths["synthesis"])


def load_generator(cache_dir, log=print):
    """(synthesis network, gaussian fit) for a run, from `cache_dir` (weight_sources.weights_folder
    fills it first where it is empty).

    A cache with `stylegan2-synthesis.pt` holds a StyleGAN2 generator: its gaussian fit comes from
    the cache or its own mapping network, never from the bundled StyleGAN-1 file."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    if is_stylegan2_cache(cache_dir):
        synthesis, mapping = load_stylegan2(cache_dir)
        fit = cached_gaussian_fit([Path(cache_dir)], cache_dir, synthesis.dlatent_size, log, lambda: mapping,
                                  STYLEGAN2_FILES["mapping"])
        return synthesis, fit
    path = cached_file(cache_dir, "synthesis.pt")
    if path is None:
        raise WeightsError(f"{cache_dir}/ holds no generator: no synthesis.pt (nor a converted StyleGAN2, "
                           f"{STYLEGAN2_FILES['synthesis']}); see README, 'Getting the weights'")
    synthesis = load_synthesis(path)
    return synthesis, gaussian_fit_for(cache_dir, synthesis.dlatent_size, log)
