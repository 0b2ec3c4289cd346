"""Differentiable bicubic downscaling, the operator PULSE inverts.

The filter is the bicubic kernel (a = -0.5) stretched by the downscaling factor, applied as
two strided 1-D convolutions with reflect padding, exactly as the 2020 code did. The taps are
computed in float32 (as in 2020) and cast to whatever dtype the module is moved to.
"""
import torch
from torch import nn
from torch.nn import functional as F


def bicubic_weight(x, a=-0.5):
    """Keys' cubic convolution kernel evaluated at offsets x (a float32 tensor)."""
    x = x.abs()
    near = (a + 2.0) * x.pow(3.0) - (a + 3.0) * x.pow(2.0) + 1
    far = a * x.pow(3) - 5.0 * a * x.pow(2.0) + 8.0 * a * x - 4.0 * a
    return torch.where(x <= 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def bicubic_taps(factor):
    """The 4*factor normalised filter taps for downscaling by `factor`."""
    size = 4 * factor
    centre = torch.floor(torch.tensor(size / 2))
    offsets = (torch.arange(size, dtype=torch.float32) - centre + 0.5) / factor
    taps = bicubic_weight(offsets)
    return taps / taps.sum()


def is_power_of_two(n):
    return n >= 1 and n & (n - 1) == 0


def divides_by_power_of_two(large, small):
    """Whether `small` divides `large` by a power of two: a downscale this operator can make."""
    return small >= 1 and large % small == 0 and is_power_of_two(large // small)


class BicubicDownSample(nn.Module):
    """Downscale an NCHW image batch with C = 3 by a power-of-two `factor`."""

    def __init__(self, factor=4, padding="reflect", channels=3):
        super().__init__()
        if not is_power_of_two(factor):
            raise ValueError(f"bicubic factor must be a power of two, got {factor}")
        self.factor = factor
        self.padding = padding
        taps = bicubic_taps(factor)
        size = taps.numel()
        self.register_buffer("k1", taps.view(1, 1, size, 1).repeat(channels, 1, 1, 1))
        self.register_buffer("k2", taps.view(1, 1, 1, size).repeat(channels, 1, 1, 1))
        pad = size - factor
        self.pad_before, self.pad_after = pad // 2, pad - pad // 2

    def forward(self, x):
        groups = x.shape[1]
        x = F.pad(x, (0, 0, self.pad_before, self.pad_after), self.padding)
        x = F.conv2d(x, self.k1, stride=(self.factor, 1), groups=groups)
        x = F.pad(x, (self.pad_before, self.pad_after, 0, 0), self.padding)
        return F.conv2d(x, self.k2, stride=(1, self.factor), groups=groups)
