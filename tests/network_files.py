"""A small network file of every generator family, for the tests: SAMPLES.

Each is made from a seeded random network of the family's own layout, written as its authors'
code writes it (NVIDIA's pickles through tests/stylegan1_pickles.py, stylegan2_pickles.py and
stylegan3_networks.py; torch.save files here). tests/test_families.py puts every sample through
the contract every family keeps: a family with no sample here fails there.
"""
import argparse

import torch

from generators import dcgan, rosinality
from stylegan1_pickles import tiny_pickle_bytes
from stylegan2_pickles import nvidia_pickle, random_stylegan2
from stylegan3_networks import SMALL, random_stylegan3, stylegan3_pickle


def random_rosinality(resolution=32, channels=16, seed=0):
    """A small generator as rosinality's code initialises one, then every bias and noise weight
    made non-zero; its g_ema state dict."""
    torch.manual_seed(seed)
    synthesis = rosinality.SynthesisNetwork([channels] * (resolution.bit_length() - 2))
    mapping = rosinality.MappingNetwork(n_mlp=2)
    state = {**mapping.state_dict(), **synthesis.state_dict()}
    return {key: value + 0.2 * torch.randn_like(value) if key.endswith(("bias", "noise.weight")) else value
            for key, value in state.items()}


def training_checkpoint(g_ema, args=None):
    """What rosinality's train.py saves (g and d stand in small here: PULSE reads only g_ema)."""
    args = argparse.Namespace(size=32, latent=512, n_mlp=2, channel_multiplier=2, iter=10, batch=4,
                              r1=10.0, path="lmdb", wandb=False) if args is None else args
    return {"g": g_ema, "d": {"convs.0.0.weight": torch.zeros(1)}, "g_ema": g_ema,
            "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0, 0.99), "params": [0, 1]}]},
            "d_optim": {"state": {}, "param_groups": []}, "args": args, "ada_aug_p": 0.0}


def random_dcgan(resolution=16, nz=8, ngf=4, seed=0):
    """A small DCGAN of the tutorial's layout with random weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    network = dcgan.tutorial(resolution, nz=nz, ngf=ngf)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return network.eval()


def pickled(make_bytes):
    def write(path):
        path.write_bytes(make_bytes())
    return write


def saved(make_object):
    def write(path):
        torch.save(make_object(), path)
    return write


# family -> {sample name: a function writing the sample to the path it is given}
SAMPLES = {
    "stylegan1": {"32x32": pickled(tiny_pickle_bytes)},
    "stylegan2": {"skip": pickled(lambda: nvidia_pickle(*random_stylegan2(resolution=32, seed=3))),
                  "resnet": pickled(lambda: nvidia_pickle(*random_stylegan2(architecture="resnet", conv_clamp=0.5)))},
    "stylegan3": {config: pickled(lambda config=config: stylegan3_pickle(*random_stylegan3(config, seed=3, **SMALL)))
                  for config in ("t", "r")},
    "rosinality": {"training": saved(lambda: training_checkpoint(random_rosinality(seed=3)))},
    "dcgan": {"state dict": saved(lambda: random_dcgan().state_dict())},
}
