"""Image files <-> tensors, with the 2020 conversions (ToTensor in, ToPILImage out)."""
import torch
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from errors import PulseError
from runkit.files import save_image

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


def to_tensor(image):
    """PIL RGB image -> float32 [3, H, W] in [0, 1] (torchvision ToTensor semantics)."""
    array = np.asarray(image, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div(255)


def to_pil(tensor):
    """[3, H, W] in [0, 1] -> PIL image; values are truncated like torchvision's ToPILImage."""
    array = tensor.detach().clamp(0, 1).mul(255).byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


@torch.no_grad()
def downscale_image(downscale, image):
    """PIL `image` through `downscale` (a bicubic.BicubicDownSample, on its device), as the search
    downscales what it compares with its input."""
    return to_pil(downscale(to_tensor(image)[None].to(downscale.k1))[0])


def save_tensor_image(tensor, path):
    save_image(to_pil(tensor), path)
