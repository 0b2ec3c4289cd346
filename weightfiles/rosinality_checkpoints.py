"""Reading rosinality/stylegan2-pytorch checkpoints without running any code from them.

Two layouts are read, both with `torch.load(weights_only=True)`:
- the training checkpoint its train.py writes: {"g", "d", "g_ema", "g_optim", "d_optim", "args",
  "ada_aug_p"}, where `args` is an argparse.Namespace of the command-line flags. The Namespace
  is the one class allowed beyond what weights_only takes anyway, and only holding plain values;
  any other class anywhere in the file stops the load before anything of it runs.
- the converted layout its convert_weight.py writes from NVIDIA's networks: {"g_ema", "latent_avg"}.
PULSE uses `g_ema`; `latent_avg` (a truncation centre) is not needed, PULSE does not truncate.
families.py's "rosinality" family takes a Checkpoint and builds rosinality.py's networks from it.
"""
import argparse
import pickle
import zipfile
from dataclasses import dataclass

import torch

from weightfiles.errors import WeightsError

TRAINING_KEYS = {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}
CONVERTED_KEYS = {"g_ema", "latent_avg"}
PLAIN = (type(None), bool, int, float, str)
# torch.save's pre-1.6 format starts with this pickle; the current one is a zip archive.
LEGACY_TORCH_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


def is_torch_save_file(path):
    """Whether `path` was written by torch.save (either format), not pickled as NVIDIA's networks are."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_TORCH_HEADER))
    return head == LEGACY_TORCH_HEADER or zipfile.is_zipfile(path)


def is_plain(value):
    return isinstance(value, PLAIN) or (isinstance(value, (list, tuple)) and all(is_plain(v) for v in value))


def is_checkpoint(data):
    """Whether `data` (a loaded .pt) has one of the two layouts, with a g_ema state dict."""
    return (isinstance(data, dict) and set(data) in (TRAINING_KEYS, CONVERTED_KEYS)
            and isinstance(data["g_ema"], dict))


@dataclass
class Checkpoint:
    """What PULSE takes from a rosinality checkpoint: its `g_ema` state dict, float32."""
    g_ema: dict


def states(checkpoint, source=None):
    """(synthesis state, mapping state, attributes) of a Checkpoint: the mapping is `style.*`; no
    attribute is needed beyond the tensors."""
    mapping = {key: value for key, value in checkpoint.g_ema.items() if key.startswith("style.")}
    return {key: value for key, value in checkpoint.g_ema.items() if key not in mapping}, mapping, {}


def read_checkpoint(path):
    """The Checkpoint in a rosinality file of either layout; WeightsError otherwise."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses every other class, before running anything of it
        raise WeightsError(f"{path} is not a rosinality checkpoint this port reads safely "
                           f"({type(e).__name__}: {str(e).strip().splitlines()[0]})") from e
    if not is_checkpoint(data):
        raise WeightsError(f"{path} is not a rosinality/stylegan2-pytorch checkpoint: expected a dict with keys "
                           f"{sorted(TRAINING_KEYS)} or {sorted(CONVERTED_KEYS)}")
    args = data.get("args")
    if args is not None and not (isinstance(args, argparse.Namespace) and all(map(is_plain, vars(args).values()))):
        raise WeightsError(f"{path}: its 'args' is not a Namespace of plain values; refusing the checkpoint")
    g_ema = data["g_ema"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in g_ema.items()):
        raise WeightsError(f"{path}: its 'g_ema' is not a dict of tensors")
    return Checkpoint({key: value.float() for key, value in g_ema.items()})
