"""The searches a page runs: each chosen face's duplicates through the API (model.upsample), their
files written as run.py writes them, and a Snapshot of the running search now and then."""
import importlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

import PULSE
from runkit import runlog, visuals
from runkit.files import save_image
from runkit.image_tensors import to_pil
from settings import result_settings
from webpage.search_thread import on_a_passing_thread
from webpage.uploads import Face

REFRESH_SECONDS = 0.5            # the live image and curve are refreshed at most this often


@dataclass
class Snapshot:
    """What the live panel shows during a search."""
    search: int                # 1-based, of `searches`
    searches: int
    label: str
    step: int
    steps: int
    best: Image.Image          # the best image so far, at most PANEL x PANEL (visuals.at_most_panel)
    l2: list                   # L2 at every step so far
    eps: float


@dataclass
class FaceResults:
    """What the page shows of a face once its searches are done: their log records, its strip."""
    face: Face
    records: list = field(default_factory=list)   # one runlog.Record per duplicate that ran
    strip: Image.Image = None

    @property
    def interrupted(self):
        return any(record.interrupted for record in self.records)


def load_model(**options):
    """PULSE.load(**options), on a passing thread (see search_thread.PassingThread), with what the first
    search would import on the way: the first optimizer imports torch._dynamo, 1.7 s on 2 cores that
    the first page's Run would wait for (run.py's searches start after it too)."""
    def load():
        importlib.import_module("torch._dynamo")
        return PULSE.load(**options)
    return on_a_passing_thread(load)


def searches(model, faces, settings, folder, stop, report=lambda snapshot: None):
    """Search every face `settings.jobs.duplicates` times, each up to `settings.search.tries` tries, writing each
    result's PNG, run-log line and search GIF into `folder`; returns one FaceResults per face searched.

    Seeds are run.py's: duplicate k of a face uses seed + k - 1, its try t seed + k - 1 + (t - 1) *
    duplicates. `report(Snapshot)` is called every REFRESH_SECONDS during a search; setting `stop`
    ends the search with its best so far and starts no other.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = len(faces) * settings.jobs.duplicates
    searched = []
    for face in faces:
        done = FaceResults(face)
        searched.append(done)
        before = (len(searched) - 1) * settings.jobs.duplicates
        done.records = search_face(model, face, settings, folder,
                                   step_hook(face, settings, before, count, stop, report))
        done.strip = visuals.draw_strip(visuals.input_panels(face.low) + [
            panel for record in done.records for panel in visuals.result_panels(record, face.low.width)])
        if done.interrupted:
            break
    return searched


def search_face(model, face, settings, folder, on_step):
    """The face's duplicates, as model.upsample(..., duplicates=N) finds them; writes <name>.png,
    <name>_search.gif and a line of the run log in `folder` for each, and returns those lines' records."""
    gif = visuals.SearchGif(settings.search.last_step)

    def film_and_report(step):
        gif(step)
        on_step(step)
    results = model.upsample(PULSE.Input(face.low, face.name, face.label), on_step=film_and_report,
                             **asdict(settings.jobs), **asdict(settings.search))
    records = []
    log_args = {**asdict(settings.jobs), **result_settings(settings.search, model.precision, model.compiled)}
    for result in results:
        output = folder / f"{result.name}.png"
        save_image(result.image, output)
        records.append(runlog.Record.of(result, output, model.device, settings.jobs.seed, log_args))
        runlog.append(folder / runlog.LOG_NAME, records[-1])
        gif.save(folder / f"{result.name}_search.gif", result)
    return records


def step_hook(face, settings, before, count, stop, report):
    """The on_step of a face's searches: reports a Snapshot now and then (`before`: the searches of
    the faces before it, `count`: of all faces), and ends the search when `stop` is set."""
    l2, last_shown, search = [], [0.0], settings.search

    def on_step(step):
        if step.number == 1:  # a new search: another duplicate, or another try
            l2.clear()
        l2.append(step.losses["L2"][0].item())
        if time.monotonic() - last_shown[0] > REFRESH_SECONDS or step.number == search.last_step:
            last_shown[0] = time.monotonic()
            row = step.rows[0]
            tries = f", try {row.attempt} of {search.tries}" if search.tries > 1 else ""
            report(Snapshot(before + row.duplicate, count, f"{face.label}, seed {row.seed}{tries}", step.number,
                            search.last_step, to_pil(visuals.at_most_panel(step.best_im[:1])[0]), list(l2),
                            search.eps))
        if stop.is_set():
            raise KeyboardInterrupt  # the API ends the search with the best so far, as on Ctrl-C
    return on_step
