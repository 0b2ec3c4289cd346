"""StyleGAN3 generator (Karras et al. 2021, "Alias-Free GAN") computing what NVIDIA's stylegan3 computes.

Plain PyTorch, no custom kernels and no code from NVIDIA's pickles; configs T (3x3 convolutions,
separable Kaiser filters) and R (1x1 convolutions, radial jinc filters) differ only in the weights
and filters, so one network runs both. Parameter and buffer names are those of NVIDIA's
`G_ema.synthesis` (`input.freqs`, `L3_36_512.magnitude_ema`, `L3_36_512.up_filter`, ...), so a
converted network loads with `load_state_dict(strict=True)`; its mapping network is StyleGAN2's.

The synthesis starts from Fourier features of a learned rotation and translation of `ws[:, 0]`,
then runs its layers, one row of `ws` each: a modulated convolution (inputs scaled by their
tracked magnitude, demodulated except in the last, ToRGB, layer) and NVIDIA's `filtered_lrelu`
(bias, upsampling filter, leaky ReLU with gain, clamp, downsampling filter); the image is scaled by
`output_scale`. StyleGAN3 has no noise inputs: PULSE searches the latent alone.

What a layer does besides its tensors (its resampling factors, padding and clamp) is not in the
state dict: `synthesis_from_state_dict` takes it as the JSON-able `attributes` that
the conversion (weightfiles/conversion.py) reads from the pickle (`attributes_of_pickle`).
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from generators.fastops import set_fast
from generators.stylegan2 import FullyConnected, LRELU_GAIN, ModulatedConv, bias_act, upfirdn2d


@dataclass(frozen=True)
class LayerResampling:
    """A layer's non-tensor attributes, as NVIDIA's SynthesisLayer holds them."""
    is_torgb: bool
    up_factor: int
    down_factor: int
    padding: tuple          # (x before, x after, y before, y after) around the upsampled image
    conv_clamp: float = None


def filtered_lrelu(x, bias, up_filter, down_filter, resampling, gain, lrelu):
    """NVIDIA's filtered_lrelu: bias, up (filter, padding), leaky ReLU times gain, clamp, down."""
    px0, px1, _, _ = resampling.padding  # square images: the same padding on both axes
    x = bias_act(x, bias, lrelu=False)
    up = resampling.up_factor
    x = upfirdn2d(x, up_filter, up=up, pad=(px0, px1), gain=up ** 2)
    x = bias_act(x, None, lrelu=lrelu, gain=gain, clamp=resampling.conv_clamp)
    return upfirdn2d(x, down_filter, down=resampling.down_factor)


class SynthesisInput(nn.Module):
    """Fourier features [B, C, size, size] at the frequencies `freqs`, rotated and translated by
    an affine of w, then mixed by a learned [C, C] matrix."""

    def __init__(self, w_dim, channels, size, sampling_rate, bandwidth):
        super().__init__()
        self.size, self.sampling_rate, self.bandwidth = int(size), float(sampling_rate), float(bandwidth)
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnected(w_dim, 4)
        self.register_buffer("transform", torch.eye(3))  # the user's inverse transform of the image
        self.register_buffer("freqs", torch.zeros(channels, 2))
        self.register_buffer("phases", torch.zeros(channels))

    def transforms(self, w):
        """[B, 3, 3]: rotation by t[:2] (normalised), then translation by -t[2:], then `transform`."""
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        rotation = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], 1).view(-1, 3, 3)
        translation = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], 1).view(-1, 3, 3)
        return rotation @ translation @ self.transform

    def forward(self, w):
        transforms = self.transforms(w)
        phases = self.phases + (self.freqs @ transforms[:, :2, 2:]).squeeze(2)   # [B, C]
        freqs = self.freqs @ transforms[:, :2, :2]                                 # [B, C, 2]
        # Frequencies the transform pushes above the band fade out before they would alias.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Pixel centres in units of the sampling period, centred (what NVIDIA's affine_grid gives).
        grid = (torch.arange(self.size, dtype=w.dtype, device=w.device) + 0.5 - self.size / 2) / self.sampling_rate
        x = (grid[None, None, :, None] * freqs[:, None, None, :, 0]      # [B, H, W, C]
             + grid[None, :, None, None] * freqs[:, None, None, :, 1] + phases[:, None, None, :])
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.weight.shape[0])).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(ModulatedConv):
    """Modulated convolution of the magnitude-normalised input, then filtered_lrelu.

    A conv layer pre-normalises its weights per output channel and the styles per sample before
    demodulating, as NVIDIA does for fp16 safety (the demodulation cancels both up to its 1e-8).
    NVIDIA normalises the styles over the whole batch; per sample keeps a sample's image
    independent of the others in its batch, and differs from theirs in rounding only."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size, resampling, up_filter, down_filter):
        super().__init__(in_channels, out_channels, w_dim, kernel_size)
        self.resampling = resampling
        self.register_buffer("magnitude_ema", torch.ones([]))
        for name, fir in (("up_filter", up_filter), ("down_filter", down_filter)):
            if fir is None:  # no filter (the ToRGB layer): an attribute, not a buffer, as in NVIDIA's state
                setattr(self, name, None)
            else:
                self.register_buffer(name, fir.clone())
        self.derived = () if resampling.is_torgb else ("normalized_weight", "weight_sq")

    def output_size(self, input_size):
        """Side of the output for an input of side `input_size` (as NVIDIA computes its padding)."""
        r = self.resampling
        taps = [1 if f is None else f.shape[-1] for f in (self.up_filter, self.down_filter)]
        upsampled = (input_size + self.weight.shape[-1] - 1) * r.up_factor + r.padding[0] + r.padding[1]
        return (upsampled - (taps[0] - 1) - (taps[1] - 1) - 1) // r.down_factor + 1

    def normalized_weight(self):
        return self.weight * self.weight.square().mean([1, 2, 3], keepdim=True).rsqrt()

    def weight_sq(self):
        return self.normalized_weight().square().sum(dim=[2, 3]).t()

    def forward(self, x, w):
        styles = self.affine(w)
        input_gain = self.magnitude_ema.rsqrt()
        if self.resampling.is_torgb:
            styles = styles / math.sqrt(self.weight[0].numel())
            x = F.conv2d(x * (styles * input_gain)[:, :, None, None], self.weight)
            return filtered_lrelu(x, self.bias, self.up_filter, self.down_filter, self.resampling, gain=1, lrelu=False)
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        x = F.conv2d(x * (styles * input_gain)[:, :, None, None], self.frozen("normalized_weight"),
                     padding=self.weight.shape[-1] - 1)
        x = x * self.demodulation(styles)[:, :, None, None]
        return filtered_lrelu(x, self.bias, self.up_filter, self.down_filter, self.resampling,
                              gain=LRELU_GAIN, lrelu=True)


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, C, R, R]: the Fourier input takes ws[:, 0], layer i ws[:, i + 1].

    The questions PULSE asks: `resolution`, `num_ws`, `noise_sizes` (none), `dlatent_size`."""

    noise_sizes = []
    default_bad_noise_layers = frozenset()  # no noise layer to hold at zero

    def __init__(self, synthesis_input, layers, output_scale):
        """`layers`: {NVIDIA's layer name (L0_36_512, ...): SynthesisLayer}, in order."""
        super().__init__()
        self.input = synthesis_input
        self.layer_names = list(layers)
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.output_scale = float(output_scale)
        self.num_ws = len(layers) + 1
        self.dlatent_size = synthesis_input.affine.weight.shape[1]
        self.resolution = synthesis_input.size
        for layer in layers.values():
            self.resolution = layer.output_size(self.resolution)

    def set_fast(self, enabled):
        return set_fast(self, enabled)

    def forward(self, ws, noise=None):
        if noise:
            raise ValueError("a StyleGAN3 synthesis network takes no noise maps")
        x = self.input(ws[:, 0])
        for i, name in enumerate(self.layer_names, start=1):
            x = getattr(self, name)(x, ws[:, i])
        return x * self.output_scale if self.output_scale != 1 else x


def synthesis_from_state_dict(state_dict, attributes):
    """A SynthesisNetwork shaped like `state_dict` (NVIDIA's names) with the non-tensor `attributes`
    (`attributes_of_pickle`'s layout), filters and channel counts taken from the tensors."""
    names = attributes["layer_names"]
    if not names or "input.freqs" not in state_dict:
        raise ValueError("not a StyleGAN3 synthesis state dict (no input.freqs)")
    w_dim = state_dict["input.affine.weight"].shape[1]
    features = attributes["input"]
    synthesis_input = SynthesisInput(w_dim, state_dict["input.weight"].shape[0], features["size"],
                                     features["sampling_rate"], features["bandwidth"])
    layers = {}
    for name in names:
        resampling = LayerResampling(**{**attributes["layers"][name],
                                        "padding": tuple(attributes["layers"][name]["padding"])})
        out_channels, in_channels, kernel, _ = state_dict[f"{name}.weight"].shape
        layers[name] = SynthesisLayer(in_channels, out_channels, w_dim, kernel, resampling,
                                      state_dict.get(f"{name}.up_filter"), state_dict.get(f"{name}.down_filter"))
    return SynthesisNetwork(synthesis_input, layers, attributes["output_scale"])


def attributes_of_pickle(synthesis_state):
    """What `synthesis_from_state_dict` needs besides the tensors (JSON-able), from the unpickled
    state of NVIDIA's persistent SynthesisNetwork (its submodules: nvidia_pickles.PersistentObject)."""
    modules = synthesis_state["_modules"]
    features = modules["input"].state
    layers = {}
    for name in synthesis_state["layer_names"]:
        layer = modules[name].state
        if list(layer["padding"][:2]) != list(layer["padding"][2:]):
            raise ValueError(f"{name} pads its axes differently ({layer['padding']}): not a square network")
        clamp = layer["conv_clamp"]
        layers[name] = asdict(LayerResampling(
            is_torgb=bool(layer["is_torgb"]), up_factor=int(layer["up_factor"]),
            down_factor=int(layer["down_factor"]), padding=[int(p) for p in layer["padding"]],
            conv_clamp=None if clamp is None else float(clamp)))
    return {"layer_names": [str(name) for name in synthesis_state["layer_names"]],
            "input": {"size": int(max(features["size"])), "sampling_rate": float(features["sampling_rate"]),
                      "bandwidth": float(features["bandwidth"])},
            "layers": layers, "output_scale": float(synthesis_state["output_scale"])}

