"""PULSE on a folder of aligned low-resolution faces: `python run.py -input_dir input -output_dir runs`.

Every input gets its best high-resolution image written as `<output_dir>/<stem>.png` (or
`<stem>_<k>.png` with -duplicates), even when the search did not reach eps (then it is flagged
NOT CONVERGED), and one line in `<output_dir>/pulse_log.jsonl`. -strip and -gif add pictures
of the results and of the searches (see visuals.py).
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    import quiet_stop
    quiet_stop.install()

import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

import cli
import runlog
import speed
import visuals
from cli import EXIT_INPUTS_FAILED, EXIT_SETUP_FAILED, SetupError, non_negative_int, positive_float, positive_int
from bicubic import divides_by_power_of_two
from device import DeviceError, pick_device
from distributed import Launch, Team, TeamError, launch_from_environment
from files import remove_stale_temporaries, stem_clashes
from images import IMAGE_SUFFIXES, ImageReadError, read_rgb, save_tensor_image, to_tensor
from loss import LossString
from PULSE import NOISE_TYPES, OPTIMIZERS, PULSE, SCHEDULES, NoiseLayerError, NoiseLayers, SearchConfig
from weight_sources import weights_folder
from weights import WeightsError, load_generator

MAX_LAYERS = 18  # of the 1024x1024 model; checked against the loaded model's own count too


# ---- flags ---------------------------------------------------------------------------------

def build_parser():
    defaults = SearchConfig()
    p = cli.parser("PULSE: search a StyleGAN's latent space for high-resolution faces that "
                   "downscale to the low-resolution inputs (Menon et al., CVPR 2020).",
                   epilog=cli.EXIT_STATUSES)
    io = p.add_argument_group("input and output")
    io.add_argument("-input_dir", "--input_dir", default="input",
                    help="folder of square low-resolution faces (PNG, JPEG, WebP), e.g. from align_face.py")
    io.add_argument("-output_dir", "--output_dir", default="runs", help="where results and pulse_log.jsonl go")
    io.add_argument("-duplicates", "--duplicates", type=positive_int, default=1,
                    help="high-resolution images per input, each from its own seed")
    io.add_argument("-batch_size", "--batch_size", type=positive_int, default=1,
                    help="searches run together (in float64 results do not depend on it; in float32 rounding does)")
    io.add_argument("-save_intermediate", "--save_intermediate", action="store_true",
                    help="write the best HR image and its LR downscale after every step under <output_dir>/<stem>/HR|LR/")
    io.add_argument("-resume", "--resume", action="store_true",
                    help="skip inputs whose output and log line already exist with the same flags and seed")

    w = p.add_argument_group("the generator (see docs/weights.md)")
    w.add_argument("-cache_dir", "--cache_dir", default="cache",
                   help="folder with synthesis.pt (and mapping.pt or gaussian_fit.pt); when it has none, "
                        "NVIDIA's FFHQ model is downloaded and converted into it")
    w.add_argument("-network", "--network", metavar="PATH_OR_URL",
                   help="another generator: a folder of converted weights, or a StyleGAN-1 or StyleGAN2 "
                        "network pickle (file or URL), converted once into <cache_dir>/<name>/")
    w.add_argument("-keep_pickle", "--keep_pickle", action="store_true",
                   help="keep a downloaded network pickle next to its conversion (NVIDIA's is about 300 MB)")

    s = p.add_argument_group("search")
    s.add_argument("-seed", "--seed", type=non_negative_int,
                   help="seed of the first duplicate (duplicate k uses seed+k-1); drawn at random and logged if not given")
    s.add_argument("-loss_str", "--loss_str", type=cli.parsed_by(LossString), default=defaults.loss_str,
                   help="weighted sum of L2, L1 and GEOCROSS terms")
    s.add_argument("-eps", "--eps", type=positive_float, default=defaults.eps,
                   help="target for the downscaling loss L2; a search that never reaches it is NOT CONVERGED")
    s.add_argument("-noise_type", "--noise_type", choices=NOISE_TYPES, default=defaults.noise_type,
                   help="noise inputs of the generator: zero, fixed random, or trainable")
    s.add_argument("-num_trainable_noise_layers", "--num_trainable_noise_layers", type=non_negative_int,
                   default=defaults.num_trainable_noise_layers,
                   help="with -noise_type trainable, how many of the first noise layers are optimised")
    s.add_argument("-tile_latent", "--tile_latent", action="store_true",
                   help="search one latent vector shared by all layers instead of one per layer")
    s.add_argument("-bad_noise_layers", "--bad_noise_layers", type=cli.parsed_by(NoiseLayers),
                   default=defaults.bad_noise_layers,
                   help="dot-separated noise layers set to zero (they add artifacts); the default is the "
                        "1024x1024 model's last layer and zeroes nothing in smaller models")
    s.add_argument("-opt_name", "--opt_name", choices=list(OPTIMIZERS), default=defaults.opt_name,
                   help="optimizer of the projected gradient descent")
    s.add_argument("-learning_rate", "--learning_rate", type=positive_float, default=defaults.learning_rate,
                   help="peak learning rate")
    s.add_argument("-steps", "--steps", type=positive_int, default=defaults.steps, help="optimisation steps")
    s.add_argument("-lr_schedule", "--lr_schedule", choices=list(SCHEDULES), default=defaults.lr_schedule,
                   help="learning-rate schedule over the steps")
    s.add_argument("-precision", "--precision", choices=list(speed.PRECISIONS), default="fp32",
                   help="float type of the model and the search (random draws are always float32); bf16 and "
                        "fp16 run the generator under autocast, faster and with slightly different results "
                        "(fp16 only on a GPU)")

    f = p.add_argument_group("speed (see bench.py); the first two hold for the whole process, a sweep included")
    f.add_argument("-no_speedups", "--no_speedups", action="store_true",
                   help="run the 2020 generator ops and, on the CPU, let freed memory go back to the system: "
                        "the same results, about 2x slower on the CPU, with less peak memory")
    f.add_argument("-threads", "--threads", type=positive_int,
                   help="CPU threads (default: OMP_NUM_THREADS if set, else the number of physical cores)")
    f.add_argument("-compile", "--compile", action="store_true",
                   help="torch.compile the generator: faster steps after a compilation of a minute or more "
                        "(needs a C++ compiler on the CPU); results differ slightly")
    visuals.add_flags(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_trainable_noise_layers > MAX_LAYERS:
        parser.error(f"argument -num_trainable_noise_layers: must be within 0..{MAX_LAYERS}, "
                     f"got {args.num_trainable_noise_layers}")
    visuals.check_flags(parser, args)
    return parser, args


def search_config(args):
    return SearchConfig(**{f.name: getattr(args, f.name) for f in fields(SearchConfig)})


# ---- inputs --------------------------------------------------------------------------------

@dataclass
class Job:
    """One search: an input image, the name of its output and its seed."""
    source: Path
    name: str
    seed: int
    base_seed: int
    image: torch.Tensor


def list_inputs(input_dir):
    """The files of the input folder; SetupError if there are none, or if two would write one result."""
    folder = Path(input_dir)
    hint = f"Put aligned low-resolution faces there first, e.g. with `python align_face.py -output_dir {folder}`."
    if not folder.is_dir():
        raise SetupError(f"input folder {folder} does not exist. {hint}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SetupError(f"input folder {folder} is empty. {hint}")
    clashes = stem_clashes(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
    if clashes:  # results are named by stem: face.jpg and face.png would overwrite each other's
        raise SetupError(f"inputs with the same name would write the same result: {'; '.join(clashes)}. "
                         f"Rename or remove one of each")
    return files


def working_sizes(resolution):
    return [resolution >> k for k in range(resolution.bit_length() - 2, -1, -1)]


def read_input(path, resolution):
    """The input as a [3, r, r] tensor; ImageReadError when PULSE cannot use it."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageReadError(f"{path}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    image = read_rgb(path)
    width, height = image.size
    sizes = ", ".join(str(s) for s in working_sizes(resolution))
    if width != height:
        raise ImageReadError(f"{path}: {width}x{height} is not square; align and crop faces with align_face.py")
    if width > resolution:
        raise ImageReadError(f"{path}: {width}x{width} is larger than the {resolution}x{resolution} model; "
                             f"downscale it (align_face.py -output_size) to one of {sizes}")
    if not divides_by_power_of_two(resolution, width):
        raise ImageReadError(f"{path}: side {width} does not divide {resolution} by a power of two; "
                             f"use one of {sizes} (align_face.py -output_size)")
    return to_tensor(image)


def make_jobs(paths, args, base_seed, resolution):
    """Jobs for every readable input (times -duplicates) and the error messages of the others."""
    jobs, errors = [], []
    for path in paths:
        try:
            image = read_input(path, resolution)
        except ImageReadError as e:
            errors.append(str(e))
            continue
        for k in range(1, args.duplicates + 1):
            name = path.stem if args.duplicates == 1 else f"{path.stem}_{k}"
            jobs.append(Job(path, name, base_seed + k - 1, base_seed, image))
    return jobs, errors


def batches(jobs, batch_size):
    """Consecutive jobs grouped by input size, at most batch_size each (the last may be smaller)."""
    batch = []
    for job in jobs:
        if batch and (len(batch) == batch_size or job.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


# ---- results -------------------------------------------------------------------------------

def result_settings(args):
    """The flags that decide a result: a resumed run reuses a result only if they all match."""
    return {**asdict(search_config(args)), "precision": args.precision, "compile": args.compile}


def already_done(job, out_dir, records, settings):
    output = out_dir / f"{job.name}.png"
    return output.exists() and any(
        r.get("output") == str(output) and r.get("seed") == job.seed and runlog.is_complete(r, settings)
        for r in records)


def base_seed_for(args, records):
    if args.seed is not None:
        return args.seed
    if args.resume and records:
        return records[-1]["base_seed"]
    return random.SystemRandom().randrange(2 ** 31)


def intermediate_writer(out_dir, batch, steps):
    digits = len(str(steps))

    def write(step):
        low = step.best_downscaled()
        for b, job in enumerate(batch):
            folder, name = out_dir / job.name, f"{job.name}_{step.number:0{digits}d}.png"
            save_tensor_image(step.tracker.best_im[b], folder / "HR" / name)
            save_tensor_image(low[b], folder / "LR" / name)
    return write


def progress_reporter(bar):
    """Updates the bar every step; reads loss values back from the device at most twice a second."""
    last = [0.0]

    def report(step):
        bar.update(1)
        if time.monotonic() - last[0] > 0.5 or step.number == bar.total:
            last[0] = time.monotonic()
            bar.set_postfix({name: f"{value[0].item():.4f}" for name, value in step.losses.items()})
    return report


class JobProgress:
    """Rank 0's bar over the searches of the whole job, with each rank's count beside it."""

    def __init__(self, team, total):
        self.team, self.last = team, 0.0
        self.bar = tqdm(total=total, desc=f"searches on {team.size} processes", unit="search", position=0)

    def refresh(self):
        counts = self.team.done_counts()
        self.bar.n = sum(counts)
        self.bar.set_postfix_str(" ".join(f"r{rank}:{count}" for rank, count in enumerate(counts)))

    def on_step(self, step):
        if time.monotonic() - self.last > 1.0:  # one store round trip a second, not one a step
            self.last = time.monotonic()
            self.refresh()


def run_batch(model, batch, config, args, out_dir, job_progress=None, show_steps=True):
    """Search one batch; returns the result and the GIF writer (saved later, after the results)."""
    hooks = []
    names = ", ".join(job.name for job in batch)
    with tqdm(total=config.steps, desc=names[:40], unit="step", leave=False, disable=not show_steps,
              position=1 if job_progress else None) as bar:
        if show_steps:
            hooks.append(progress_reporter(bar))
        if job_progress:
            hooks.append(job_progress.on_step)
        if args.save_intermediate:
            hooks.append(intermediate_writer(out_dir, batch, config.steps))
        gif = None
        if args.gif:
            gif = visuals.SearchGif([out_dir / f"{job.name}_search.gif" for job in batch], config.steps)
            hooks.append(gif)

        def on_step(step):
            for hook in hooks:
                hook(step)

        ref_im = torch.stack([job.image for job in batch])
        result = model.search(ref_im, [job.seed for job in batch], config, on_step)
    return result, gif


def record_results(batch, result, args, device, out_dir, log_path, say=print):
    """Write and log each result, telling `say` about it; returns the log records."""
    records = []
    for b, job in enumerate(batch):
        output = out_dir / f"{job.name}.png"
        save_tensor_image(result.best_im[b], output)
        records.append(runlog.make_record(job, result, b, output, device, args))
        runlog.append(log_path, records[-1])
        losses = " | ".join(f"{k}: {v:.4f}" for k, v in result.best_losses[b].items())
        say(f"{output}  best step {result.best_step[b]} | {losses} | {runlog.status(records[-1])}")
    return records


# ---- main ----------------------------------------------------------------------------------

def load_model(args, device):
    folder = weights_folder(args.network, args.cache_dir, args.keep_pickle)
    synthesis, fit = load_generator(folder)
    if synthesis.resolution != 1024:
        print(f"note: the model in {folder} is {synthesis.resolution}x{synthesis.resolution} (the tiny "
              f"test model, for example), not the 1024x1024 FFHQ face model: results are not faces",
              file=sys.stderr)
    return PULSE.build(synthesis, fit, device, args.precision, fast=not args.no_speedups, compile=args.compile)


def check_flags_against_model(parser, args, model):
    """Flags whose range depends on the loaded model: its noise layers (see PULSE.check_noise_layers)."""
    try:
        model.check_noise_layers(search_config(args))
    except NoiseLayerError as e:
        parser.error(str(e))


def prepare_output_dir(path):
    """Create the output folder and make sure files can be written there, before any search."""
    out_dir = Path(path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        reason = "it is a file" if out_dir.exists() and not out_dir.is_dir() else (e.strerror or str(e))
        raise SetupError(f"cannot write results to -output_dir {out_dir}: {reason}") from None
    remove_stale_temporaries(out_dir)
    return out_dir


def seed_origin(args, records):
    if args.seed is not None:
        return ""
    return " (from the resumed run's log)" if args.resume and records else " (drawn; pass -seed to repeat)"


def plan_resume(jobs, out_dir, records, settings):
    """The jobs still to do, and how many of them redo a result that was made with other flags."""
    todo = [job for job in jobs if not already_done(job, out_dir, records, settings)]
    outputs = {r.get("output") for r in records if not r.get("interrupted")}
    redone = sum(1 for job in todo if str(out_dir / f"{job.name}.png") in outputs
                 and (out_dir / f"{job.name}.png").exists())
    print(f"resuming: {len(jobs) - len(todo)} result(s) already done, {len(todo)} to go"
          + (f", {redone} of them redone because their flags or seed differ" if redone else ""))
    return todo


def searches_to_do(jobs, args, out_dir, records, team):
    """The jobs still to do (with -resume, those without a finished result) as rank 0 sees them.

    So every rank computes the same shares, even where a network file system shows the ranks'
    machines the folder a little differently; and no rank logs a result before rank 0 has read
    the log, as all wait here for its answer."""
    todo = plan_resume(jobs, out_dir, records, result_settings(args)) if args.resume and team.is_main else jobs
    names = {job.name for job in todo}
    needed = team.from_main([job.name in names for job in jobs])
    return [job for job, need in zip(jobs, needed) if need]


def out_of_memory_message(args, device):
    hint = (f"try -batch_size {args.batch_size // 2}" if args.batch_size > 1 else
            "even one search does not fit; try -precision bf16 (or fp16 on a GPU)")
    return f"out of memory on {device} with -batch_size {args.batch_size}; {hint}"


@dataclass
class Process:
    """What a process decides once, for every folder it runs (sweep.py runs many): its place in a
    torchrun job and its device. Starting it also sets the process-wide speed settings."""
    launch: Launch
    device: torch.device


PROCESS_FLAGS = ("threads", "no_speedups")  # set process-wide by start_process: the same in every folder it runs


def start_process(args):
    """The Process for these flags, with its CPU threads set and, on the CPU unless -no_speedups,
    freed memory kept for reuse (neither changes a result); SetupError if it cannot run here."""
    try:
        launch = launch_from_environment()
        device = pick_device(local_rank=launch.local_rank)
    except (TeamError, DeviceError) as e:
        raise SetupError(e) from None
    if device.type == "cpu" and not args.no_speedups:
        speed.keep_freed_memory()
    speed.set_threads(args.threads)
    return Process(launch, device)


def main(argv=None):
    """run.py; returns its exit status (see cli.py)."""
    parser, args = parse_args(argv)
    try:
        process = start_process(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    # In a torchrun job a stop reaches each process twice (from the terminal or Slurm, then from
    # torchrun passing it on): the repeat must not cut the writing of the results short.
    with cli.StopSignals(repeat_leaves=process.launch.world_size == 1) as stop:
        return run_folder(parser, args, process, stop)


def run_folder(parser, args, process, stop):
    """Every search of -input_dir in `process`, which `stop` stops; returns the exit status."""
    try:
        paths = list_inputs(args.input_dir)
        out_dir = prepare_output_dir(args.output_dir)  # before the first collective: no rank writes yet
    except SetupError as e:
        print(process.launch.tag(f"error: {e}"), file=sys.stderr)
        return EXIT_SETUP_FAILED
    with Team(process.launch, process.device) as team:
        return run_job(parser, args, paths, out_dir, team, stop)


def run_job(parser, args, paths, out_dir, team, stop):
    """Every search of the folder once over the team: each process runs its share."""
    device = team.device
    try:
        model = team.main_first(lambda: load_model(args, device))  # a download or fit happens once
    except (SetupError, TeamError, WeightsError, speed.PrecisionError) as e:
        print(team.tag(f"error: {e}"), file=sys.stderr)
        return EXIT_SETUP_FAILED
    except KeyboardInterrupt:
        print(team.tag("interrupted before any search"), file=sys.stderr)
        return stop.exit_status
    check_flags_against_model(parser, args, model)

    log_path = out_dir / runlog.LOG_NAME
    records = runlog.read(log_path) if args.resume and team.is_main else []  # rank 0 decides what is done
    (base_seed,) = team.from_main([base_seed_for(args, records)])  # a drawn seed is rank 0's
    processes = f"{team.size} processes" if team.is_multi else ""
    if team.is_main:
        print(f"seed {base_seed}{seed_origin(args, records)} | device {device} | {args.precision} | "
              f"{torch.get_num_threads()} CPU thread(s){processes and ' | ' + processes}")

    jobs, errors = make_jobs(paths, args, base_seed, model.resolution)
    if team.is_main:  # every rank reads every input; rank 0 tells about the bad ones
        for message in errors:
            print(team.tag(f"error: {message}"), file=sys.stderr)
    todo = searches_to_do(jobs, args, out_dir, records, team)
    # In a job an input's duplicates may run on several ranks: rank 0 draws all strips at the end.
    single_strips = args.strip and not team.is_multi
    strips = visuals.StripWriter(jobs, todo, records, out_dir, args.hr_dir) if single_strips else None

    config = search_config(args)
    job_progress = JobProgress(team, len(todo)) if team.is_multi and team.is_main else None
    say = (tqdm.write if job_progress else print) if team.is_main else (lambda line: None)
    try:
        for batch in batches(team.share(todo), args.batch_size):
            try:
                result, gif = run_batch(model, batch, config, args, out_dir, job_progress, show_steps=team.is_main)
            except torch.OutOfMemoryError:
                print(team.tag(f"error: {out_of_memory_message(args, device)}"), file=sys.stderr)
                team.finish(job_progress and job_progress.refresh)  # the other ranks' searches go on to their end
                return EXIT_SETUP_FAILED
            # The results first, whatever signal comes meanwhile; pictures are extras after them.
            with stop.deferred():
                recorded = record_results(batch, result, args, device, out_dir, log_path, say)
            team.count_done(len(batch))
            if stop.requested:
                raise KeyboardInterrupt
            if gif:
                gif.save()
            if strips:
                strips.add(recorded)
        team.finish(job_progress and job_progress.refresh)
    except KeyboardInterrupt:
        print(team.tag("interrupted: every finished result and the best image so far of the search that was "
                       "running are written and logged"), file=sys.stderr)
        return stop.exit_status
    if team.is_main:
        if job_progress:
            job_progress.bar.close()
            if args.strip:  # every rank's results are logged now
                visuals.StripWriter(jobs, [], runlog.read(log_path), out_dir, args.hr_dir)
        print(f"{len(paths)} input(s), {sum(team.done_counts())} search(es) run{processes and ' on ' + processes}, "
              f"{len(errors)} input(s) failed")
    return EXIT_INPUTS_FAILED if errors and team.is_main else 0


if __name__ == "__main__":
    sys.exit(main())
