"""Network files written by torch.save, read without running any code from them.

`torch.load(weights_only=True)` takes tensors and plain containers only; the one class it is also
allowed here is `argparse.Namespace`, the type of the `args` a rosinality training checkpoint
saves (rosinality_checkpoints.py checks that its values are plain). Which family a file holds is
decided by its content (families.family_of), never by its name: `.pt`, `.pth` and `.tar` alike.
"""
import argparse
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

from errors import WeightsError

# torch.save's pre-1.6 format starts with this pickle; the current one is a zip archive.
LEGACY_TORCH_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


def is_torch_save_file(path):
    """Whether `path` was written by torch.save (either format), not pickled as NVIDIA's networks are."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_TORCH_HEADER))
    return head == LEGACY_TORCH_HEADER or zipfile.is_zipfile(path)


@dataclass
class TorchFile:
    """What a torch.save file holds (on the CPU), and where it came from."""
    data: Any
    path: str


def read(path):
    """The TorchFile at `path`; WeightsError when it cannot be read safely."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return TorchFile(torch.load(path, map_location="cpu", weights_only=True), str(path))
    except Exception as e:  # weights_only refuses every other class, before running anything of it
        raise WeightsError(f"{path} is not a PyTorch file this port reads safely "
                           f"({type(e).__name__}: {str(e).strip().splitlines()[0]})") from e


def describe(data):
    """What a file holds, in a few words: a message's account of a file no family recognises."""
    if isinstance(data, dict):
        keys = [str(key) for key in data]
        shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
        return f"a dict of {len(keys)} entries ({shown})"
    return f"a {type(data).__name__}"
