"""This machine's own limits, measured now: matrix throughput per float type and memory bandwidth.

bench.py divides what a search step achieves by these, so that every machine says how far it is
from its own roof rather than from a figure measured elsewhere. The step's work is counted by
torch's FLOP counter (convolutions and matrix products, forward and backward).
"""
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from runkit.speed import DTYPES

MATMUL_SIDES = (256, 512, 1024, 2048)  # grown until a product is long enough to time (BLAS peaks on large ones)
MATMUL_LONG_ENOUGH = 0.05   # seconds: a product this long is timed well; slow types stop at smaller sides
MEMORY_BYTES = 256 * 2**20  # far beyond any cache, so a copy runs at memory speed
SECONDS_PER_MEASURE = 0.5   # each figure is the best rate over repeats in about this long
CPU_FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")


@dataclass
class Roof:
    """What this device can do at best: GFLOP/s of a large matrix product per float type, GB/s of a copy."""
    gflops: dict          # {"fp32": ..., "bf16": ...}: dense matrix products on this device
    memory_gb_per_s: float

    def share(self, flops, seconds, precision):
        """The share of the matrix roof that `flops` in `seconds` reach, for a search of `precision`
        (fp16 and bf16 compute in their own type under autocast; fp64 against fp64's roof)."""
        roof = self.gflops.get(precision)
        return flops / seconds / 1e9 / roof if roof else None


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def best_rate(work, amount, device):
    """The best `amount` per second of `work()` over repeats lasting about SECONDS_PER_MEASURE."""
    work()  # first call: one-time set-up (kernel choice, allocation) is not timed
    synchronize(device)
    best, spent, repeats = 0.0, 0.0, 0
    while spent < SECONDS_PER_MEASURE or repeats < 2:
        start = time.perf_counter()
        work()
        synchronize(device)
        elapsed = time.perf_counter() - start
        spent += elapsed
        repeats += 1
        best = max(best, amount / elapsed)
    return best


def matmul_gflops(dtype, device):
    """GFLOP/s of square matrix products in `dtype`, on matrices grown until one product takes
    MATMUL_LONG_ENOUGH (a type without fast kernels, such as bfloat16 on an AVX2 CPU, stops small)."""
    for side in MATMUL_SIDES:
        a, b = (torch.randn(side, side, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
                for seed in (0, 1))
        rate = best_rate(lambda: torch.mm(a, b), 2 * side ** 3, device)
        if 2 * side ** 3 / rate >= MATMUL_LONG_ENOUGH:
            break
    return rate / 1e9


def copy_gb_per_s(device):
    source = torch.ones(MEMORY_BYTES // 4, device=device)
    target = torch.empty_like(source)
    return best_rate(lambda: target.copy_(source), 2 * MEMORY_BYTES, device) / 1e9  # read once, written once


def measure(device, precisions=()):
    """The roof of `device` for float32, bfloat16 and the float types of `precisions` (names as in
    speed.DTYPES)."""
    gflops = {}
    for name in dict.fromkeys(("fp32", "bf16", *precisions)):
        dtype = DTYPES[name][1] or DTYPES[name][0]  # autocast's type where there is one
        if dtype == torch.float16 and device.type == "cpu":
            continue  # no fast float16 CPU kernels: speed.precision_dtypes refuses it there
        if dtype == torch.float64 and device.type == "mps":
            continue
        gflops[name] = matmul_gflops(dtype, device)
    return Roof(gflops, copy_gb_per_s(device))


def counted_flops(work):
    """The floating-point operations of `work()` as torch's FLOP counter counts them."""
    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()


def cpu_name():
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_flags():
    """The vector and matrix extensions of note this CPU announces (Linux; empty elsewhere)."""
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        return []
    announced = set(line.split(":", 1)[1].split())
    return [flag for flag in CPU_FLAGS_OF_NOTE if flag in announced]


def kernel_set():
    """Which of torch's CPU kernel sets runs here (ATEN_CPU_CAPABILITY can lower it) and the CPU's extensions."""
    flags = cpu_flags()
    return f"ATen {torch.backends.cpu.get_cpu_capability()}" + (f"; CPU has {' '.join(flags)}" if flags else "")
