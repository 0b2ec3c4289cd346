"""PULSE's loss: a weighted sum of terms parsed from a string like "100*L2+0.05*GEOCROSS".

Every term is computed per sample (a vector over the batch), so each sample of a batch can keep
its own best step; the optimised loss is the sum over the batch, as in 2020.
- L2, L1: distance between the bicubic downscale of the generated image and the input,
  clamped below at eps (L1 is scaled by 10), as the paper's "downscaling loss".
- GEOCROSS: mean squared geodesic distance between the L latent rows, which keeps them close
  to each other (the paper's cross loss).
"""
import torch

from bicubic import BicubicDownSample, divides_by_power_of_two


def l2_loss(gen_im_lr, ref_im, eps, **_):
    return (gen_im_lr - ref_im).pow(2).mean((1, 2, 3)).clamp(min=eps)


def l1_loss(gen_im_lr, ref_im, eps, **_):
    return 10 * (gen_im_lr - ref_im).abs().mean((1, 2, 3)).clamp(min=eps)


def geocross_loss(latent, **_):
    batch, layers, size = latent.shape
    x = latent.view(batch, 1, layers, size)
    y = latent.view(batch, layers, 1, size)
    chord_minus = ((x - y).pow(2).sum(-1) + 1e-9).sqrt()
    chord_plus = ((x + y).pow(2).sum(-1) + 1e-9).sqrt()
    angle = 2 * torch.atan2(chord_minus, chord_plus)
    return (angle.pow(2) * size).mean((1, 2)) / 8.0


LOSSES = {"L2": l2_loss, "L1": l1_loss, "GEOCROSS": geocross_loss}  # parsed_text.LOSS_NAMES names them for -loss_str


class LossBuilder(torch.nn.Module):
    """Losses of generated images against the low-resolution references `ref_im` [B, 3, r, r],
    weighted by `terms` [(weight, name), ...] (LossString.terms)."""

    def __init__(self, ref_im, terms, eps, resolution=1024):
        super().__init__()
        size = ref_im.shape[2]
        if ref_im.shape[3] != size or not divides_by_power_of_two(resolution, size):
            raise ValueError(f"input of {size}x{ref_im.shape[3]} does not divide the {resolution}x{resolution} "
                             f"model by a power of two")
        self.downscale = BicubicDownSample(factor=resolution // size).to(ref_im.dtype)
        self.register_buffer("ref_im", ref_im)
        self.terms = terms
        self.eps = eps

    def forward(self, latent, gen_im):
        """(total [B], {name: [B]}); L2 is always included, since it decides convergence."""
        inputs = dict(latent=latent, gen_im_lr=self.downscale(gen_im), ref_im=self.ref_im, eps=self.eps)
        losses = {name: LOSSES[name](**inputs) for _, name in self.terms}
        total = sum(weight * losses[name] for weight, name in self.terms)
        if "L2" not in losses:
            with torch.no_grad():
                losses["L2"] = l2_loss(**inputs)
        return total, losses
