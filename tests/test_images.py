"""Image <-> tensor conversions keep the 2020 (torchvision ToTensor / ToPILImage) semantics."""
import numpy as np
import torch
from PIL import Image

from runkit.images import read_rgb
from runkit.image_tensors import to_pil, to_tensor


def test_to_pil_truncates_like_to_pil_image():
    values = torch.tensor([-0.5, 0.0, 0.999, 1 / 255, 0.5, 1.0, 1.7], dtype=torch.float64)
    image = to_pil(values.view(1, 1, -1).expand(3, 1, -1))
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 0, 254, 1, 127, 255, 255]


def test_to_tensor_scales_bytes_to_unit_range():
    pixels = np.array([[[0, 128, 255]]], dtype=np.uint8)
    tensor = to_tensor(Image.fromarray(pixels))
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 1, 1)
    assert torch.equal(tensor.flatten(), torch.tensor([0.0, 128.0, 255.0]) / 255)


def test_round_trip_is_lossless(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    assert np.array_equal(np.asarray(to_pil(to_tensor(read_rgb(tmp_path / "x.png")))), pixels)
