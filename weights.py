"""Finding, downloading, checking and loading the generator weights.

Search order for each file: `-cache_dir` (plain name, then the 2020 cache names
`<md5 of url>_<name>`), then the 2020 download link. Every `.pt` is read with
`weights_only=True` and `map_location`, so the 2020 files (old pickle format, CUDA storages)
load on any machine and a downloaded file can never run code. `gaussian_fit.pt` (the latent
statistics PULSE needs) is bundled; when it is missing it is rebuilt from `mapping.pt`.
"""
import hashlib
from pathlib import Path

import torch

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
    """Path of `name` in the cache, downloading it if needed; WeightsError if impossible."""
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
    for folder in (Path(cache_dir), SCRIPT_DIR):
        if (folder / "gaussian_fit.pt").is_file():
            return load_gaussian_fit(folder / "gaussian_fit.pt", dlatent_size)
    mapping = load_mapping(find_or_download(cache_dir, "mapping.pt"))
    log(f"gaussian_fit.pt not found: fitting it from mapping.pt ({GAUSSIAN_FIT_DRAWS:,} draws)")
    fit = fit_gaussian(mapping, draws=GAUSSIAN_FIT_DRAWS)
    save_tensors(fit, Path(cache_dir) / "gaussian_fit.pt")
    log(f"saved {Path(cache_dir) / 'gaussian_fit.pt'}")
    return fit


def load_generator(cache_dir, log=print):
    """(synthesis network, gaussian fit) for a run, from `cache_dir` or the 2020 links."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    synthesis = load_synthesis(find_or_download(cache_dir, "synthesis.pt"))
    return synthesis, gaussian_fit_for(cache_dir, synthesis.dlatent_size, log)
