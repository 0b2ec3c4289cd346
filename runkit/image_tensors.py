"""Images as tensors, with the 2020 conversions (torchvision's ToTensor in, ToPILImage out)."""
from functools import partial

import numpy as np
import torch
from PIL import Image

from bicubic import BicubicDownSample
from runkit.files import save_image


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


def bicubic_downscaler(factor, device="cpu"):
    """A function shrinking a PIL image `factor` times (a power of two) with PULSE's bicubic operator on `device`."""
    return partial(downscale_image, BicubicDownSample(factor).to(device))


def save_tensor_image(tensor, path):
    save_image(to_pil(tensor), path)
