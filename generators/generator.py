"""What PULSE asks of a generator, written down once: its synthesis network and its prior.

The synthesis network of every family in weightfiles/families.py implements Generator (its
contract test, tests/test_families.py, checks it), and the family says how it is built from its
weight files and which prior it searches under. A network built in Python searches the same way:
PULSE.from_generator(network, prior).
"""
import math
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Generator(Protocol):
    """A synthesis network: one w per layer and one noise map per noise layer -> an image.

    `isinstance(model, Generator)` checks that the attributes are there (not their types).
    """

    resolution: int  # side of the square image it draws
    num_ws: int  # rows of latent_in: how many w the layers take
    dlatent_size: int  # w_dim, the length of each w
    noise_sizes: list[int]  # the side of each noise layer's map, in the network's layer order
    default_bad_noise_layers: frozenset[int]  # noise layers zeroed unless -bad_noise_layers says otherwise

    def set_fast(self, enabled: bool) -> "Generator":
        """Tensors derived from the (frozen) weights computed once (fastops.py), or every call; returns self."""

    def forward(self, latent_in: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """latent_in [B, num_ws, dlatent_size] and noise maps [B, 1, r, r] -> image [B, 3, R, R] in about [-1, 1]."""


@runtime_checkable
class Prior(Protocol):
    """Where PULSE searches: the search latent [B, rows, width], drawn from N(0, I) and kept on the
    sphere of its drawn radius by the spherical optimizer, and how it becomes the network's input."""

    width: int  # the length of each latent row
    fit: dict | None  # the statistics it was fitted to ({"mean", "std"}), or None

    def rows(self, tile_latent: bool) -> int:
        """Rows of the search latent (-tile_latent asks for one shared by every layer)."""

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Search latent [B, rows, width] -> the network's latent_in [B, num_ws, dlatent_size]."""


def missing_members(thing, protocol):
    """The attributes and methods of `protocol` (Generator, Prior) that `thing` lacks."""
    members = [*protocol.__annotations__, *(name for name in vars(protocol) if not name.startswith("_"))]
    return [name for name in members if not hasattr(thing, name)]


class MappedGaussian(nn.Module):
    """The StyleGAN prior of 2020: w = LeakyReLU(0.2)(latent * std + mean), where mean and std are
    the Gaussian fit of LeakyReLU(5) of the mapping network's output (weights.fit_gaussian), so
    a search latent on the Gaussian sphere maps into the region of w the mapping reaches."""

    def __init__(self, fit, num_ws):
        super().__init__()
        self.num_ws, self.width = num_ws, fit["mean"].numel()
        self.register_buffer("mean", fit["mean"].clone())
        self.register_buffer("std", fit["std"].clone())
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    @property
    def fit(self):
        return {"mean": self.mean, "std": self.std}

    def rows(self, tile_latent):
        return 1 if tile_latent else self.num_ws

    def forward(self, latent):
        latent_in = latent.expand(-1, self.num_ws, -1)
        return self.lrelu(latent_in * self.std + self.mean)


class SphereOfZ(nn.Module):
    """The prior of a GAN fed z ~ N(0, I) directly (the DCGAN): one row of `width`, put on the sphere
    of radius sqrt(width) where such z concentrate. Nothing is fitted; GEOCROSS, which compares
    rows, has nothing to compare (about 1e-10, the 1e-9 it adds for stability)."""

    fit = None

    def __init__(self, width):
        super().__init__()
        self.width = width

    def rows(self, tile_latent):
        return 1

    def forward(self, latent):
        return latent * (math.sqrt(self.width) / latent.norm(dim=-1, keepdim=True))
