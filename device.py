"""Pick the torch device: CUDA, then Apple MPS, then the CPU. `PULSE_DEVICE` overrides it.

In a torchrun job each process takes the GPU of its local rank (cuda:LOCAL_RANK)."""
import os

import torch

from errors import PulseError


class DeviceError(PulseError, RuntimeError):
    """A device that is not there, or a name that is no device."""


def _mps_available():
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _check_available(device, asked_by):
    """DeviceError, naming what asked for it (`asked_by`), unless `device` is there."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{asked_by} asks for CUDA, but torch sees no CUDA GPU "
                              f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{asked_by}: there are only {count} CUDA device(s)")
    elif device.type == "mps" and not _mps_available():
        raise DeviceError(f"{asked_by} asks for Apple MPS, which is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{asked_by}: use cpu, cuda, cuda:N or mps")


def pick_device(requested=None, local_rank=None):
    """The device named by `requested` (PULSE.load's `device`: a name or a torch.device) or
    $PULSE_DEVICE, else the best one available. An error names which of the two asked for it.

    `local_rank` (a process's index on its machine in a multi-process job) makes CUDA, found or
    asked for as "cuda", cuda:local_rank.
    A device that was asked for but is not there is an error, never a silent fallback.
    """
    requested = "" if requested is None else str(requested)
    if requested:
        asked_by = f"device={requested!r}"
    else:
        requested = os.environ.get("PULSE_DEVICE", "").strip()
        asked_by = f"PULSE_DEVICE={requested}"
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as e:
            raise DeviceError(f"{asked_by} is not a device name: use cpu, cuda, cuda:N or mps") from e
        _check_available(device, asked_by)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)  # a GPU in a job: this process's own
        _check_available(device, f"LOCAL_RANK={local_rank} asks for {device}")
    return device
