"""StyleGAN2 generator (Karras et al. 2020) computing what NVIDIA's stylegan2-ada-pytorch computes.

Plain PyTorch, no custom kernels and no code from NVIDIA's pickles. Parameter and buffer names are
those of NVIDIA's `G_ema.synthesis` / `G_ema.mapping` (`b64.conv0.affine.weight`, `fc0.bias`, ...),
so a converted network loads with `load_state_dict(strict=True)`. The arithmetic follows NVIDIA's
`force_fp32` path: per-sample modulation of the activations, a shared convolution, demodulation
after it (NVIDIA's non-fused path; its fused path gives the same numbers to rounding), 2x
upsampling by a transposed convolution and the [1,3,3,1] FIR filter, noise * strength, bias,
leaky ReLU times sqrt(2), clamping to `conv_clamp`, and the `skip`, `resnet` or `orig` toRGB
architecture.

The fast path (`set_fast(True)` on frozen weights, fastops.py): the tensors derived from the weights
(the squared weight sums of the demodulation, the scaled dense weights) are computed once; the
outputs are bit-identical. `set_fast(False)` recomputes them every call.
"""
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from generators.fastops import FastOps, set_fast

LRELU_SLOPE, LRELU_GAIN = 0.2, math.sqrt(2)
FIR_TAPS = (1, 3, 3, 1)


def fir_filter(taps=FIR_TAPS):
    """NVIDIA's `setup_filter`: the outer product of the taps, normalised to sum 1."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def bias_act(x, bias, lrelu, gain=1.0, clamp=None):
    """NVIDIA's bias_act in its order: add bias, leaky ReLU (or none), multiply by gain, clamp."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    if lrelu:
        x = F.leaky_relu(x, LRELU_SLOPE)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def upfirdn2d(x, fir, up=1, down=1, pad=(0, 0), gain=1):
    """Upsample by inserting zeros, pad (before, after) on both axes (negative: crop), filter
    depthwise, keep every `down`-th pixel.

    `fir` is 2-D, or 1-D for a separable filter (run along the width, then the height, each pass
    with sqrt(gain)), or None for no filtering. It is scaled by `gain` and flipped before the
    convolution, as NVIDIA's reference implementation does (the flip keeps the op exact for
    filters that are not symmetric)."""
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(batch, channels, height * up, width * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    if fir is None:
        x = x * gain if gain != 1 else x
    elif fir.ndim == 2:
        x = depthwise_conv(x, (fir * gain).to(x.dtype).flip([0, 1]))
    else:
        taps = (fir * gain ** 0.5).to(x.dtype).flip([0])
        x = depthwise_conv(depthwise_conv(x, taps[None, :]), taps[:, None])
    return x[:, :, ::down, ::down] if down > 1 else x


def depthwise_conv(x, kernel):
    """`kernel` [kh, kw] applied to every channel of x on its own."""
    return F.conv2d(x, kernel[None, None].expand(x.shape[1], 1, -1, -1), groups=x.shape[1])


def upsample2d(x, fir):
    """NVIDIA's upsample2d: 2x up, padding of a 4-tap filter, gain 4 to keep the mean."""
    taps = fir.shape[-1]
    return upfirdn2d(x, fir, up=2, pad=((taps + 1) // 2, (taps - 2) // 2), gain=4)


def conv_up2x(x, weight, fir):
    """NVIDIA's conv2d_resample with up=2 for a k x k kernel: a stride-2 transposed convolution
    (kernel not flipped), then the FIR filter with padding 1, which gives exactly 2x the size."""
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    kernel, taps = weight.shape[-1], fir.shape[-1]
    pad0 = kernel // 2 + (taps + 1) // 2 - (kernel - 1)
    pad1 = kernel // 2 + (taps - 2) // 2 - (kernel - 2)
    return upfirdn2d(x, fir, pad=(pad0, pad1), gain=4)


def demodulation(styles, weight_sq):
    """1 / |modulated weight| per sample and output channel (NVIDIA's dcoefs), from the styles
    [B, in] and the squared weights summed over the kernel, [in, out]."""
    return (styles.square() @ weight_sq + 1e-8).rsqrt()


class FullyConnected(FastOps):
    """NVIDIA's FullyConnectedLayer: weights scaled by lr_multiplier / sqrt(in) at run time."""

    def __init__(self, in_features, out_features, lrelu=False, lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.lrelu = lrelu
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.derived = ("scaled_weight",) + (("scaled_bias",) if self.bias_gain != 1 else ())

    def scaled_weight(self):
        return self.weight * self.weight_gain

    def scaled_bias(self):
        return self.bias * self.bias_gain

    def forward(self, x):
        weight = self.frozen("scaled_weight")
        bias = self.bias if self.bias_gain == 1 else self.frozen("scaled_bias")
        if not self.lrelu:
            return torch.addmm(bias.unsqueeze(0), x, weight.t())
        return bias_act(x.matmul(weight.t()), bias, lrelu=True, gain=LRELU_GAIN)


class ModulatedConv(FastOps):
    """The weight, its style affine and the modulated convolution shared by conv and toRGB layers."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    derived = ("weight_sq",)

    def weight_sq(self):
        """Squared weights summed over the kernel, [in, out]: what the demodulation needs of them."""
        return self.weight.square().sum(dim=[2, 3]).t()

    def demodulation(self, styles):
        return demodulation(styles, self.frozen("weight_sq"))

    def modulated_conv(self, x, styles, fir=None):
        """Scale the input channels by the styles, convolve (upsampling 2x when `fir` is given)."""
        x = x * styles[:, :, None, None]
        if fir is not None:
            return conv_up2x(x, self.weight, fir)
        return F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)


class SynthesisLayer(ModulatedConv):
    """Modulated, demodulated 3x3 convolution (2x upsampling first when `up`), noise, bias, lrelu."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, up=False, conv_clamp=None):
        super().__init__(in_channels, out_channels, w_dim, kernel_size=3)
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.register_buffer("resample_filter", fir_filter())
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x, w, noise=None, gain=1.0):
        styles = self.affine(w)
        x = self.modulated_conv(x, styles, self.resample_filter if self.up else None)
        x = x * self.demodulation(styles)[:, :, None, None]
        if noise is not None:
            x = x + noise * self.noise_strength
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, lrelu=True, gain=LRELU_GAIN * gain, clamp=clamp)


class ToRGB(ModulatedConv):
    """1x1 modulated convolution without demodulation, styles scaled by 1 / sqrt(in_channels)."""

    derived = ()  # no demodulation

    def __init__(self, in_channels, img_channels, w_dim, conv_clamp=None):
        super().__init__(in_channels, img_channels, w_dim, kernel_size=1)
        self.conv_clamp = conv_clamp
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w):
        x = self.modulated_conv(x, self.affine(w) * self.weight_gain)
        return bias_act(x, self.bias, lrelu=False, clamp=self.conv_clamp)


class SkipUp(nn.Module):
    """The resnet shortcut: 2x FIR upsampling, then a 1x1 convolution without bias."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.register_buffer("resample_filter", fir_filter())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))

    def forward(self, x, gain):
        x = upsample2d(x, self.resample_filter)
        return F.conv2d(x, self.weight * (1 / math.sqrt(self.weight.shape[1]))) * gain


class SynthesisBlock(nn.Module):
    """One resolution: (const | 2x up conv0), conv1, and the image path of its architecture."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last,
                 architecture="skip", conv_clamp=None):
        super().__init__()
        self.architecture, self.is_last = architecture, is_last
        self.register_buffer("resample_filter", fir_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        if is_last or architecture == "skip":
            self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        if in_channels != 0 and architecture == "resnet":
            self.skip = SkipUp(in_channels, out_channels)

    @property
    def layers(self):
        return [self.conv1] if hasattr(self, "const") else [self.conv0, self.conv1]

    @property
    def num_torgb(self):
        return int(hasattr(self, "torgb"))

    def forward(self, x, img, ws, noise):
        """`ws`: one w per conv layer then the toRGB's; `noise`: one map (or None) per conv layer."""
        if hasattr(self, "const"):
            x = self.conv1(self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1), ws[:, 0], noise[0])
        elif self.architecture == "resnet":
            half = math.sqrt(0.5)
            shortcut = self.skip(x, gain=half)
            x = self.conv0(x, ws[:, 0], noise[0])
            x = shortcut + self.conv1(x, ws[:, 1], noise[1], gain=half)
        else:
            x = self.conv1(self.conv0(x, ws[:, 0], noise[0]), ws[:, 1], noise[1])
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, ws[:, len(self.layers)])
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] and one noise map [B, 1, r, r] (or None) per conv layer -> image in [-1, 1].

    Block `bR` takes the ws of its conv layers and, for its toRGB, the next one (shared with the
    next block's first layer), as NVIDIA splits them. The questions PULSE asks: `resolution`,
    `num_ws`, `noise_sizes` (the side of each noise map, in NVIDIA's layer order), `dlatent_size`.
    """

    def __init__(self, block_channels, w_dim=512, img_channels=3, architecture="skip", conv_clamp=None):
        super().__init__()
        resolutions = [2 ** (i + 2) for i in range(len(block_channels))]
        self.resolution, self.dlatent_size = resolutions[-1], w_dim
        for res, c_in, c_out in zip(resolutions, [0] + block_channels[:-1], block_channels):
            self.add_module(f"b{res}", SynthesisBlock(c_in, c_out, w_dim, res, img_channels,
                                                      is_last=res == self.resolution,
                                                      architecture=architecture, conv_clamp=conv_clamp))
        self.num_ws = len(self.noise_sizes) + 1

    @property
    def blocks(self):
        return [module for module in self.children() if isinstance(module, SynthesisBlock)]

    @property
    def noise_sizes(self):
        return [layer.resolution for block in self.blocks for layer in block.layers]

    @property
    def default_bad_noise_layers(self):
        """What PULSE's default -bad_noise_layers (StyleGAN-1's last 1024x1024 layer) stands for
        here: the last noise layer, the one at full resolution."""
        return frozenset({len(self.noise_sizes) - 1})

    def noise_const(self):
        """NVIDIA's `noise_mode='const'` maps (without their strength, which the layers apply)."""
        return [layer.noise_const[None, None] for block in self.blocks for layer in block.layers]

    def set_fast(self, enabled):
        return set_fast(self, enabled)

    def forward(self, ws, noise=None):
        """`noise=None` is NVIDIA's noise_mode='none' (so is a None in the list, for one layer)."""
        noise = [None] * len(self.noise_sizes) if noise is None else noise
        x = img = None
        w_idx = 0
        for block in self.blocks:
            count = len(block.layers)
            x, img = block(x, img, ws[:, w_idx:w_idx + count + block.num_torgb], noise[w_idx:w_idx + count])
            w_idx += count
        return img


def normalize_2nd_moment(z):
    """z divided by the root mean square of its entries, per sample (StyleGAN's pixel norm of z)."""
    return z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(nn.Module):
    """z [B, z_dim] -> w [B, w_dim]: z normalised by its second moment, then lrelu dense layers.

    Returns one w per sample (NVIDIA broadcasts it to num_ws rows). `w_avg` (the truncation
    centre) is kept so NVIDIA's state loads unchanged; PULSE does not truncate."""

    def __init__(self, z_dim=512, w_dim=512, num_layers=8, lr_multiplier=0.01):
        super().__init__()
        self.num_layers, self.z_dim = num_layers, z_dim
        for idx in range(num_layers):
            self.add_module(f"fc{idx}", FullyConnected(z_dim if idx == 0 else w_dim, w_dim, lrelu=True,
                                                       lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z):
        x = normalize_2nd_moment(z)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x


def nvidia_block_channels(resolution, channel_base=32768, channel_max=512):
    """NVIDIA's channels per block, 4x4 up to `resolution`; the defaults are FFHQ config-f's."""
    return [min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)]


def architecture_of(state_dict, resolutions):
    if resolutions[-1] > 4 and f"b{resolutions[-1]}.skip.weight" in state_dict:
        return "resnet"
    if resolutions[-1] > 4 and "b4.torgb.weight" not in state_dict:
        return "orig"
    return "skip"


def synthesis_from_state_dict(state_dict, conv_clamp=None):
    """A SynthesisNetwork shaped like `state_dict` (NVIDIA's key names); `conv_clamp` is not in it."""
    resolutions = sorted({int(m.group(1)) for key in state_dict if (m := re.match(r"b(\d+)\.", key))})
    if not resolutions or resolutions != [2 ** (i + 2) for i in range(len(resolutions))]:
        raise ValueError("not a StyleGAN2 synthesis state dict (no b4.*, b8.*, ... tensors)")
    last = resolutions[-1]
    return SynthesisNetwork([state_dict[f"b{res}.conv1.weight"].shape[0] for res in resolutions],
                            w_dim=state_dict["b4.conv1.affine.weight"].shape[1],
                            img_channels=state_dict[f"b{last}.torgb.weight"].shape[0],
                            architecture=architecture_of(state_dict, resolutions), conv_clamp=conv_clamp)


def mapping_from_state_dict(state_dict, lr_multiplier):
    """A MappingNetwork shaped like `state_dict`; `lr_multiplier` is not in it."""
    num_layers = len({key.split(".")[0] for key in state_dict if re.match(r"fc\d+\.weight$", key)})
    if num_layers == 0:
        raise ValueError("not a StyleGAN2 mapping state dict (no fc0.weight)")
    z_dim, w_dim = state_dict["fc0.weight"].shape[1], state_dict[f"fc{num_layers - 1}.weight"].shape[0]
    return MappingNetwork(z_dim, w_dim, num_layers, lr_multiplier)
