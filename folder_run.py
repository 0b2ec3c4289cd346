"""A folder run: every input of a folder searched, each result written and logged as it comes (run.py,
and sweep.py for each of its combinations; the flags and options: run_options.py).

Every input gets its best high-resolution image written as `<output_dir>/<stem>.png` (or
`<stem>_<k>.png` with -duplicates), even when the search did not reach eps (then it is flagged
NOT CONVERGED), and one line in `<output_dir>/pulse_log.jsonl`; -strip and -gif add pictures.
In a torchrun job each process runs its share (distributed.py).
"""
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from device import pick_device
from errors import PulseError
from PULSE import load
from runkit import cpu_threads, exits, inputs, runlog, speed, visuals
from runkit.distributed import Launch, Team, launch_from_environment
from runkit.exits import EXIT_INPUTS_FAILED, EXIT_SETUP_FAILED, SetupError
from runkit.files import make_folders, remove_empty_folders, remove_stale_temporaries, stem_clashes
from runkit.images import IMAGE_SUFFIXES, ImageReadError
from runkit.image_tensors import save_tensor_image
from search import search_jobs


# ---- inputs --------------------------------------------------------------------------------

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


def read_inputs(paths, resolution):
    """(the inputs.Input of each usable input, error messages of the others)."""
    named, errors = [], []
    for path in paths:
        try:
            named.append(inputs.path_input(path, resolution))
        except ImageReadError as e:
            errors.append(str(e))
    return named, errors


# ---- results -------------------------------------------------------------------------------

def already_done(job, records, settings):
    return job.output.exists() and any(
        r.output == str(job.output) and r.first_seed == job.seed and r.is_complete(settings) for r in records)


def base_seed_for(options, records):
    if options.jobs.seed is not None:
        return options.jobs.seed
    if options.folder.resume and records:
        return records[-1].base_seed
    return inputs.draw_seed()


def intermediate_writer(out_dir, config):
    """Writes each row's best image so far and its downscale, named by its step (and try, with -tries)."""
    digits = len(str(config.last_step))

    def write(step):
        low = step.best_downscaled()
        for b, (row, best) in enumerate(zip(step.rows, step.best_im)):
            attempt = f"_try{row.attempt}" if config.tries > 1 else ""
            name = f"{row.name}{attempt}_{row.step:0{digits}d}.png"
            save_tensor_image(best, out_dir / row.name / "HR" / name)
            save_tensor_image(low[b], out_dir / row.name / "LR" / name)
    return write


def progress_reporter(bar):
    """Shows the first row's search: its step, its name (and try), its time from its own first step;
    reads loss values back from the device at most twice a second."""
    last, shown = 0.0, None

    def report(step):
        nonlocal last, shown
        if (step.rows[0].name, step.rows[0].attempt) != shown:  # another search: its own clock
            shown = (step.rows[0].name, step.rows[0].attempt)
            bar.reset()
        bar.n = step.number
        if time.monotonic() - last > 0.5 or step.number == bar.total:
            last = time.monotonic()
            bar.set_description(", ".join(map(search_label, step.rows))[:40], refresh=False)
            bar.set_postfix({name: f"{value[0].item():.4f}" for name, value in step.losses.items()})
    return report


def search_label(row):
    return row.name + (f" try {row.attempt}" if row.attempt > 1 else "")


class JobProgress:
    """Rank 0's bar over the searches of the whole job, with each rank's count beside it."""

    def __init__(self, team, total):
        self.team, self.last = team, 0.0
        self.bar = tqdm(total=total, desc=f"results on {team.size} processes", unit="result", position=0,
                        disable=None)  # None: no bar where stderr is not a terminal (a file's endless line)

    def refresh(self):
        counts = self.team.counts("results")
        self.bar.n = sum(counts)
        self.bar.set_postfix_str(" ".join(f"r{rank}:{count}" for rank, count in enumerate(counts)))

    def on_step(self, step):
        if time.monotonic() - self.last > 1.0:  # one store round trip a second, not one a step
            self.last = time.monotonic()
            self.refresh()


def step_hooks(options, out_dir, bar, job_progress, gif):
    """The on_step of a run: the progress bars, -save_intermediate and -gif, each as asked."""
    hooks = [progress_reporter(bar)] if bar else []
    if job_progress:
        hooks.append(job_progress.on_step)
    if options.folder.save_intermediate:
        hooks.append(intermediate_writer(out_dir, options.search))
    if gif:
        hooks.append(gif)

    def on_step(step):
        for hook in hooks:
            hook(step)
    return on_step


def record_result(job, result, options, device, log_path, say=print):
    """Write and log a result, telling `say` about it; returns its log record."""
    save_tensor_image(result.tensor, job.output)
    record = runlog.Record.of(result, job.output, device, job.base_seed, options.flags())
    runlog.append(log_path, record)
    losses = " | ".join(f"{k}: {v:.4f}" for k, v in result.losses.items())
    say(f"{job.output}  best step {result.best_step} | {losses} | {result.status}{result.note}")
    return record


# ---- main ----------------------------------------------------------------------------------

def prepare_output_dir(path):
    """Create the output folder and make sure files can be written there, before any search.
    Returns it and the folders this made (removed again, if still empty, when setup fails)."""
    out_dir, made = Path(path), []
    try:
        made = make_folders(out_dir)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        remove_empty_folders(made)
        reason = "it is a file" if out_dir.exists() and not out_dir.is_dir() else (e.strerror or str(e))
        raise SetupError(f"cannot write results to -output_dir {out_dir}: {reason}") from None
    remove_stale_temporaries(out_dir)
    return out_dir, made


def seed_origin(options, records):
    if options.jobs.seed is not None:
        return ""
    return " (from the resumed run's log)" if options.folder.resume and records else " (drawn; pass -seed to repeat)"


def plan_resume(jobs, records, settings):
    """The jobs still to do, and how many of them redo a result that was made with other flags."""
    todo = [job for job in jobs if not already_done(job, records, settings)]
    outputs = {r.output for r in records if not r.interrupted}
    redone = sum(1 for job in todo if str(job.output) in outputs and job.output.exists())
    print(f"resuming: {len(jobs) - len(todo)} result(s) already done, {len(todo)} to go"
          + (f", {redone} of them redone because their flags or seed differ" if redone else ""))
    return todo


def searches_to_do(jobs, folder, settings, records, team):
    """The jobs still to do (with -resume, those without a finished result) as rank 0 sees them.

    So every rank computes the same shares, even where a network file system shows the ranks'
    machines the folder a little differently; and no rank logs a result before rank 0 has read
    the log, as all wait here for its answer."""
    todo = plan_resume(jobs, records, settings) if folder.resume and team.is_main else jobs
    names = {job.name for job in todo}
    needed = team.from_main([job.name in names for job in jobs])
    return [job for job, need in zip(jobs, needed) if need]


def out_of_memory_message(batch_size, device):
    hint = (f"try -batch_size {batch_size // 2}" if batch_size > 1 else
            "even one search does not fit; try -precision bf16 (or fp16 on a GPU)")
    return f"out of memory on {device} with -batch_size {batch_size}; {hint}"


@dataclass
class Process:
    """What a process decides once, for every folder it runs (sweep.py runs many): its place in a
    torchrun job and its device. Starting it also sets the process-wide speed settings."""
    launch: Launch
    device: torch.device


def start_process(threads=None, speedups=True):
    """The Process for these settings, with its CPU threads set and, on the CPU with speedups,
    freed memory kept for reuse (neither changes a result); TeamError or DeviceError if it cannot run here."""
    launch = launch_from_environment()
    device = pick_device(local_rank=launch.local_rank)
    if device.type == "cpu" and speedups:
        speed.keep_freed_memory()
    cpu_threads.set_threads(threads)
    return Process(launch, device)


def run_folder(options, process, stop):
    """Every search of the input folder in `process`, which `stop` stops; returns the exit status.
    A run that writes nothing leaves no output folder behind that it made."""
    try:
        paths = list_inputs(options.folder.input_dir)
        out_dir, made = prepare_output_dir(options.folder.output_dir)  # before the first collective
    except PulseError as e:
        return exits.report_failure(e, "run.py", process.launch.tag)
    try:
        with Team(process.launch, process.device) as team:
            return run_job(options, paths, out_dir, team, stop)
    finally:
        remove_empty_folders(made)


@dataclass
class Tally:
    """What a process has written, for its last words."""
    finished: int = 0       # results of searches that ran to the end
    stopped: int = 0        # best-so-far results of searches a stop cut short

    def interrupted_message(self):
        parts = [f"{self.finished} finished result(s)" if self.finished else "",
                 f"the best image so far of {self.stopped} stopped search(es)" if self.stopped else ""]
        written = " and ".join(part for part in parts if part)
        if not written:
            return "interrupted: nothing was written"
        return f"interrupted: {written} written and logged; -resume finishes the rest"


def run_job(options, paths, out_dir, team, stop):
    """Every search of the folder once over the team: each process runs its share."""
    try:
        model = team.main_first(lambda: load(device=team.device, **asdict(options.model)))  # a download happens once
        model.check_noise_layers(options.search)  # a flag this model cannot take: before the inputs are read
    except PulseError as e:
        return exits.report_failure(e, "run.py", team.tag)
    except KeyboardInterrupt:
        print(team.tag("interrupted before any search: nothing was written"), file=sys.stderr)
        return stop.exit_status
    folder = options.folder
    log_path = out_dir / runlog.LOG_NAME
    records = runlog.read(log_path) if folder.resume and team.is_main else []  # rank 0 decides what is done
    (base_seed,) = team.from_main([base_seed_for(options, records)])  # a drawn seed is rank 0's
    processes = f"{team.size} processes" if team.is_multi else ""
    if team.is_main:
        cpu_threads.follow_free_cores()  # the count shown is what the first search starts with, on a busy machine too
        print(f"seed {base_seed}{seed_origin(options, records)} | device {team.device} | {model.precision} | "
              f"{torch.get_num_threads()} CPU thread(s){processes and ' | ' + processes}")

    named, errors = read_inputs(paths, model.resolution)
    if team.is_main:  # every rank reads every input; rank 0 tells about the bad ones
        for message in errors:
            print(team.tag(f"error: {message}"), file=sys.stderr)
    jobs = inputs.make_jobs(named, base_seed, options.jobs.duplicates, out_dir)
    todo = searches_to_do(jobs, folder, options.result_settings(), records, team)
    status = search_share(model, options, jobs, todo, records, out_dir, team, stop)
    if status is not None:
        return status
    if team.is_main:
        if folder.strip and team.is_multi:  # every rank's results are logged now
            visuals.StripWriter(jobs, [], runlog.read(log_path), out_dir, folder.hr_dir)
        print(f"{len(paths)} input(s), {sum(team.counts('results'))} result(s) from {sum(team.counts('searches'))} "
              f"search(es){processes and ' on ' + processes}, {len(errors)} input(s) failed")
    return EXIT_INPUTS_FAILED if errors and team.is_main else 0


def search_share(model, options, jobs, todo, records, out_dir, team, stop):
    """This process's share of the searches, each result written and logged as it comes; None when
    all are done, else the exit status (a stop, or out of memory)."""
    folder, tally = options.folder, Tally()
    # In a job an input's duplicates may run on several ranks: rank 0 draws all strips at the end.
    strips = visuals.StripWriter(jobs, todo, records, out_dir, folder.hr_dir) if folder.strip and not team.is_multi else None
    job_progress = JobProgress(team, len(todo)) if team.is_multi and team.is_main else None
    say = (tqdm.write if job_progress else print) if team.is_main else (lambda line: None)
    gif = visuals.SearchGif(options.search.last_step) if folder.gif else None
    share, written = team.share(todo), set()

    def keep(job, result):
        # The result first, whatever signal comes meanwhile; pictures are extras after it.
        with stop.deferred():
            recorded = record_result(job, result, options, team.device, out_dir / runlog.LOG_NAME, say)
        written.add(job.name)
        team.count("results", 1)
        team.count("searches", len(result.tries))  # with -tries, a result's searches
        if result.interrupted:  # a stop is under way: the searches' best so far come one after another
            tally.stopped += 1
            return
        tally.finished += 1
        if stop.requested:
            raise KeyboardInterrupt
        if gif:
            gif.save(job.output.with_name(f"{job.name}_search.gif"), result)
        if strips:
            strips.add([recorded])

    try:
        # No bar without a search, nor where stderr is not a terminal (tqdm's disable=None): a file would get
        # every refresh on one endless line.
        bar_off = None if team.is_main and share else True
        with tqdm(total=options.search.last_step, unit="step", leave=False, disable=bar_off,
                  position=1 if job_progress else None) as bar:
            on_step = step_hooks(options, out_dir, bar if team.is_main else None, job_progress, gif)
            try:
                search_jobs(model, share, options.search, keep, options.jobs.batch_size, on_step)
            except torch.OutOfMemoryError:
                left = [job.name for job in share if job.name not in written]
                print(team.tag(f"error: {out_of_memory_message(options.jobs.batch_size, team.device)}; not searched: "
                               f"{', '.join(left)}"), file=sys.stderr)
                team.finish(job_progress and job_progress.refresh)  # the other ranks' searches go on to their end
                return EXIT_INPUTS_FAILED if tally.finished else EXIT_SETUP_FAILED
        team.finish(job_progress and job_progress.refresh)
    except KeyboardInterrupt:
        print(team.tag(tally.interrupted_message()), file=sys.stderr)
        return stop.exit_status
    if job_progress:
        job_progress.bar.close()
    return None
