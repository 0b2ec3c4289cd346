"""Benchmark of the PULSE search: `python bench.py [-compile] [-json FILE]`.

Times search steps (forward and backward of the generator, losses, optimizer) with random
weights of the real 1024x1024 StyleGAN-1 architecture (or, with `-generator stylegan2`, of
NVIDIA's StyleGAN2 FFHQ config-f: 18 ws, 17 noise layers; `-generator dcgan`, the PyTorch
tutorial's 64x64 DCGAN: any family of weightfiles/families.py with an `untrained` architecture),
so nothing needs downloading, on the device device.pick_device() picks. Every configuration is
compared with the search with all speed changes turned off (the 2020 ops, and on the CPU glibc's
default handling of freed memory), measured first, in the same process. For the configurations that change results
(bf16, fp16, -compile) it also runs the tiny fixture model for 40 steps and reports how far the
best losses drift from the default float32 search.

With -busy it then times every configuration again while a process of its own keeps one core
busy, with the threads the default gives it (one per core other processes leave free) and with
them fixed at the physical cores (the default before), each against its idle figure.

With -processes it also times several processes searching at once (as `torchrun
--nproc_per_node N run.py` would run them: one GPU each, or the CPU threads split among them) and
reports the searches per hour of the whole machine for each process count and batch size.
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.multiprocessing

from runkit import cpu_threads, exits, flags, quiet_stop, roof, speed
from device import pick_device
from errors import PulseError
from PULSE import PULSE
from settings import SearchConfig
from runkit.images import read_rgb
from runkit.image_tensors import to_tensor
from weightfiles.families import DEFAULT, FAMILIES
from weightfiles.weights import load_generator

FIXTURES = Path(__file__).resolve().parent / "tests" / "fixtures"
DRIFT_SEED, DRIFT_STEPS = 5, 40  # the fidelity fixture's search
WARMUP_STEPS = 2  # the first step interval holds one-time costs (first backward, memory growth)
STEPS_PER_FACE = SearchConfig().steps
TIMED_FAMILIES = [name for name, family in FAMILIES.items() if family.untrained]  # -generator's choices


@dataclass
class Setting:
    """One benchmarked configuration of the search."""
    name: str
    batch: int = 1
    fast_ops: bool = True
    keep_freed_memory: bool = False
    precision: str = "fp32"
    compile: bool = False


@dataclass
class Timing:
    setting: Setting
    seconds_per_step: float
    warmup_seconds: float  # the warm-up steps, with any compilation
    peak_memory_mb: float
    threads: int           # the CPU threads its search ran with

    @property
    def images_per_second(self):
        return self.setting.batch / self.seconds_per_step

    @property
    def searches_per_hour(self):
        return searches_per_hour([self.seconds_per_step], self.setting.batch)

    def row(self, baseline, step_flops, machine_roof):
        """The report row; its speedup is images per second against those of `baseline`, its roof
        share the matrix throughput reached (`step_flops` a batch-1 step's) against `machine_roof`'s."""
        share = machine_roof.share(step_flops * self.setting.batch, self.seconds_per_step, self.setting.precision)
        return {**asdict(self.setting), "seconds_per_step": round(self.seconds_per_step, 4),
                "images_per_second": round(self.images_per_second, 4),
                "seconds_per_face": round(STEPS_PER_FACE / self.images_per_second, 2),
                "searches_per_hour": round(self.searches_per_hour, 2),
                "warmup_seconds": round(self.warmup_seconds, 2),
                "peak_memory_mb": round(self.peak_memory_mb), "threads": self.threads,
                "speedup": round(self.images_per_second / baseline.images_per_second, 3),
                "roof_share": None if share is None else round(share, 3)}


def default_setting(device, name="default", **changes):
    """The default path, as run.py takes it (freed memory kept for reuse on the CPU), with `changes`."""
    return Setting(name, keep_freed_memory=device.type == "cpu", **changes)


def settings_for(device, batch_sizes, with_compile):
    """The configurations, in the order they are run (freed-memory reuse cannot be undone).

    Batch size 1 always runs; `batch_sizes` adds the default path at other sizes."""
    baseline = Setting("all speed changes off (2020 ops)", fast_ops=False)
    settings = [baseline]
    if device.type == "cpu":
        settings += [Setting("fast ops only"), default_setting(device),
                     Setting("freed-memory reuse only", fast_ops=False, keep_freed_memory=True)]
    else:
        settings.append(default_setting(device))
    settings += [default_setting(device, f"default, batch {b}", batch=b) for b in sorted(set(batch_sizes) - {1})]
    settings += [default_setting(device, f"-precision {p}", precision=p) for p in ("bf16", "fp16")]
    if with_compile:
        settings.append(default_setting(device, "-compile", compile=True))
    return settings


# ---- measuring -------------------------------------------------------------------------------

def release_freed_memory():
    """Free what Python still holds and give glibc's kept memory back, so the next configuration's
    peak is its own."""
    gc.collect()
    speed.release_freed_memory()


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif device.type == "cpu":
        release_freed_memory()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: restart the peak-RSS count
        except OSError:
            pass  # elsewhere the peak is the process's peak so far


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


def untrained(family, resolution):
    """Family `family`'s published architecture with random weights (at `resolution`, else as published)."""
    return FAMILIES[family].untrained(resolution).requires_grad_(False)


def model_for(setting, family, synthesis, device):
    """The search model of a random `synthesis` under its family's prior, a unit gaussian fit where it needs one."""
    width = synthesis.dlatent_size
    fit = {"mean": torch.zeros(width), "std": torch.ones(width)} if FAMILIES[family].needs_fit else None
    prior = FAMILIES[family].prior(synthesis, fit)
    return PULSE.build(synthesis, prior, device, setting.precision, fast_ops=setting.fast_ops, compile=setting.compile)


def random_inputs(model, batch):
    side = min(32, model.resolution)
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0))


def time_steps(model, batch, steps, device):
    """(median seconds of a step after the warm-up steps, seconds of the warm-up) on random inputs."""
    ref_im = random_inputs(model, batch)
    stamps = []

    def stamp(step):
        roof.synchronize(device)
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    model.upsample(ref_im, seed=0, batch_size=batch, steps=steps + WARMUP_STEPS, on_step=stamp)
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(intervals[WARMUP_STEPS - 1:]), stamps[WARMUP_STEPS - 1] - start


def step_flops(family, synthesis, device):
    """The floating-point operations of one default search step at batch 1 (forward and backward)."""
    model = model_for(default_setting(device), family, synthesis, device)
    return roof.counted_flops(lambda: model.upsample(random_inputs(model, 1), seed=0, steps=1))


def measure(setting, family, synthesis, device, steps):
    if setting.keep_freed_memory:
        speed.keep_freed_memory()
    model = model_for(setting, family, synthesis, device)
    reset_peak_memory(device)
    seconds, warmup = time_steps(model, setting.batch, steps, device)
    return Timing(setting, seconds, warmup, peak_memory_mb(device), torch.get_num_threads())


def searches_per_hour(seconds_per_step, batch):
    """Searches of the default length per hour by processes taking these seconds per step."""
    return sum(3600 * batch / (seconds * STEPS_PER_FACE) for seconds in seconds_per_step)


# ---- several processes at once ---------------------------------------------------------------

def device_of_process(rank):
    """The device torchrun would give process `rank` of one machine (GPUs are shared if too few)."""
    gpus = torch.cuda.device_count() if not os.environ.get("PULSE_DEVICE") else 0
    return pick_device(local_rank=rank % gpus if gpus else rank)


def time_in_process(rank, generator, batch_sizes, steps, resolution, threads, start_together, results):
    """One of several processes searching at once: its seconds per step at each batch size."""
    device = device_of_process(rank)
    cpu_threads.set_threads(threads)
    setting = default_setting(device)
    if setting.keep_freed_memory:
        speed.keep_freed_memory()
    torch.manual_seed(0)
    model = model_for(setting, generator, untrained(generator, resolution), device)
    time_steps(model, 1, 1, device)  # one-time costs, as in main
    for batch in batch_sizes:
        start_together.wait()
        results.put((batch, time_steps(model, batch, steps, device)[0]))


def time_processes(processes, generator, batch_sizes, steps, resolution, threads):
    """{batch: [seconds per step of each process]} with `processes` processes searching at once."""
    context = torch.multiprocessing.get_context("spawn")
    start_together, results = context.Barrier(processes), context.SimpleQueue()
    workers = [context.Process(target=time_in_process, daemon=True,
                               args=(rank, generator, batch_sizes, steps, resolution, threads, start_together, results))
               for rank in range(processes)]
    with quiet_stop.children_ignore_ctrl_c():
        for worker in workers:
            worker.start()
    timings = {batch: [] for batch in batch_sizes}
    for _ in range(processes * len(batch_sizes)):
        batch, seconds = results.get()
        timings[batch].append(seconds)
    for worker in workers:
        worker.join()
    return timings


def throughput(timings, args, threads, device):
    """Searches per hour of the machine for each process count and batch size of the default search;
    one process from the timings already made, more from processes started for it."""
    default = default_setting(device)
    single = {t.setting.batch: t for t in timings  # the default path at each batch size
              if replace(t.setting, name=default.name, batch=default.batch) == default}
    rows = [{"processes": 1, "batch": batch, "threads_per_process": threads,
             "searches_per_hour": t.searches_per_hour} for batch, t in sorted(single.items())]
    for processes in sorted(set(args.processes) - {1}):
        print(f"timing: {processes} processes at once ...", file=sys.stderr, flush=True)
        share = max(1, threads // processes) if device.type == "cpu" else threads
        per_batch = time_processes(processes, args.generator, sorted(single), args.steps, args.resolution, share)
        rows += [{"processes": processes, "batch": batch, "threads_per_process": share,
                  "searches_per_hour": searches_per_hour(seconds, batch)} for batch, seconds in per_batch.items()]
    base = rows[0]["searches_per_hour"]
    return [{**row, "searches_per_hour": round(row["searches_per_hour"], 2),
             "speedup": round(row["searches_per_hour"] / base, 3)} for row in rows]


# ---- beside a busy core ----------------------------------------------------------------------

@contextmanager
def busy_core():
    """A process of our own spinning on the last CPU this one may use while the block runs; yields
    that CPU. Its own session: a Ctrl-C reaches bench.py alone, which ends it on the way out."""
    cpu = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    try:
        if cpu is not None:
            os.sched_setaffinity(busy.pid, {cpu})
        time.sleep(2 * cpu_threads.CHECK_SECONDS)  # long enough for the next look at the free cores
        yield cpu
    finally:
        busy.kill()
        busy.wait()


def beside_a_busy_core(idle_timings, args, synthesis, device):
    """{"busy": rows, "busy_cpu": cpu}: each timed configuration again with one core busy, and the
    default with its threads fixed at the physical cores, each against its idle timing."""
    idle = {t.setting.name: t for t in idle_timings}
    fixed = replace(idle["default"].setting, name=f"default, threads fixed at {cpu_threads.physical_cores()} (before)")
    rows = []
    with busy_core() as cpu:
        for setting in [t.setting for t in idle_timings] + [fixed]:
            print(f"timing beside a busy core: {setting.name} ...", file=sys.stderr, flush=True)
            if setting is fixed:
                cpu_threads.set_threads(cpu_threads.physical_cores())
            timing = measure(setting, args.generator, synthesis, device, args.steps)
            before = idle["default" if setting is fixed else setting.name]
            rows.append({"name": setting.name, "batch": setting.batch, "threads": timing.threads,
                         "seconds_per_step": round(timing.seconds_per_step, 4),
                         "idle_seconds_per_step": round(before.seconds_per_step, 4),
                         "busy_over_idle": round(timing.seconds_per_step / before.seconds_per_step, 3)})
    cpu_threads.set_threads(args.threads)
    return {"busy": rows, "busy_cpu": cpu}


# ---- drift of the configurations that change results ----------------------------------------

def fixture_search(device, precision="fp32", compile=False):
    """Best losses, convergence and best step of the fixture search (tiny model, seed 5, 40 steps)."""
    model = PULSE.build(*load_generator(FIXTURES / "tiny_model"), device, precision, compile=compile)
    ref_im = to_tensor(read_rgb(FIXTURES / "tiny_input" / "target.png"))[None]
    (result,) = model.upsample(ref_im, seed=DRIFT_SEED, steps=DRIFT_STEPS)
    return {"best_total": result.losses["TOTAL"], "best_l2": result.losses["L2"],
            "converged": result.converged, "best_step": result.best_step}


def drift(settings, device):
    """For each result-changing configuration: its fixture search against the float32 default."""
    reference = fixture_search(device)
    rows = [{"name": "fp32 (default)", **reference, "total_rel_diff": 0.0, "l2_rel_diff": 0.0}]
    for s in settings:
        got = fixture_search(device, s.precision, s.compile)
        rows.append({"name": s.name, **got,
                     "total_rel_diff": abs(got["best_total"] - reference["best_total"]) / reference["best_total"],
                     "l2_rel_diff": abs(got["best_l2"] - reference["best_l2"]) / reference["best_l2"]})
    return rows


# ---- report ----------------------------------------------------------------------------------

def print_report(report):
    print(f"\nPULSE search, {report['generator']} {report['resolution']}x{report['resolution']} generator "
          f"(random weights), "
          f"{report['device']} ({report['cpu']}, {report['physical_cores']} physical cores), "
          f"torch {report['torch']}, median of {report['steps']} steps")
    print(f"threads: {report['thread_rule']}")
    print(f"kernels: {report['kernels']}")
    matmul = ", ".join(f"{name} {value:.0f}" for name, value in report["roof"]["matmul_gflops"].items())
    print(f"this machine's roof, measured now: matrix products {matmul} GFLOP/s; memory copy "
          f"{report['roof']['memory_gb_per_s']:.1f} GB/s. A batch-1 step is {report['step_gflops']:.1f} GFLOP.")
    print(f"{'configuration':36} {'batch':>5} {'threads':>7} {'s/step':>8} {'img/s':>7} {'s/face':>8} "
          f"{'warm-up s':>9} {'peak MB':>8} {'speed':>7} {'roof':>6}")
    for r in report["timings"]:
        print(f"{r['name']:36} {r['batch']:5d} {r['threads']:7d} {r['seconds_per_step']:8.3f} "
              f"{r['images_per_second']:7.2f} {r['seconds_per_face']:8.1f} {r['warmup_seconds']:9.1f} "
              f"{r['peak_memory_mb']:8d} {r['speedup']:6.2f}x "
              f"{'' if r['roof_share'] is None else format(r['roof_share'], '6.0%')}")
    for r in report["unsupported"]:
        print(f"{r['name']:36} not run: {r['reason']}")
    print(f"img/s: images generated per second (batch / s/step); s/face: a {STEPS_PER_FACE}-step search "
          f"per face; warm-up s: the first {WARMUP_STEPS} steps (any compiling included); peak MB: "
          f"{'GPU memory allocated' if report['device'].startswith('cuda') else 'resident memory'}; "
          f"speed: img/s against the first row; roof: the step's matrix throughput (GFLOP/s) as a share "
          f"of this machine's matrix-product roof in the float type it computes in")
    print(f"\nSearches per hour of the machine ({STEPS_PER_FACE} steps each, default search), by process "
          f"count (torchrun --nproc_per_node) and -batch_size:")
    print_table([("processes", "processes", 9, "d"), ("batch", "batch", 5, "d"),
                 ("threads each", "threads_per_process", 12, "d"), ("searches/h", "searches_per_hour", 10, ".1f"),
                 ("speed", "speedup", 7, times)], report["throughput"])
    if report["busy"]:
        print(f"\nBeside a busy core (another process spinning on CPU {report['busy_cpu']}), against the same "
              f"configuration on the idle machine above:")
        print_table([("configuration", "name", -46, ""), ("threads", "threads", 7, "d"),
                     ("s/step", "seconds_per_step", 8, ".3f"), ("idle s/step", "idle_seconds_per_step", 11, ".3f"),
                     ("busy/idle", "busy_over_idle", 9, times)], report["busy"])
    if report["drift"]:
        print(f"\nDrift on the tiny fixture model (seed {DRIFT_SEED}, {DRIFT_STEPS} steps), best losses "
              f"against the float32 default:")
        print_table([("configuration", "name", -36, ""), ("TOTAL", "best_total", 10, ".5f"),
                     ("rel diff", "total_rel_diff", 9, ".2e"), ("L2", "best_l2", 10, ".5f"),
                     ("rel diff", "l2_rel_diff", 9, ".2e"), ("best step", "best_step", 9, "d"),
                     ("converged", "converged", 10, "")], report["drift"])


def times(ratio):
    return f"{ratio:.2f}x"


def print_table(columns, rows):
    """A heading line, then a line a row. `columns`: (heading, key of the row, width (negative: aligned
    left), format spec or a function of the value)."""
    def cell(text, width):
        return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"

    print(" ".join(cell(heading, width) for heading, _, width, _ in columns))
    for row in rows:
        print(" ".join(cell(spec(row[key]) if callable(spec) else format(row[key], spec), width)
                       for _, key, width, spec in columns))


def default_process_counts():
    """1, and one process per GPU where there are several."""
    return sorted({1, torch.cuda.device_count() if torch.cuda.is_available() else 1})


def build_parser():
    p = flags.parser(__doc__.splitlines()[0])
    p.add_argument("-steps", "--steps", type=flags.positive_int, default=3,
                   help=f"timed steps per configuration (the median counts), after {WARMUP_STEPS} warm-up steps")
    p.add_argument("-batch_sizes", "--batch_sizes", type=flags.positive_int, nargs="+", default=[1, 2, 4],
                   help="batch sizes of the default path (batch 1 always runs; speed compares images per "
                        "second with the batch-1 baseline)")
    p.add_argument("-processes", "--processes", type=flags.positive_int, nargs="+", default=default_process_counts(),
                   help="process counts to compare (as torchrun --nproc_per_node): each process gets a GPU "
                        "of its own, or on the CPU its share of the threads")
    flags.add_threads_flag(p)
    p.add_argument("-compile", "--compile", action="store_true",
                   help="also time torch.compile of the generator (compiling takes about a minute on 2 CPU cores)")
    p.add_argument("-generator", "--generator", choices=TIMED_FAMILIES, default=DEFAULT,
                   help="the generator family to time (the drift runs use the StyleGAN-1 tiny model, so they "
                        "are skipped for the others)")
    p.add_argument("-no_drift", "--no_drift", action="store_true", help="skip the drift runs on the tiny model")
    p.add_argument("-busy", "--busy", action="store_true",
                   help="then time each configuration again while a process of bench.py's own keeps one core "
                        "busy, and the default with its threads fixed at the physical cores (the default before "
                        "the threads followed the free cores), each against its idle figure")
    p.add_argument("-json", "--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("-resolution", "--resolution", type=flags.positive_int, help=argparse.SUPPRESS)  # tests
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        device = pick_device()
    except PulseError as e:
        return exits.report_failure(e, "bench.py")
    threads = cpu_threads.set_threads(args.threads)
    torch.manual_seed(0)
    synthesis = untrained(args.generator, args.resolution)

    settings = settings_for(device, args.batch_sizes, args.compile)
    print("warming up ...", file=sys.stderr, flush=True)  # one-time costs (kernel set-up) hit no timing
    time_steps(model_for(settings[0], args.generator, synthesis, device), 1, 1, device)

    timings, unsupported, result_changing = [], [], []
    for setting in settings:
        try:
            speed.precision_dtypes(setting.precision, device)
        except speed.PrecisionError as e:
            unsupported.append({"name": setting.name, "reason": exits.script_message(e)})
            continue
        print(f"timing: {setting.name} ...", file=sys.stderr, flush=True)
        timings.append(measure(setting, args.generator, synthesis, device, args.steps))
        if setting.precision != "fp32" or setting.compile:
            result_changing.append(setting)

    print("measuring this machine's roof ...", file=sys.stderr, flush=True)
    machine_roof = roof.measure(device, [t.setting.precision for t in timings])
    flops = step_flops(args.generator, synthesis, device)
    with_drift = not args.no_drift and args.generator == DEFAULT
    report = {"device": str(device), "generator": args.generator, "threads": threads, "torch": torch.__version__,
              "cpu": roof.cpu_name(), "kernels": roof.kernel_set(), "physical_cores": cpu_threads.physical_cores(),
              "resolution": synthesis.resolution, "steps": args.steps,
              "roof": {"matmul_gflops": {name: round(value, 1) for name, value in machine_roof.gflops.items()},
                       "memory_gb_per_s": round(machine_roof.memory_gb_per_s, 1)},
              "step_gflops": round(flops / 1e9, 2),
              "timings": [t.row(timings[0], flops, machine_roof) for t in timings],
              "thread_rule": cpu_threads.rule(), "unsupported": unsupported,
              "throughput": throughput(timings, args, threads, device),
              "drift": drift(result_changing, device) if with_drift else [],
              **(beside_a_busy_core(timings, args, synthesis, device) if args.busy else {"busy": []})}
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
