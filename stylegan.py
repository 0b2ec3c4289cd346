"""StyleGAN-1 generator (Karras et al. 2019) in the PyTorch layout PULSE used in 2020.

Parameter and buffer names match the 2020 `synthesis.pt` / `mapping.pt` files exactly, so they
load with `load_state_dict(strict=True)`. The arithmetic follows the 2020 module op for op
(weight scaling, noise, style modulation, fused upscale-conv from 128x128 on), because the
PULSE search in float32 is sensitive to the last bit.

The fast path (`set_fast(True)` on frozen weights, generators/fastops.py; PULSE.build turns it
on): tensors derived from the weights (weight * w_mul, the fused upscale kernel, the expanded blur
kernel) are computed once instead of every call, and results that autograd does not keep are
updated in place instead of copied. Both give bit-identical outputs and gradients;
`set_fast(False)` (the default of a new module) runs the 2020 ops (see bench.py).
"""
import math
import re
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from generators.fastops import FastOps, set_fast

ACTIVATIONS = {"lrelu": lambda: nn.LeakyReLU(negative_slope=0.2), "relu": nn.ReLU}
FUSED_UPSCALE_FROM = 128  # 2020: blocks that make 128x128 or more upscale by a fused transposed conv


class EqualizedLinear(FastOps):
    """Linear layer with StyleGAN's equalized learning rate (weights scaled at run time)."""

    def __init__(self, in_features, out_features, gain=math.sqrt(2), use_wscale=True, lrmul=1.0):
        super().__init__()
        he_std = gain * in_features ** -0.5
        init_std, self.w_mul = (1.0 / lrmul, he_std * lrmul) if use_wscale else (he_std / lrmul, lrmul)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * init_std)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.b_mul = lrmul

    derived = ("scaled_weight", "scaled_bias")

    def scaled_weight(self):
        return self.weight * self.w_mul

    def scaled_bias(self):
        return self.bias * self.b_mul

    def forward(self, x):
        return F.linear(x, self.frozen("scaled_weight"), self.frozen("scaled_bias"))


class Blur(FastOps):
    """Depthwise [1, 2, 1] x [1, 2, 1] low-pass filter (kept as a buffer, as in 2020)."""

    derived = ("expanded_kernel",)

    def __init__(self, channels, taps=(1, 2, 1)):
        super().__init__()
        k = torch.tensor(taps, dtype=torch.float32)
        k = k[:, None] * k[None, :]
        self.register_buffer("kernel", (k / k.sum())[None, None])
        self.channels = channels

    def expanded_kernel(self):
        """The kernel once per channel, for a depthwise convolution."""
        return self.kernel.expand(self.channels, -1, -1, -1).contiguous()

    def forward(self, x):
        pad = (self.kernel.shape[-1] - 1) // 2
        return F.conv2d(x, self.frozen("expanded_kernel"), padding=pad, groups=self.channels)


def upscale_nearest2x(x):
    """Nearest-neighbour 2x upscale (each pixel becomes a 2x2 block)."""
    n, c, h, w = x.shape
    return x.view(n, c, h, 1, w, 1).expand(-1, -1, -1, 2, -1, 2).reshape(n, c, 2 * h, 2 * w)


class EqualizedConv2d(FastOps):
    """3x3 (or 1x1) convolution with equalized learning rate, optionally upscaling 2x first.

    `upscale`: None, "nearest" (upscale by nearest neighbour, then convolve) or "fused"
    (StyleGAN's fused transposed convolution), as the 2020 module chose them by the output size
    (the two are not numerically identical). `intermediate` (the blur) runs before the bias.
    """

    def __init__(self, in_channels, out_channels, kernel_size, gain=math.sqrt(2), use_wscale=True,
                 lrmul=1.0, intermediate=None, upscale=None):
        super().__init__()
        he_std = gain * (in_channels * kernel_size ** 2) ** -0.5
        init_std, self.w_mul = (1.0 / lrmul, he_std * lrmul) if use_wscale else (he_std / lrmul, lrmul)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) * init_std)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.b_mul = lrmul
        self.upscale = upscale
        self.intermediate = intermediate
        self.derived = ("scaled_bias", "fused_upscale_weight" if upscale == "fused" else "scaled_weight")

    def scaled_weight(self):
        return self.weight * self.w_mul

    def scaled_bias(self):
        return self.bias * self.b_mul

    def fused_upscale_weight(self):
        """The 3x3 kernel summed over its four 2x2 shifts: a 4x4 transposed-conv kernel."""
        w = F.pad((self.weight * self.w_mul).permute(1, 0, 2, 3), (1, 1, 1, 1))
        return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]

    def fused_upscale_conv(self, x):
        w = self.frozen("fused_upscale_weight")
        return F.conv_transpose2d(x, w, stride=2, padding=(w.shape[-1] - 1) // 2)

    def forward(self, x):
        bias = self.frozen("scaled_bias")
        pad = self.kernel_size // 2
        if self.upscale == "fused":
            x = self.fused_upscale_conv(x)
        else:
            if self.upscale == "nearest":
                x = upscale_nearest2x(x)
            if self.intermediate is None:
                return F.conv2d(x, self.frozen("scaled_weight"), bias, padding=pad)
            x = F.conv2d(x, self.frozen("scaled_weight"), None, padding=pad)
        if self.intermediate is not None:
            x = self.intermediate(x)
        return self.add(x, bias.view(1, -1, 1, 1))

    @property
    def kernel_size(self):
        return self.weight.shape[-1]


class NoiseLayer(FastOps):
    """Adds per-pixel noise (shared over channels) with a learned per-channel strength.

    On the fast path the noise is added into `x` itself: in G_synthesis x is always a fresh
    convolution output that nothing else holds.
    """

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x, noise=None):
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return self.add(x, self.weight.view(1, -1, 1, 1) * noise)


class StyleMod(FastOps):
    """AdaIN style modulation: a dlatent row gives a per-channel scale and shift."""

    def __init__(self, dlatent_size, channels, use_wscale):
        super().__init__()
        self.lin = EqualizedLinear(dlatent_size, channels * 2, gain=1.0, use_wscale=use_wscale)

    def forward(self, x, dlatent):
        style = self.lin(dlatent).view(-1, 2, x.shape[1], 1, 1)
        return self.add(x * (style[:, 0] + 1.0), style[:, 1])


class PixelNorm(nn.Module):
    def __init__(self, epsilon=1e-8):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + self.epsilon)


class LayerEpilogue(nn.Module):
    """After every conv: noise, activation, normalisation, style modulation."""

    def __init__(self, channels, dlatent_size, use_wscale, use_noise, use_pixel_norm,
                 use_instance_norm, use_styles, activation):
        super().__init__()
        self.noise = NoiseLayer(channels) if use_noise else None
        layers = [("activation", activation)]
        if use_pixel_norm:
            layers.append(("pixel_norm", PixelNorm()))
        if use_instance_norm:
            layers.append(("instance_norm", nn.InstanceNorm2d(channels)))
        self.top_epi = nn.Sequential(OrderedDict(layers))
        self.style_mod = StyleMod(dlatent_size, channels, use_wscale) if use_styles else None

    def forward(self, x, dlatent, noise):
        if self.noise is not None:
            x = self.noise(x, noise)
        x = self.top_epi(x)
        if self.style_mod is not None:
            x = self.style_mod(x, dlatent)
        return x


class InputBlock(nn.Module):
    """The 4x4 block: learned constant (or dense layer), then one 3x3 conv; two style layers."""

    def __init__(self, channels, dlatent_size, const_input_layer, gain, use_wscale, **epilogue):
        super().__init__()
        self.channels = channels
        if const_input_layer:
            self.const = nn.Parameter(torch.ones(1, channels, 4, 4))
            self.bias = nn.Parameter(torch.ones(channels))
        else:
            self.dense = EqualizedLinear(dlatent_size, channels * 16, gain=gain / 4, use_wscale=use_wscale)
        self.epi1 = LayerEpilogue(channels, dlatent_size, use_wscale, **epilogue)
        self.conv = EqualizedConv2d(channels, channels, 3, gain=gain, use_wscale=use_wscale)
        self.epi2 = LayerEpilogue(channels, dlatent_size, use_wscale, **epilogue)

    def forward(self, dlatents, noise):
        batch = dlatents.shape[0]
        if hasattr(self, "const"):
            x = self.const.expand(batch, -1, -1, -1) + self.bias.view(1, -1, 1, 1)
        else:
            x = self.dense(dlatents[:, 0]).view(batch, self.channels, 4, 4)
        x = self.epi1(x, dlatents[:, 0], noise[0])
        x = self.conv(x)
        return self.epi2(x, dlatents[:, 1], noise[1])


class GSynthesisBlock(nn.Module):
    """A block that doubles the resolution: upscale-conv (+ blur), conv; two style layers."""

    def __init__(self, in_channels, out_channels, resolution, blur_filter, dlatent_size, gain, use_wscale,
                 **epilogue):
        super().__init__()
        blur = Blur(out_channels, blur_filter) if blur_filter else None
        self.conv0_up = EqualizedConv2d(in_channels, out_channels, 3, gain=gain, use_wscale=use_wscale,
                                        intermediate=blur,
                                        upscale="fused" if resolution >= FUSED_UPSCALE_FROM else "nearest")
        self.epi1 = LayerEpilogue(out_channels, dlatent_size, use_wscale, **epilogue)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, gain=gain, use_wscale=use_wscale)
        self.epi2 = LayerEpilogue(out_channels, dlatent_size, use_wscale, **epilogue)

    def forward(self, x, dlatents, noise):
        x = self.epi1(self.conv0_up(x), dlatents[:, 0], noise[0])
        return self.epi2(self.conv1(x), dlatents[:, 1], noise[1])


class G_synthesis(nn.Module):
    """Synthesis network: dlatents [N, L, 512] and L noise maps -> image [N, 3, R, R] in [-1, 1].

    L = 2 * log2(R) - 2 layers (18 at 1024x1024). `block_channels` (an extension of the 2020
    signature) overrides the per-block channel counts that fmap_base/decay/max would give.
    """

    def __init__(self, dlatent_size=512, num_channels=3, resolution=1024, fmap_base=8192,
                 fmap_decay=1.0, fmap_max=512, use_styles=True, const_input_layer=True,
                 use_noise=True, randomize_noise=True, nonlinearity="lrelu", use_wscale=True,
                 use_pixel_norm=False, use_instance_norm=True, dtype=torch.float32,
                 blur_filter=(1, 2, 1), block_channels=None):
        super().__init__()
        resolution_log2 = int(math.log2(resolution))
        if resolution != 2 ** resolution_log2 or resolution < 4:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        if block_channels is None:
            block_channels = [min(int(fmap_base / 2.0 ** ((res - 1) * fmap_decay)), fmap_max)
                              for res in range(2, resolution_log2 + 1)]
        self.resolution = resolution
        self.num_layers = 2 * resolution_log2 - 2
        self.dlatent_size = dlatent_size
        gain = math.sqrt(2)
        epilogue = dict(use_noise=use_noise, use_pixel_norm=use_pixel_norm,
                        use_instance_norm=use_instance_norm, use_styles=use_styles,
                        activation=ACTIVATIONS[nonlinearity]())
        blocks = [("4x4", InputBlock(block_channels[0], dlatent_size, const_input_layer, gain,
                                     use_wscale, **epilogue))]
        for res_log2, (c_in, c_out) in enumerate(zip(block_channels, block_channels[1:]), start=3):
            blocks.append((f"{2 ** res_log2}x{2 ** res_log2}",
                           GSynthesisBlock(c_in, c_out, 2 ** res_log2, blur_filter, dlatent_size, gain, use_wscale,
                                           **epilogue)))
        self.torgb = EqualizedConv2d(block_channels[-1], num_channels, 1, gain=1, use_wscale=use_wscale)
        self.blocks = nn.ModuleDict(OrderedDict(blocks))

    @property
    def num_ws(self):
        """Rows of dlatents_in: one per layer."""
        return self.num_layers

    @property
    def noise_sizes(self):
        """The side of each layer's noise map: two layers per resolution, 4x4 first."""
        return [2 ** (i // 2 + 2) for i in range(self.num_layers)]

    default_bad_noise_layers = frozenset({17})  # PULSE 2020: the last 1024x1024 layer adds artifacts

    def set_fast(self, enabled):
        """Fast path on (frozen weights only) or off (the 2020 ops, e.g. as a benchmark baseline)."""
        return set_fast(self, enabled)

    def forward(self, dlatents_in, noise_in):
        x = None
        for i, block in enumerate(self.blocks.values()):
            layers = slice(2 * i, 2 * i + 2)
            args = (dlatents_in[:, layers], noise_in[layers])
            x = block(*args) if x is None else block(x, *args)
        return self.torgb(x)


class G_mapping(nn.Sequential):
    """Mapping network: z [N, 512] -> w [N, 512] (pixel norm, then 8 dense layers)."""

    z_dim = 512

    def __init__(self, nonlinearity="lrelu", use_wscale=True):
        act = ACTIVATIONS[nonlinearity]()
        layers = [("pixel_norm", PixelNorm())]
        for i in range(8):
            layers += [(f"dense{i}", EqualizedLinear(512, 512, gain=math.sqrt(2), lrmul=0.01,
                                                    use_wscale=use_wscale)),
                       (f"dense{i}_act", act)]
        super().__init__(OrderedDict(layers))


def synthesis_from_state_dict(state_dict):
    """Build a G_synthesis whose architecture fits `state_dict` (any resolution 4..1024).

    The resolution comes from the largest `blocks.RxR` name, the channels of each block from
    its conv weights, so tiny test models and other checkpoints load without flags.
    """
    sizes = sorted({int(m.group(1)) for key in state_dict
                    if (m := re.match(r"blocks\.(\d+)x\1\.", key))})
    if not sizes or sizes[0] != 4:
        raise ValueError("not a StyleGAN-1 synthesis state dict (no blocks.4x4.* tensors)")
    channels = [state_dict["blocks.4x4.conv.weight"].shape[0]]
    channels += [state_dict[f"blocks.{r}x{r}.conv1.weight"].shape[0] for r in sizes[1:]]
    return G_synthesis(dlatent_size=state_dict["blocks.4x4.epi1.style_mod.lin.weight"].shape[1],
                       num_channels=state_dict["torgb.weight"].shape[0],
                       resolution=sizes[-1], block_channels=channels)
