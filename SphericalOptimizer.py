"""Projected optimisation on spheres: PULSE's way of staying where the generator is realistic.

After every step of the wrapped optimizer each tensor is rescaled back to its initial radius,
measured over all but the first two dimensions: per (sample, layer) row of the latent
[B, L, 512], per sample of a noise map [B, 1, r, r]. High-dimensional Gaussians concentrate on
such spheres, so the search never leaves the region the generator was trained on.
"""
import torch


def _radius(param):
    return (param.pow(2).sum(tuple(range(2, param.ndim)), keepdim=True) + 1e-9).sqrt()


class SphericalOptimizer:
    """Wraps `optimizer(params, **kwargs)`; `.opt` is the inner optimizer (for schedulers)."""

    def __init__(self, optimizer, params, **kwargs):
        self.opt = optimizer(params, **kwargs)
        self.params = params
        with torch.no_grad():
            self.radii = [_radius(p) for p in params]

    def zero_grad(self):
        self.opt.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.opt.step(closure)
        for param, radius in zip(self.params, self.radii):
            param.data.div_(_radius(param))
            param.mul_(radius)
        return loss
