"""Reading rosinality/stylegan2-pytorch checkpoints without running any code from them.

Two layouts are read, both by torch_files.read (`torch.load(weights_only=True)`):
- the training checkpoint its train.py writes: {"g", "d", "g_ema", "g_optim", "d_optim", "args",
  "ada_aug_p"}, where `args` is an argparse.Namespace of the command-line flags. The Namespace
  is the one class allowed beyond what weights_only takes anyway, and only holding plain values;
  any other class anywhere in the file stops the load before anything of it runs.
- the converted layout its convert_weight.py writes from NVIDIA's networks: {"g_ema", "latent_avg"}.
PULSE uses `g_ema`; `latent_avg` (a truncation centre) is not needed, PULSE does not truncate.
families.py's "rosinality" family recognises a torch.save file by is_checkpoint, reads it by `states`
and builds generators/rosinality.py's networks from them.
"""
import argparse

import torch

from errors import WeightsError

TRAINING_KEYS = {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}
CONVERTED_KEYS = {"g_ema", "latent_avg"}
PLAIN = (type(None), bool, int, float, str)


def is_plain(value):
    return isinstance(value, PLAIN) or (isinstance(value, (list, tuple)) and all(is_plain(v) for v in value))


def is_checkpoint(data):
    """Whether `data` (a loaded .pt) has one of the two layouts, with a g_ema state dict."""
    return (isinstance(data, dict) and set(data) in (TRAINING_KEYS, CONVERTED_KEYS)
            and isinstance(data["g_ema"], dict))


def g_ema_of(data, source):
    """The `g_ema` state dict (float32) in what a torch.save file holds (torch_files.read) of either
    layout; WeightsError naming `source` otherwise."""
    if not is_checkpoint(data):
        raise WeightsError(f"{source} is not a rosinality/stylegan2-pytorch checkpoint: expected a dict with keys "
                           f"{sorted(TRAINING_KEYS)} or {sorted(CONVERTED_KEYS)}")
    args = data.get("args")
    if args is not None and not (isinstance(args, argparse.Namespace) and all(map(is_plain, vars(args).values()))):
        raise WeightsError(f"{source}: its 'args' is not a Namespace of plain values; refusing the checkpoint")
    g_ema = data["g_ema"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in g_ema.items()):
        raise WeightsError(f"{source}: its 'g_ema' is not a dict of tensors")
    return {key: value.float() for key, value in g_ema.items()}


def states(torch_file, source):
    """(synthesis state, mapping state, attributes) of a checkpoint's TorchFile: the mapping is
    `style.*`; no attribute is needed beyond the tensors."""
    g_ema = g_ema_of(torch_file.data, source)
    mapping = {key: value for key, value in g_ema.items() if key.startswith("style.")}
    return {key: value for key, value in g_ema.items() if key not in mapping}, mapping, {}
