"""Small StyleGAN3 networks of either config, built as NVIDIA's SynthesisNetwork lays them out, and
pickled in NVIDIA's snapshot format, for the tests.

The layout (NVIDIA's `training/networks_stylegan3.py`, read for its formulas, this file's own
code): cutoffs and minimum stopbands in geometric progression from the first layer to the last
non-critical one; each layer's sampling rate the smallest power of two above twice its stopband
(at most the image resolution), its transition half-width what the stopband leaves above the
cutoff, its channels channel_base / 2 / cutoff (at most channel_max). Layers compute at twice the
higher of their two sampling rates (`lrelu_upsampling`), and resample with windowed-sinc (Kaiser)
filters of 6 taps per factor, or with a radially symmetric jinc filter for the downsampling of a
config R layer that is not critically sampled. Config R also has 1x1 convolutions and twice the
channels. `test_design_reproduces_nvidias_layers` checks this file against the shared T pickle.
"""
import math

import numpy as np
import scipy.signal
import scipy.special
import torch

from generators import stylegan2, stylegan3
from stylegan2_pickles import nvidia_pickle, stylegan2_description

FILTER_TAPS_PER_FACTOR, LRELU_UPSAMPLING = 6, 2
SMALL = dict(img_resolution=16, channel_base=128, channel_max=8, num_layers=4)  # 16x16, 6 ws: quick searches


def lowpass_filter(taps, cutoff, width, sampling_rate, radial=False):
    """None for one tap; else a separable [taps] Kaiser-windowed sinc (scipy's firwin), or for
    `radial` a [taps, taps] jinc, J1(2 pi fc r) / (pi r), under the outer product of the same
    Kaiser window; normalised to sum 1."""
    if taps == 1:
        return None
    if not radial:
        return torch.as_tensor(scipy.signal.firwin(taps, cutoff, width=width, fs=sampling_rate), dtype=torch.float32)
    offsets = (np.arange(taps) - (taps - 1) / 2) / sampling_rate
    r = np.hypot(*np.meshgrid(offsets, offsets))
    jinc = scipy.special.j1(2 * math.pi * cutoff * r) / (math.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(taps, width / (sampling_rate / 2)))
    window = np.kaiser(taps, beta)
    f = jinc * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def design(img_resolution=64, channel_base=1024, channel_max=32, num_layers=14, num_critical=2, first_cutoff=2,
           first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10, img_channels=3, config="t",
           conv_clamp=256):
    """(input attributes, [layer attributes]) with NVIDIA's attribute names, and each layer's filters."""
    if config == "r":
        channel_base, channel_max = channel_base * 2, channel_max * 2
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    last_cutoff = img_resolution / 2
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_cutoff * last_stopband_rel / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum(channel_base / 2 / cutoffs, channel_max))
    channels[-1] = img_channels
    features = dict(channels=int(channels[0]), size=np.array([int(sizes[0])] * 2), sampling_rate=rates[0],
                    bandwidth=cutoffs[0])
    layers = []
    for idx in range(num_layers + 1):
        prev, is_torgb = max(idx - 1, 0), idx == num_layers
        critical = idx >= num_layers - num_critical
        tmp_rate = max(rates[prev], rates[idx]) * (1 if is_torgb else LRELU_UPSAMPLING)
        up, down = int(tmp_rate // rates[prev]), int(tmp_rate // rates[idx])
        up_taps = FILTER_TAPS_PER_FACTOR * up if up > 1 and not is_torgb else 1
        down_taps = FILTER_TAPS_PER_FACTOR * down if down > 1 and not is_torgb else 1
        kernel = 1 if is_torgb or config == "r" else 3
        pad_total = ((sizes[idx] - 1) * down + 1 - (sizes[prev] + kernel - 1) * up + up_taps + down_taps - 2)
        pad_lo = int(pad_total + up) // 2
        padding = [pad_lo, int(pad_total) - pad_lo] * 2
        layers.append(dict(
            name=f"L{idx}_{int(sizes[idx])}_{int(channels[idx])}", is_torgb=is_torgb, is_critically_sampled=critical,
            in_channels=int(channels[prev]), out_channels=int(channels[idx]), conv_kernel=kernel,
            in_size=np.array([int(sizes[prev])] * 2), out_size=np.array([int(sizes[idx])] * 2),
            in_sampling_rate=int(rates[prev]), out_sampling_rate=int(rates[idx]), tmp_sampling_rate=int(tmp_rate),
            in_cutoff=cutoffs[prev], out_cutoff=cutoffs[idx], in_half_width=half_widths[prev],
            out_half_width=half_widths[idx], up_factor=up, down_factor=down, up_taps=up_taps, down_taps=down_taps,
            down_radial=config == "r" and not critical, padding=padding, conv_clamp=conv_clamp,
            up_filter=lowpass_filter(up_taps, cutoffs[prev], half_widths[prev] * 2, tmp_rate),
            down_filter=lowpass_filter(down_taps, cutoffs[idx], half_widths[idx] * 2, tmp_rate,
                                       radial=config == "r" and not critical)))
    return features, layers


def random_stylegan3(config="t", seed=0, w_dim=512, **design_kwargs):
    """(synthesis, mapping) of a small StyleGAN3 with NVIDIA's init, then every bias and magnitude
    EMA moved off its initial value (so that the tests exercise them). Each synthesis module
    carries the attributes NVIDIA's would pickle as `nvidia_attributes`."""
    features, layers = design(config=config, **design_kwargs)
    torch.manual_seed(seed)
    synthesis_input = stylegan3.SynthesisInput(w_dim, features["channels"], features["size"][0],
                                               features["sampling_rate"], features["bandwidth"])
    synthesis_input.nvidia_attributes = features
    freqs = torch.randn(features["channels"], 2)
    radii = freqs.norm(dim=1, keepdim=True)
    synthesis_input.freqs.copy_(freqs / (radii * radii.square().exp() ** 0.25) * features["bandwidth"])
    synthesis_input.phases.copy_(torch.rand(features["channels"]) - 0.5)
    with torch.no_grad():
        synthesis_input.affine.weight.zero_()
        synthesis_input.affine.bias.copy_(torch.tensor([1.0, 0, 0, 0]) + 0.2 * torch.randn(4))
    modules = {}
    for layer in layers:
        resampling = stylegan3.LayerResampling(layer["is_torgb"], layer["up_factor"], layer["down_factor"],
                                               tuple(layer["padding"]), layer["conv_clamp"])
        modules[layer["name"]] = stylegan3.SynthesisLayer(
            layer["in_channels"], layer["out_channels"], w_dim, layer["conv_kernel"], resampling,
            layer["up_filter"], layer["down_filter"])
        modules[layer["name"]].nvidia_attributes = {key: value for key, value in layer.items()
                                                    if key not in ("name", "up_filter", "down_filter")}
    synthesis = stylegan3.SynthesisNetwork(synthesis_input, modules, output_scale=0.25)
    synthesis.nvidia_attributes = dict(num_ws=synthesis.num_ws, img_resolution=synthesis.resolution,
                                       layer_names=synthesis.layer_names, output_scale=0.25)
    mapping = stylegan2.MappingNetwork(num_layers=2)
    with torch.no_grad():
        for name, tensor in [*synthesis.named_parameters(), *mapping.named_parameters()]:
            if name.endswith("bias") and not name.startswith("input."):
                tensor.add_(0.2 * torch.randn_like(tensor))
        for name, buffer in synthesis.named_buffers():
            if name.endswith("magnitude_ema"):
                buffer.uniform_(0.75, 1.25)
    return synthesis.eval().requires_grad_(False), mapping.eval().requires_grad_(False)


def stylegan3_description(module):
    """describe(module) for stylegan2_pickles.persistent: NVIDIA's class names (stylegan3.py uses the
    same) and the attributes random_stylegan3 noted on the module."""
    if hasattr(module, "nvidia_attributes"):
        return type(module).__name__, module.nvidia_attributes
    return stylegan2_description(module)


def stylegan3_pickle(synthesis, mapping, module_src="", extra_state=None):
    """Bytes of an NVIDIA stylegan3 snapshot of random_stylegan3's networks."""
    return nvidia_pickle(synthesis, mapping, module_src, extra_state=extra_state, describe=stylegan3_description)
