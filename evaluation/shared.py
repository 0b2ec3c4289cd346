"""What evaluate.py's jobs share: the images of a folder they read, PSNR, and the numbers of their tables."""
import statistics
from pathlib import Path

import numpy as np

from runkit.exits import SetupError
from runkit.images import IMAGE_SUFFIXES, read_rgb


def list_images(folder):
    """The images of a folder, leaving out run.py's comparison strips (they are not results)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_strip"))


def load_rgb(path):
    """An HxWx3 uint8 array (alpha dropped, grey expanded, EXIF rotation applied)."""
    return np.asarray(read_rgb(path))


def summarise(values):
    values = list(values)
    if not values:
        return {"count": 0, "mean": None, "median": None}
    return {"count": len(values), "mean": statistics.fmean(values), "median": statistics.median(values)}


def fmt(value, width=9):
    return f"{value:{width}.3f}" if value is not None else f"{'-':>{width}}"


def psnr_from_mse(mse, peak):
    """PSNR in dB of a mean squared error between images whose values reach `peak`; inf for equal images."""
    return 10 * np.log10(peak ** 2 / mse) if mse > 0 else float("inf")


def check_folders(folders, image_folders):
    """Refuse (SetupError) a folder of `folders` that is missing, or one of `image_folders` without an image."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise SetupError(f"{folder} is not a folder")
    for folder in image_folders:
        if not list_images(folder):
            raise SetupError(f"{folder} has no png, jpg, jpeg or webp images")
