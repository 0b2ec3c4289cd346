"""Image files read the one way every part of PULSE reads them: upright, 8-bit RGB (tensors: image_tensors.py)."""
from PIL import Image, ImageOps, UnidentifiedImageError

from errors import PulseError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class ImageReadError(PulseError, ValueError):
    """An input that is no image PULSE can take (the message names it and says why)."""


def read_rgb(path):
    """The image at `path` as 8-bit RGB: upright (EXIF), alpha flattened onto white, grey expanded."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so that a damaged file fails here
            im = ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = "empty file" if path.stat().st_size == 0 else f"not a readable image ({e})"
        raise ImageReadError(f"{path}: {reason}") from e
    return rgb(im)


def rgb(im):
    """A PIL image as 8-bit RGB, alpha flattened onto white, grey expanded."""
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        # Transparent pixels hold arbitrary colours: show them on white instead.
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return im.convert("RGB")
