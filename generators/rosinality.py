"""The generator of rosinality/stylegan2-pytorch checkpoints (StyleGAN2), in this project's code.

It computes what rosinality's `model.Generator` computes (its CPU path), with its parameter names
(`conv1`, `convs.N`, `to_rgb1`, `to_rgbs.N`, `style.N`, `noises.noise_N`) so a checkpoint's
`g_ema` loads with `load_state_dict(strict=True)` (rosinality_checkpoints.py reads the files and
splits `g_ema` into the synthesis network's tensors and the mapping's, `style.*`).
Its arithmetic is StyleGAN2's, with its own conventions: weights stored [1, out, in, k, k] and
scaled by 1/sqrt(fan-in) in the forward pass (demodulation sees the scaled weight), blur kernels
stored with their upsampling gain of 4, a ToRGB bias of shape [1, 3, 1, 1], noise weight and
activation bias in their own modules. The convolution and upsampling steps are stylegan2.py's:
with a [1, 3, 3, 1] kernel they pad as rosinality's do.
"""
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from generators.fastops import FastOps, set_fast
from generators.stylegan2 import (LRELU_GAIN, FullyConnected, bias_act, conv_up2x, demodulation, fir_filter, normalize_2nd_moment,
                       upsample2d)

MAPPING_LR_MULTIPLIER = 0.01  # its Generator's lr_mlp: train.py never sets another, no checkpoint stores it
UPSAMPLE_GAIN = 4  # a 2x upsampling filter's gain, which its stored blur kernels carry


class PixelNorm(nn.Module):
    def forward(self, z):
        return normalize_2nd_moment(z)


class MappingNetwork(nn.Module):
    """z [B, 512] -> w [B, 512]: its `style` (pixel norm, then lrelu dense layers style.1, style.2, ...)."""

    def __init__(self, style_dim=512, n_mlp=8, lr_multiplier=MAPPING_LR_MULTIPLIER):
        super().__init__()
        self.z_dim = style_dim
        self.style = nn.Sequential(PixelNorm(), *[FullyConnected(style_dim, style_dim, lrelu=True,
                                                                 lr_multiplier=lr_multiplier) for _ in range(n_mlp)])

    def forward(self, z):
        return self.style(z)


class UpsampleKernel(nn.Module):
    """Holds the [1, 3, 3, 1] blur kernel as rosinality stores it (with the upsampling gain)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", fir_filter() * UPSAMPLE_GAIN)

    def fir(self):
        """The kernel normalised to sum 1, as stylegan2.py's resampling takes it (exact: a power of 2)."""
        return self.kernel / UPSAMPLE_GAIN


class ModulatedConv2d(FastOps):
    """Modulated convolution, demodulated or not, optionally upsampling 2x first."""

    def __init__(self, in_channels, out_channels, kernel_size, style_dim, demodulate=True, upsample=False):
        super().__init__()
        self.derived = ("scaled_weight", "weight_sq") if demodulate else ("scaled_weight",)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = FullyConnected(style_dim, in_channels, bias_init=1)
        if upsample:
            self.blur = UpsampleKernel()
        self.demodulate = demodulate
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def scaled_weight(self):
        return self.weight[0] * self.scale

    def weight_sq(self):
        return self.scaled_weight().square().sum(dim=[2, 3]).t()

    def forward(self, x, w):
        styles = self.modulation(w)
        weight = self.frozen("scaled_weight")
        x = x * styles[:, :, None, None]
        if hasattr(self, "blur"):
            x = conv_up2x(x, weight, self.blur.fir())
        else:
            x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            x = x * demodulation(styles, self.frozen("weight_sq"))[:, :, None, None]
        return x


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class StyledConv(nn.Module):
    """3x3 modulated conv (upsampling or not), noise times its weight, bias, leaky ReLU times sqrt(2)."""

    def __init__(self, in_channels, out_channels, style_dim, upsample=False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x, w, noise):
        x = self.conv(x, w)
        if noise is not None:
            x = x + self.noise.weight * noise
        return bias_act(x, self.activate.bias, lrelu=True, gain=LRELU_GAIN)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, plus bias, plus the previous image upsampled 2x."""

    def __init__(self, in_channels, style_dim, upsample=True):
        super().__init__()
        if upsample:
            self.upsample = UpsampleKernel()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, w, skip=None):
        out = self.conv(x, w) + self.bias
        return out if skip is None else out + upsample2d(skip, self.upsample.fir())


class ConstantInput(nn.Module):
    def __init__(self, channels, size=4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))


class SynthesisNetwork(nn.Module):
    """ws [B, n_latent, 512] and one noise map [B, 1, r, r] (or None) per conv layer -> image.

    Its `g_ema` without the mapping (`style.*`): conv1 and to_rgb1 at 4x4, then per resolution
    two `convs` (the first upsampling) and a `to_rgbs` that adds to the upsampled image. Conv
    layer i takes ws[:, i], a ToRGB the row after its resolution's last conv layer (shared with
    the next resolution's first), as rosinality's forward splits them. `noises.noise_i` are the
    checkpoint's own maps (its `randomize_noise=False`), in the order of the noise list.
    """

    def __init__(self, channels, style_dim=512):
        """`channels`: of the 4x4 layers, then of each higher resolution."""
        super().__init__()
        self.input = ConstantInput(channels[0])
        self.conv1 = StyledConv(channels[0], channels[0], style_dim)
        self.to_rgb1 = ToRGB(channels[0], style_dim, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for in_channels, out_channels in zip(channels[:-1], channels[1:]):
            self.convs.append(StyledConv(in_channels, out_channels, style_dim, upsample=True))
            self.convs.append(StyledConv(out_channels, out_channels, style_dim))
            self.to_rgbs.append(ToRGB(out_channels, style_dim))
        self.noises = nn.Module()
        self.noise_sizes = [4] + [4 * 2 ** (i // 2 + 1) for i in range(len(self.convs))]
        for i, size in enumerate(self.noise_sizes):
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, size, size))
        self.resolution, self.dlatent_size = self.noise_sizes[-1], style_dim
        self.num_ws = len(self.noise_sizes) + 1

    @property
    def default_bad_noise_layers(self):
        """The last noise layer, the one at full resolution, as for NVIDIA's StyleGAN2 (the same
        network converted from NVIDIA's pickle searches the same way either way it is read)."""
        return frozenset({len(self.noise_sizes) - 1})

    def noise_const(self):
        return [getattr(self.noises, f"noise_{i}") for i in range(len(self.noise_sizes))]

    def set_fast(self, enabled):
        return set_fast(self, enabled)

    def forward(self, ws, noise=None):
        noise = [None] * len(self.noise_sizes) if noise is None else noise
        x = self.conv1(self.input.input.expand(ws.shape[0], -1, -1, -1), ws[:, 0], noise[0])
        image = self.to_rgb1(x, ws[:, 1])
        for i, to_rgb in enumerate(self.to_rgbs):
            first, second = 2 * i, 2 * i + 1
            x = self.convs[first](x, ws[:, first + 1], noise[first + 1])
            x = self.convs[second](x, ws[:, second + 1], noise[second + 1])
            image = to_rgb(x, ws[:, second + 2], image)
        return image


def synthesis_from_state_dict(state_dict):
    """A SynthesisNetwork shaped like `state_dict` (rosinality's names), channels from the tensors."""
    if "conv1.conv.weight" not in state_dict:
        raise ValueError("not a rosinality synthesis state dict (no conv1.conv.weight)")
    pairs = len({m.group(1) for key in state_dict if (m := re.match(r"to_rgbs\.(\d+)\.", key))})
    channels = [state_dict["conv1.conv.weight"].shape[1]]
    channels += [state_dict[f"convs.{2 * i}.conv.weight"].shape[1] for i in range(pairs)]
    return SynthesisNetwork(channels, style_dim=state_dict["conv1.conv.modulation.weight"].shape[1])


def mapping_from_state_dict(state_dict):
    n_mlp = len([key for key in state_dict if re.fullmatch(r"style\.\d+\.weight", key)])
    if n_mlp == 0:
        raise ValueError("not a rosinality mapping state dict (no style.1.weight)")
    return MappingNetwork(state_dict["style.1.weight"].shape[0], n_mlp)
