"""The low-resolution inputs of a PULSE run, checked and turned into searches (jobs).

Both entries take their inputs here: `PULSE.upsample` (paths, PIL images or tensors) and run.py
(a folder). An input PULSE cannot use raises an `ImageReadError` (a ValueError) that names it
and says why, before any search runs.
"""
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from bicubic import divides_by_power_of_two
from runkit.images import IMAGE_SUFFIXES, ImageReadError, read_rgb, rgb
from runkit.image_tensors import to_tensor


@dataclass
class Input:
    """An image to search, the name its results take (with _k for duplicate k) and the label their
    `input` gets. Give one to `PULSE.upsample` to name the results; its other forms are named here."""
    image: object               # a path, a PIL image, or a [3, r, r] tensor in [0, 1] (checked: a float32 CPU tensor)
    name: str
    label: str


@dataclass
class Job:
    """One result to search for: duplicate k of an input, and the seeds of its tries."""
    source: str                 # the input's label: its path, its place among the images given ("image 2"), or an Input's
    name: str                   # the result's name: the input's name (a path's stem), with _k for duplicate k
    base_seed: int              # the seed of the input's first duplicate
    duplicate: int              # k, from 1
    image: torch.Tensor         # [3, r, r] in [0, 1]
    output: Path | None = None  # where run.py writes the result
    duplicates: int = 1         # of its input: tries of one duplicate are that many seeds apart

    def seed_of_try(self, number):
        """Try t of duplicate k: base_seed + (k - 1) + (t - 1) * duplicates, so no two searches share a seed."""
        return self.base_seed + self.duplicate - 1 + (number - 1) * self.duplicates

    @property
    def seed(self):
        """The seed of its first try."""
        return self.seed_of_try(1)


def draw_seed():
    """A seed for a run that was given none (logged, so the run can be repeated)."""
    return random.SystemRandom().randrange(2 ** 31)


def working_sizes(resolution):
    return [resolution >> k for k in range(resolution.bit_length() - 2, -1, -1)]


def check_size(label, width, height, resolution):
    """ImageReadError unless a width x height input suits a resolution x resolution model."""
    sizes = ", ".join(str(s) for s in working_sizes(resolution))
    if width != height:
        raise ImageReadError(f"{label}: {width}x{height} is not square; align and crop faces with align_face.py")
    if width > resolution:
        raise ImageReadError(f"{label}: {width}x{width} is larger than the {resolution}x{resolution} model; "
                         f"downscale it (align_face.py -output_size) to one of {sizes}")
    if not divides_by_power_of_two(resolution, width):
        raise ImageReadError(f"{label}: side {width} does not divide {resolution} by a power of two; "
                         f"use one of {sizes} (align_face.py -output_size)")


def read_input(path, resolution):
    """The image file at `path` as a [3, r, r] tensor; ImageReadError when PULSE cannot use it."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageReadError(f"{path}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    image = read_rgb(path)
    check_size(path, *image.size, resolution)
    return to_tensor(image)


def path_input(path, resolution):
    """The Input of an image file, read and checked; ImageReadError when PULSE cannot use it."""
    return Input(read_input(path, resolution), Path(path).stem, str(path))


def tensor_input(label, tensor, resolution):
    """A [3, r, r] tensor in [0, 1], checked, as a float32 CPU tensor."""
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ImageReadError(f"{label}: expected a [3, r, r] RGB tensor, got shape {list(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ImageReadError(f"{label}: expected a float tensor in [0, 1], got {tensor.dtype}")
    tensor = tensor.detach().float().cpu()
    if not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
        raise ImageReadError(f"{label}: values must be finite and within [0, 1]")
    check_size(label, tensor.shape[2], tensor.shape[1], resolution)
    return tensor


def image_tensor(image, label, resolution):
    """A path, a PIL image or a tensor as a checked [3, r, r] tensor; ImageReadError naming `label`
    (or the path) when PULSE cannot use it."""
    if isinstance(image, (str, Path)):
        return read_input(image, resolution)
    if isinstance(image, Image.Image):
        check_size(label, *image.size, resolution)
        return to_tensor(rgb(image))
    if isinstance(image, torch.Tensor):
        return tensor_input(label, image, resolution)
    raise ImageReadError(f"{label}: a {type(image).__name__} is not an image; give a path, a PIL image or a tensor")


def named_inputs(images, resolution):
    """[Input with a checked tensor] for what `PULSE.upsample` accepts: a path, a PIL image, a
    [3, r, r] or [B, 3, r, r] tensor in [0, 1], an Input, or a list of these. A path is named by its
    stem, the image at place i of the others "image<i>" (labelled "image i")."""
    if isinstance(images, torch.Tensor):
        images = list(images) if images.dim() == 4 else [images]
    elif isinstance(images, (str, Path, Image.Image, Input)):
        images = [images]
    elif not isinstance(images, (list, tuple)):
        raise ImageReadError(f"images must be a path, a PIL image, a [3, r, r] or [B, 3, r, r] tensor, or a "
                             f"list of paths and images; got {images!r}")
    named = []
    for i, item in enumerate(images):
        if isinstance(item, (str, Path)):
            named.append(path_input(item, resolution))
            continue
        if not isinstance(item, Input):
            item = Input(item, f"image{i}", f"image {i}")
        named.append(Input(image_tensor(item.image, item.label, resolution), item.name, item.label))
    if not named:
        raise ImageReadError("no images given")
    return named


def make_jobs(named, base_seed, duplicates, out_dir=None):
    """One job per Input and duplicate, in order; duplicate k of an input uses base_seed + k - 1."""
    jobs = []
    for item in named:
        for k in range(1, duplicates + 1):
            name = item.name if duplicates == 1 else f"{item.name}_{k}"
            output = Path(out_dir) / f"{name}.png" if out_dir is not None else None
            jobs.append(Job(item.label, name, base_seed, k, item.image, output, duplicates))
    return jobs


def batches(jobs, batch_size):
    """Consecutive jobs grouped by input size, at most batch_size each (the last may be smaller)."""
    batch = []
    for job in jobs:
        if batch and (len(batch) == batch_size or job.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch
