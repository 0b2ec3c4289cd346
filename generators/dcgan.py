"""The generator of the PyTorch DCGAN tutorial (Radford et al. 2016), and how its weight files are read.

z [B, nz, 1, 1] -> transposed 4x4 convolutions without bias, each but the last followed by
BatchNorm and ReLU, the last by Tanh: 4x4, then twice the side per layer (the tutorial: nz 100,
channels 512, 256, 128, 64, 3, 64x64 RGB). Its parameters are `main.N.*`, the tutorial's names, so
a state dict saved from the tutorial's `Generator` loads with `load_state_dict(strict=True)`.
BatchNorm runs in eval mode, on the running statistics saved with the weights.

Its files are torch.save files of a bare state dict or of a dict holding it as `netG_state_dict`
(the tutorial's checkpoints, and the `weights.tar` of the PyPI package gan-face-generate);
the latent is z itself (generator.SphereOfZ): no mapping network, no Gaussian fit, no noise.
"""
import re

import torch
from torch import nn

from errors import WeightsError

CHECKPOINT_KEY = "netG_state_dict"


class DCGAN(nn.Module):
    """`channels` [nz, c1, ..., 3] -> a DCGAN generator of 4 * 2 ** (len(channels) - 2) pixels a side.

    The questions PULSE asks (generator.Generator): one w (z, of nz), no noise layers."""

    noise_sizes = []
    default_bad_noise_layers = frozenset()
    num_ws = 1

    def __init__(self, channels):
        super().__init__()
        layers = []
        for i, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
            first, last = i == 0, i == len(channels) - 2
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=1 if first else 2, padding=0 if first else 1,
                                             bias=False))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU(True)]
        self.main = nn.Sequential(*layers)
        self.dlatent_size = channels[0]
        self.resolution = 4 * 2 ** (len(channels) - 2)

    def set_fast(self, enabled):
        return self  # nothing is derived from its weights: no fast path to switch

    def forward(self, latent_in, noise=None):
        if noise:
            raise ValueError("a DCGAN takes no noise maps")
        return self.main(latent_in.reshape(-1, self.dlatent_size, 1, 1))


def tutorial(resolution=64, nz=100, ngf=64, nc=3):
    """The tutorial's generator (64x64: channels 512, 256, 128, 64), random weights; at another
    resolution the same rule: ngf times a power of two, halving up to ngf."""
    hidden = [ngf * 2 ** k for k in reversed(range(resolution.bit_length() - 3))]
    return DCGAN([nz, *hidden, nc])


def conv_keys(state_dict):
    """The keys of the transposed convolutions' weights, in layer order (main.0, main.3, ...)."""
    return sorted((key for key in state_dict if re.fullmatch(r"main\.\d+\.weight", key)
                   and state_dict[key].dim() == 4), key=lambda key: int(key.split(".")[1]))


def synthesis_from_state_dict(state_dict):
    """A DCGAN whose nz, channels, and so resolution, are read from the shapes in `state_dict`."""
    keys = conv_keys(state_dict)
    if not keys:
        raise ValueError("not a DCGAN state dict (no main.0.weight)")
    return DCGAN([state_dict[keys[0]].shape[0]] + [state_dict[key].shape[1] for key in keys])


def state_dict_of(data):
    """The generator's state dict in a loaded torch.save file, or None when it holds none of the
    tutorial's layout (`main.N.*` tensors starting with a 4-D main.0.weight)."""
    state = data.get(CHECKPOINT_KEY, data) if isinstance(data, dict) else None
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith("main.")
                                                      and isinstance(v, torch.Tensor) for k, v in state.items())):
        return None
    first = state.get("main.0.weight")
    return state if first is not None and first.dim() == 4 else None


def is_dcgan_file(data):
    return state_dict_of(data) is not None


def states(torch_file, source):
    """(synthesis state, mapping state, attributes) of a DCGAN's TorchFile (weightfiles.torch_files):
    float32 tensors (BatchNorm's counters stay integers), no mapping network, nothing beyond them."""
    state = state_dict_of(torch_file.data)
    if state is None:
        raise WeightsError(f"{source} holds no DCGAN state dict of the PyTorch tutorial's layout")
    return {key: value.float() if value.is_floating_point() else value for key, value in state.items()}, {}, {}
