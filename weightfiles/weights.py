"""The project's own weight files: a cache folder, read and written safely.

A cache folder holds one generator, the same names for every family:

    synthesis.pt     the synthesis network's state dict, under its family's own parameter names
    mapping.pt       the mapping network's state dict (needed only to fit gaussian_fit.pt)
    gaussian_fit.pt  {"mean": [w_dim], "std": [w_dim]} of LeakyReLU(5)(mapping(z)), z ~ N(0, I)
                     (the two only for a family that needs a fit: families.Family.needs_fit)
    generator.json   {"family": "stylegan2", "attributes": {"conv_clamp": 256.0, ...},
                      "source": the pickle's path or URL, "md5": the pickle's MD5}

conversion.py writes generator.json last, so a folder with it holds a finished conversion:
`family` is a key of families.FAMILIES, `attributes` are the numbers its state dicts do not hold
(StyleGAN2: conv_clamp, mapping_lr_multiplier). A folder without generator.json holds the 2020
PULSE files (StyleGAN-1), also found under the 2020 cache names `<md5 of the 2020 link>_synthesis.pt`;
when it has no gaussian_fit.pt, the one bundled beside the scripts (families.BUNDLED_FIT, the 2020
fit of FFHQ) is used. Any other folder of a family that needs a fit and has no gaussian_fit.pt gets
one fitted from its mapping.pt and saved.

Every `.pt` is read with `weights_only=True` and `map_location="cpu"`, so the 2020 files (old
pickle format, CUDA storages) load on any machine and a file can never run code. Getting
NVIDIA's networks onto the disk is the sources' job (releases.py, weight_sources.py).
"""
import json
import logging
from pathlib import Path

import torch

from weightfiles import families
from errors import WeightsError  # also where callers have always found it: weights.WeightsError
from runkit.files import atomic_path

RECORD = "generator.json"
GAUSSIAN_FIT_DRAWS = 1_000_000  # the 2020 recipe's; read when a fit is made, so that a test can lower it
# The 2020 code cached a download as `<md5 of its link>_<the name Drive gave it>` (links in releases.py).
LINK_MD5_2020 = {"synthesis.pt": "6b943ee69b8491ac40e8e9ced6175659", "mapping.pt": "05118276f14e736e63065765a09feb78"}
EARLIER_STYLEGAN2 = "stylegan2-synthesis.pt"  # how the previous version stored a StyleGAN2 (with stylegan2.json)
logger = logging.getLogger("pulse")


def cached_file(folder, name):
    """`folder/name`, or a 2020-style `<md5>_...` / `<anything>_name` file, or None."""
    folder = Path(folder)
    if (folder / name).is_file():
        return folder / name
    prefix = LINK_MD5_2020.get(name)
    for candidate in sorted(folder.glob(f"*_{name}")) + (sorted(folder.glob(f"{prefix}_*")) if prefix else []):
        if candidate.is_file() and not candidate.name.startswith("."):
            return candidate
    return None


def load_tensors(path):
    """A dict of tensors from a `.pt` file, safely; WeightsError naming the file otherwise."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path} is not a readable PyTorch weights file ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path} does not hold a dict of tensors")
    return data


def save_tensors(tensors, path):
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)


def read_record(folder):
    """The folder's generator.json, or {} for a folder of 2020 files (or none at all)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        if (Path(folder) / EARLIER_STYLEGAN2).is_file():
            raise WeightsError(f"{folder} holds a StyleGAN2 in an earlier version's format: delete it and "
                               f"convert the pickle again (convert_weights.py, or -network)")
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path} is not readable JSON ({e}); convert the network again") from e
    if not (isinstance(record, dict) and isinstance(record.get("family"), str)
            and isinstance(record.get("attributes", {}), dict)):
        raise WeightsError(f"{path} does not describe a generator; convert the network again")
    return record


def folder_family(folder):
    """The family name of the generator in `folder`, or None when it holds none."""
    record = read_record(folder)
    if record:
        return record.get("family")
    return families.DEFAULT if cached_file(folder, "synthesis.pt") else None


def holds_generator(folder):
    return folder_family(folder) is not None


def load_network(folder, part):
    """The `part` network ("synthesis" or "mapping") of the generator in `folder`, frozen."""
    record = read_record(folder)
    path = cached_file(folder, f"{part}.pt")
    if path is None:
        raise WeightsError(f"{folder}/ has no {part}.pt (see docs/weights.md)")
    return families.build(record.get("family", families.DEFAULT), part, load_tensors(path),
                          record.get("attributes", {}), path)


def save_generator(folder, record, synthesis, mapping=None, fit=None):
    """Write a cache folder (see the module's doc): the `.pt` files (mapping and fit where the family
    needs a fit), then `record` as generator.json."""
    folder = Path(folder)
    save_tensors(synthesis.state_dict(), folder / "synthesis.pt")
    if mapping is not None:
        save_tensors(mapping.state_dict(), folder / "mapping.pt")
        save_tensors(fit, folder / "gaussian_fit.pt")
    with atomic_path(folder / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def load_gaussian_fit(path, dlatent_size=512):
    fit = load_tensors(path)
    if set(fit) != {"mean", "std"} or any(v.shape != (dlatent_size,) for v in fit.values()):
        raise WeightsError(f"{path} is not a gaussian fit: expected 'mean' and 'std' of shape [{dlatent_size}]")
    return fit


@torch.no_grad()
def fit_gaussian(mapping, draws=None, seed=0, chunk=32768, device="cpu"):
    """The 2020 recipe: mean and std of LeakyReLU(5)(mapping(z)) over `draws` z ~ N(0, I), z of the
    mapping's `z_dim` (`draws` by default GAUSSIAN_FIT_DRAWS): the statistics of
    generator.MappedGaussian, the StyleGAN families' prior.

    Draws come from the CPU generator seeded with `seed`, in chunks (so memory stays small)
    that continue one random stream; sums are kept in float64, std is unbiased as in 2020.
    """
    draws = GAUSSIAN_FIT_DRAWS if draws is None else draws
    logger.info(f"fitting the latent gaussian ({draws:,} draws of the mapping network)")
    generator = torch.Generator().manual_seed(seed)
    mapping = mapping.to(device)
    total = total_sq = 0  # float64 sums over the draws, per coordinate of w
    for start in range(0, draws, chunk):
        z = torch.randn(min(chunk, draws - start), mapping.z_dim, generator=generator).to(device)
        w = torch.nn.functional.leaky_relu(mapping(z), negative_slope=5).double()
        total += w.sum(0)
        total_sq += (w * w).sum(0)
    mean = total / draws
    var = (total_sq - draws * mean * mean) / (draws - 1)
    return {"mean": mean.float().cpu(), "std": var.sqrt().float().cpu()}


def gaussian_fit_file(folder):
    """The gaussian fit a run of `folder` takes: its own, or for 2020 files the bundled one; else None."""
    own = Path(folder) / "gaussian_fit.pt"
    if own.is_file():
        return own
    bundled = families.BUNDLED_FIT
    return bundled if not read_record(folder) and bundled.is_file() else None


def lacks_gaussian_fit(folder):
    """Whether the generator in `folder` needs a gaussian fit (its family's answer) and has neither
    one for a run nor a mapping.pt to fit one from."""
    name = folder_family(folder)
    return (name is not None and families.family(name).needs_fit and gaussian_fit_file(folder) is None
            and cached_file(folder, "mapping.pt") is None)


def gaussian_fit(folder, dlatent_size):
    """The gaussian fit for a run of `folder` (gaussian_fit_file), else fitted from its mapping.pt and saved."""
    path = gaussian_fit_file(folder)
    if path is not None:
        return load_gaussian_fit(path, dlatent_size)
    logger.info(f"gaussian_fit.pt not found in {folder}/: fitting it from mapping.pt")
    fit = fit_gaussian(load_network(folder, "mapping"))
    destination = Path(folder) / "gaussian_fit.pt"
    save_tensors(fit, destination)
    logger.info(f"saved {destination}")
    return fit


def load_generator(folder):
    """(synthesis network, its prior: a generator.Prior) for a run of the generator in `folder`; the
    prior of a family that needs a fit holds the folder's gaussian fit (gaussian_fit).
    weight_sources.weights_folder finds or fills the folder first; nothing is downloaded here."""
    if not holds_generator(folder):
        raise WeightsError(f"{folder}/ holds no generator: no synthesis.pt (see docs/weights.md)")
    family = families.family(folder_family(folder))
    synthesis = load_network(folder, "synthesis")
    fit = gaussian_fit(folder, synthesis.dlatent_size) if family.needs_fit else None
    return synthesis, family.prior(synthesis, fit)
