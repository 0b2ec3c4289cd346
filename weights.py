"""Finding, checking and loading the generator weights.

A file is looked up in `-cache_dir` by its plain name, then by the 2020 cache names
`<md5 of url>_<name>`. Filling an empty cache is weight_sources.py's job; the one download
made here is the 2020 `mapping.pt`, when the gaussian fit has to be rebuilt. Every `.pt` is read with
`weights_only=True` and `map_location`, so the 2020 files (old pickle format, CUDA storages)
load on any machine and a downloaded file can never run code. `gaussian_fit.pt` (the latent
statistics PULSE needs) is bundled; when it is missing it is rebuilt from `mapping.pt`.

A cache folder holding `<family>-synthesis.pt` holds a generator convert_weights.py converted from
a PyTorch network instead (NVIDIA's StyleGAN2 or StyleGAN3, a rosinality checkpoint; see
CONVERTED_FAMILIES): never downloaded from the 2020 links, never given the bundled StyleGAN-1 fit.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

import rosinality
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


# ---- generators converted from PyTorch networks by convert_weights.py --------------------------
# A family's cache folder holds `<family>-synthesis.pt` and `<family>-mapping.pt` (state dicts,
# named as their authors' code names them) and `<family>.json` (what the state dicts do not hold).


@dataclass(frozen=True)
class ConvertedFamily:
    title: str               # how messages name it
    build_synthesis: object  # (synthesis state dict, attributes) -> synthesis network shaped like it
    build_mapping: object    # (mapping state dict, attributes) -> mapping network shaped like it


def nvidia_mapping(state, attributes):
    """NVIDIA's StyleGAN2 and StyleGAN3 mapping network (they are the same)."""
    return stylegan2.mapping_from_state_dict(state, attributes["mapping_lr_multiplier"])


CONVERTED_FAMILIES = {
    "stylegan2": ConvertedFamily(  # NVIDIA's stylegan2-ada-pytorch (and stylegan3's StyleGAN2 config)
        "StyleGAN2", lambda state, attributes: stylegan2.synthesis_from_state_dict(state, attributes["conv_clamp"]),
        nvidia_mapping),
    "stylegan3": ConvertedFamily(  # NVIDIA's stylegan3, configs T and R
        "StyleGAN3", lambda state, attributes: stylegan3.synthesis_from_state_dict(state, attributes["synthesis"]),
        nvidia_mapping),
    "rosinality": ConvertedFamily(  # rosinality/stylegan2-pytorch checkpoints
        "rosinality StyleGAN2", lambda state, _: rosinality.synthesis_from_state_dict(state),
        lambda state, _: rosinality.mapping_from_state_dict(state)),
}


def family_files(family):
    return {"synthesis": f"{family}-synthesis.pt", "mapping": f"{family}-mapping.pt", "attributes": f"{family}.json"}


def converted_family(folder):
    """The family of the converted generator in `folder`, or None."""
    return next((family for family in CONVERTED_FAMILIES
                 if (Path(folder) / family_files(family)["synthesis"]).is_file()), None)


def holds_generator(folder):
    """Whether `folder` has a generator to load: a StyleGAN-1 synthesis.pt or a converted one."""
    return cached_file(folder, "synthesis.pt") is not None or converted_family(folder) is not None


def converted_networks(family, synthesis_state, mapping_state, attributes, source):
    """(synthesis, mapping), frozen, of `family` built from its state dicts and the attributes not
    in them; WeightsError naming `source` if they do not fit."""
    kind = CONVERTED_FAMILIES[family]
    try:
        synthesis = kind.build_synthesis(synthesis_state, attributes)
        synthesis.load_state_dict(synthesis_state, strict=True)
        mapping = kind.build_mapping(mapping_state, attributes)
        mapping.load_state_dict(mapping_state, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise WeightsError(f"{source} is not a {kind.title} generator this port can run: "
                           f"{str(e).strip().splitlines()[0]}") from e
    return synthesis.eval().requires_grad_(False), mapping.eval().requires_grad_(False)


def save_converted(cache_dir, family, synthesis_state, mapping_state, attributes):
    files = {name: Path(cache_dir) / file for name, file in family_files(family).items()}
    save_tensors(synthesis_state, files["synthesis"])
    save_tensors(mapping_state, files["mapping"])
    with atomic_path(files["attributes"]) as tmp:
        Path(tmp).write_text(json.dumps(attributes, indent=1))
    return list(files.values())


def load_converted(cache_dir):
    """(synthesis, mapping) of the converted generator in `cache_dir`."""
    family = converted_family(cache_dir)
    paths = {name: Path(cache_dir) / file for name, file in family_files(family).items()}
    try:
        attributes = json.loads(paths["attributes"].read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{paths['attributes']} is missing or not JSON ({e}); convert the network again "
                           f"with convert_weights.py") from e
    if not isinstance(attributes, dict):
        raise WeightsError(f"{paths['attributes']} does not hold the generator's attributes")
    return converted_networks(family, load_tensors(paths["synthesis"]), load_tensors(paths["mapping"]), attributes,
                              paths["synthesis"])


def load_generator(cache_dir, log=print):
    """(synthesis network, gaussian fit) for a run, from `cache_dir` (weight_sources.weights_folder
    fills it first where it is empty).

    A cache with a converted generator (`<family>-synthesis.pt`) takes its gaussian fit from the
    cache or its own mapping network, never from the bundled StyleGAN-1 file."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    family = converted_family(cache_dir)
    if family:
        synthesis, mapping = load_converted(cache_dir)
        fit = cached_gaussian_fit([Path(cache_dir)], cache_dir, synthesis.dlatent_size, log, lambda: mapping,
                                  family_files(family)["mapping"])
        return synthesis, fit
    path = cached_file(cache_dir, "synthesis.pt")
    if path is None:
        raise WeightsError(f"{cache_dir}/ holds no generator: no synthesis.pt (nor a converted network, "
                           f"<family>-synthesis.pt); see README, 'Getting the weights'")
    synthesis = load_synthesis(path)
    return synthesis, gaussian_fit_for(cache_dir, synthesis.dlatent_size, log)
