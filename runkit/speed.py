"""Speed settings: float precision of the generator, reuse of freed memory (CPU threads: threads.py).

Only `-precision bf16|fp16` (autocast) and `-compile` change results; the rest give the same
bits, faster. See bench.py for what each one is worth.
"""
import ctypes
import platform

import torch

from errors import PulseError, about_setting

# precision (settings.PRECISIONS): (dtype of the model and the search variables, dtype the generator computes
# in under autocast)
DTYPES = {
    "fp32": (torch.float32, None),
    "fp64": (torch.float64, None),
    "bf16": (torch.float32, torch.bfloat16),
    "fp16": (torch.float32, torch.float16),
}
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


class PrecisionError(PulseError, ValueError):
    """A precision this device cannot compute in."""


def cpu_has_fast_bfloat16():
    """Whether oneDNN runs bfloat16 convolutions natively on this CPU (it needs AVX-512; AMX is best)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def precision_dtypes(name, device):
    """(model dtype, autocast dtype or None) of precision `name` on `device`."""
    model_dtype, autocast_dtype = DTYPES[name]
    # Where torch has no fast kernels for a type, its reference kernels crawl: refuse rather than
    # crawl. float16 on any CPU: about 60x slower than float32 (2-core AVX-512 machine); bfloat16
    # on a CPU without AVX-512: a 3x3 convolution of 256 channels at 64x64 took 41 s against
    # float32's 0.18 s (AMD EPYC, AVX2, 2 cores).
    if autocast_dtype == torch.float16 and device.type == "cpu":
        def words(named):
            bf16_here = f"use {named('bf16')} there" if cpu_has_fast_bfloat16() else "use fp32 on this CPU"
            return (f"{named('fp16')} is not supported on the CPU (torch has no fast float16 CPU kernels); "
                    f"{bf16_here}, fp16 on a GPU")
        raise about_setting(PrecisionError, "precision", words)
    if autocast_dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_fast_bfloat16():
        raise about_setting(PrecisionError, "precision", lambda named: (
            f"{named('bf16')} needs a CPU with AVX-512 (oneDNN's bfloat16 kernels); on this one bfloat16 "
            f"convolutions run hundreds of times slower than float32: use fp32"))
    if model_dtype == torch.float64 and device.type == "mps":
        raise about_setting(PrecisionError, "precision", lambda named: (
            f"{named('fp64')} is not supported on Apple MPS (it has no float64); use fp32, or run on the CPU "
            f"with PULSE_DEVICE=cpu"))
    return model_dtype, autocast_dtype


def keep_freed_memory():
    """Let glibc keep freed memory for reuse instead of handing it back to the system.

    A 1024x1024 search allocates and frees activations of 16-64 MB all through each step. glibc
    serves blocks that big with mmap and unmaps them on free, so every step faults in ~4 GB of
    fresh zeroed pages: about half of a step on the CPU. Kept in the heap they are reused. Same
    results; more resident memory (fragmentation). Returns False where this is not glibc.
    """
    libc = glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


def release_freed_memory():
    """Give the memory glibc keeps for reuse back to the system (bench.py: each configuration's
    peak memory is then its own)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def glibc():
    """The C library, where it is glibc (the only one whose allocator these calls tune), else None."""
    return ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None
