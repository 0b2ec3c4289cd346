"""What PULSE asks of a generator's synthesis network, written down once.

stylegan.G_synthesis (StyleGAN-1), stylegan2.SynthesisNetwork, stylegan3.SynthesisNetwork and
rosinality.SynthesisNetwork implement it; families.py lists
the generators there are and how each is built from its weight files.
"""
from typing import Protocol, runtime_checkable

import torch


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
