#!/usr/bin/env python3
"""A local web page over PULSE: photos in, the faces found, the search live, results to keep.

    pip install -r requirements-app.txt
    python app.py -cache_dir tests/fixtures/tiny_model -port 7861

The generator is chosen here, when the server starts, never from the page. The page is built
with Gradio on the Python API (PULSE.load, model.upsample); photos are aligned by
ffhq_alignment.py, as align_face.py aligns them, and the pictures are visuals.py's. Gradio is imported where it is
used, after main() has pointed GRADIO_TEMP_DIR at the server's temporary folder: Gradio reads it
when it is imported.
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import importlib.util
import json
import math
import os
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from runkit import cpu_threads, exits, flags, inputs, messages, quiet_stop, runlog, visuals
import PULSE
from settings import JobSettings, ModelOptions, RECIPES, SearchConfig, recipe_config, result_settings
from bicubic import divides_by_power_of_two
from errors import PulseError
from runkit.flags import positive_int
from runkit.files import save_image
from runkit.images import ImageReadError, read_rgb
from runkit.image_tensors import to_pil

ALIGN_IMPORT_ERROR = None
try:
    import ffhq_alignment
except ImportError as e:  # dlib missing: photos cannot be aligned, aligned faces still work
    ffhq_alignment, ALIGN_IMPORT_ERROR = None, e

MAX_UPLOAD_MB = 20
MAX_PIXELS = 40_000_000          # a bigger photo is refused before it is decoded
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP")
MAX_ALIGNED_SIDE = 128           # a square upload this small is taken as an aligned face, not a photo
FACE_SIZES = (8, 16, 32, 64, 128)
DEFAULT_FACE_SIZE = 32           # align_face.py's -output_size default
REFRESH_SECONDS = 0.5            # the live image and curve are refreshed at most this often
PLOT_POINTS = 500                # the L2 curve sent to the page has at most about this many points
PAGE_GRACE_SECONDS = 5           # how long a stopping server waits for a stopped search's page to get its results
DELIVERY_SECONDS = 2             # then how long it keeps serving, for those pages to load the pictures

ABOUT = """
# PULSE: a face that fits the pixels
Drop photos (JPEG, PNG or WebP): every face found is aligned the way FFHQ was built and shrunk
to a small input, as `align_face.py` does. Already aligned small faces (square, up to
{max_side}x{max_side}) are taken as they are. Pick the faces, set the search and run it.

PULSE **invents** a plausible face whose downscale matches the small input; it does **not**
recover the real person. Many different faces downscale to the same pixels (try duplicates), and
what PULSE finds reflects the generator's training data and its biases. Do not use it to
identify anyone.

One search runs at a time on this machine: while someone else's runs, yours waits in the queue
and the status line shows your place. A setting the search cannot take is named under the Run
button, and nothing runs. Uploads up to {max_mb} MB and {max_mp} megapixels; they and the results
are kept in a temporary folder that is removed when the server stops (a search running then ends
with its best image so far, shown here: download what you want to keep).
""".format(max_side=MAX_ALIGNED_SIDE, max_mb=MAX_UPLOAD_MB, max_mp=MAX_PIXELS // 1_000_000)


# ---- flags -----------------------------------------------------------------------------------

EXIT_STATUSES = ("exit status: 0 the server closed on its own; 2 bad flags; 3 setup failed (the page's extra, "
                 "device, weights, port), nothing was served; 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM, "
                 "129 SIGHUP): a running search ends with its best image so far, shown on its page, and the "
                 "temporary folder of uploads and results is removed")


def build_parser():
    p = flags.parser("A local web page over PULSE: drop photos, watch the search, download the results.",
                   epilog=EXIT_STATUSES)
    p.add_argument("-host", "--host", default="127.0.0.1",
                   help="address to listen on; the default serves this machine only")
    p.add_argument("-port", "--port", type=positive_int, default=7860, help="port of the page")
    flags.add_options(p.add_argument_group("the generator, chosen here and never from the page (as run.py)"),
                    ModelOptions)
    flags.add_threads_flag(p)
    return p


# ---- uploads -> faces ------------------------------------------------------------------------

class UploadError(PulseError, ValueError):
    """An upload the page cannot use; the message names it and says why."""


@dataclass
class Face:
    """One face to search: an aligned upload, or a face found in a photo."""
    name: str                  # file-name stem of its results, unique among the faces of a page
    label: str                 # shown on the page
    low: Image.Image           # the small input PULSE searches from
    crop: Image.Image = None   # the 1024x1024 aligned crop it came from (None for an aligned upload)


def load_aligner(cache_dir):
    """(ffhq_alignment's FaceAligner, None), or (None, why photos cannot be aligned)."""
    if ffhq_alignment is None:
        return None, f"photos cannot be aligned here ({ALIGN_IMPORT_ERROR}); aligned faces still work"
    try:
        return ffhq_alignment.FaceAligner(cache_dir), None
    except (exits.SetupError, RuntimeError) as e:
        return None, f"photos cannot be aligned here ({e}); aligned faces still work"


def check_upload(path):
    """The upload's image format and size; UploadError when it is not a photo the page takes."""
    megabytes = path.stat().st_size / 2 ** 20
    if megabytes > MAX_UPLOAD_MB:
        raise UploadError(f"{path.name}: {megabytes:.0f} MB is more than the {MAX_UPLOAD_MB} MB this page takes")
    try:
        with warnings.catch_warnings():  # Pillow's warning of a huge image: the size is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                image_format, (width, height) = im.format, im.size
    except Image.DecompressionBombError:  # over twice Pillow's own limit, which is above ours
        raise UploadError(f"{path.name}: far more than {MAX_PIXELS // 1_000_000} megapixels; "
                          f"shrink the photo first") from None
    except (UnidentifiedImageError, OSError):
        raise UploadError(f"{path.name}: not an image this page can read (JPEG, PNG or WebP)") from None
    if image_format not in PHOTO_FORMATS:
        raise UploadError(f"{path.name}: a {image_format} image; this page takes JPEG, PNG or WebP")
    if width * height > MAX_PIXELS:
        raise UploadError(f"{path.name}: {width}x{height} is more than {MAX_PIXELS // 1_000_000} megapixels; "
                          f"shrink the photo first")
    return width, height


def aligned_face(path, resolution):
    """A small square upload as it is; ImageReadError unless PULSE can search from it."""
    low = read_rgb(path)
    inputs.check_size(path.name, *low.size, resolution)
    return low


def faces_in_upload(path, aligner, face_size, resolution):
    """(name stem, label, small face, crop or None) for every face of one upload; UploadError if none."""
    width, height = check_upload(path)
    try:
        if max(width, height) <= MAX_ALIGNED_SIDE:
            return [(path.stem, f"{path.name} (aligned face)", aligned_face(path, resolution), None)]
        if aligner is None:
            raise UploadError(f"{path.name}: a photo, and photos cannot be aligned here; upload aligned faces "
                              f"(square, at most {MAX_ALIGNED_SIDE}x{MAX_ALIGNED_SIDE})")
        found = aligner.faces(path, face_size)
    except ImageReadError as e:  # named by the upload's name, not by its temporary path
        raise UploadError(str(e).replace(str(path), path.name)) from None
    if not found:
        raise UploadError(f"{path.name}: no face found")
    return [(f"{path.stem}_{i}", f"{path.name}, face {i}", low, crop) for i, (crop, low) in enumerate(found)]


def faces_from_uploads(paths, aligner, face_size, resolution):
    """Every face of every upload, and one message per upload that gave none (the others go on)."""
    faces, problems, names = [], [], set()
    for path in map(Path, paths):
        try:
            found = faces_in_upload(path, aligner, face_size, resolution)
        except UploadError as e:
            problems.append(str(e))
            continue
        for stem, label, low, crop in found:
            name = unique_name(stem, names)
            names.add(name)
            faces.append(Face(name, label, low, crop))
    return faces, problems


def unique_name(stem, taken):
    """`stem`, or `stem-2`, `stem-3`, ... when two uploads share a name."""
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    return name


def face_picture(face):
    """What the page shows of a face: the aligned crop (if any) beside the small input."""
    side = f"{face.low.width}x{face.low.height}"
    panels = [visuals.Panel(face.low, [face.label, f"{side} input"], resample=Image.Resampling.NEAREST)]
    if face.crop is not None:
        panels.insert(0, visuals.Panel(face.crop, [face.label, "1024x1024 aligned crop"]))
    return visuals.draw_strip(panels)


def stacked(pictures):
    """The pictures one under the other on white, as one picture (None when there are none)."""
    if not pictures:
        return None
    stack = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures)), "white")
    top = 0
    for picture in pictures:
        stack.paste(picture, (0, top))
        top += picture.height
    return stack


# ---- the search ------------------------------------------------------------------------------

# The page's setting boxes by name, in the order on_search takes their values: the seed and duplicates
# of the page's loop (JobSettings's; a page searches one at a time), then every search setting as
# SearchConfig declares it.
BOXES = ("seed", "duplicates", *(f.name for f in fields(SearchConfig)))
# The boxes some recipe sets: choosing a recipe shows its values there (on_recipe), and leaves the others.
RECIPE_BOXES = tuple(name for name in BOXES if any(name in recipe for recipe in RECIPES.values()))
IN_VIEW = ("seed", "recipe", "steps", "duplicates", "tries", "eps", "learning_rate")  # the other boxes fold away
SEED_HELP = "duplicate k uses seed + k - 1, its try t seed + k - 1 + (t - 1) * duplicates"


@dataclass
class Settings:
    """What the page's boxes hold: the seed and duplicates of each face's searches (the seed box
    starts at 0), and the search settings (run.py's names and defaults)."""
    jobs: JobSettings = field(default_factory=lambda: JobSettings(seed=0))
    search: SearchConfig = field(default_factory=SearchConfig)

    @classmethod
    def of(cls, seed=0, duplicates=1, **search):
        """The settings of the boxes' values by name: the recipe's, with the settings given over them;
        ValueError naming the first one the search cannot take. An empty box is None; an empty text box
        of a setting whose default is None, that default."""
        jobs = JobSettings(seed=seed, duplicates=duplicates)
        defaults = {f.name: f.default for f in fields(SearchConfig)}
        search = {name: (value.strip() or None) if isinstance(value, str) and defaults.get(name) is None else value
                  for name, value in search.items()}
        return cls(jobs, recipe_config(**search))

    def boxes(self):
        """{box name: value}: what the page's boxes show for these settings."""
        return {"seed": self.jobs.seed, "duplicates": self.jobs.duplicates, **asdict(self.search)}


@dataclass
class Snapshot:
    """What the live panel shows during a search."""
    search: int                # 1-based, of `searches`
    searches: int
    label: str
    step: int
    steps: int
    best: Image.Image          # the best image so far
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
                            search.last_step, to_pil(step.best_im[0]), list(l2), search.eps))
        if stop.is_set():
            raise KeyboardInterrupt  # the API ends the search with the best so far, as on Ctrl-C
    return on_step


def l2_chart(snapshot):
    """L2 at every step against eps, on a log scale: a Vega-Lite chart that the browser draws (Gradio's
    altair plot type takes the chart's JSON; altair itself is not needed). The server only writes
    the JSON, so drawing costs the search nothing; a long search's curve is thinned to about
    PLOT_POINTS points."""
    import gradio as gr
    stride = math.ceil(len(snapshot.l2) / PLOT_POINTS)
    shown = sorted({*range(0, len(snapshot.l2), stride), len(snapshot.l2) - 1})
    layers = {"L2": {"mark": {"type": "line", "clip": True},
                     "data": {"values": [{"step": i + 1, "L2": snapshot.l2[i]} for i in shown]},
                     "encoding": {"x": {"field": "step", "type": "quantitative", "title": "step",
                                        "scale": {"domain": [1, max(snapshot.steps, 2)]}},
                                  "y": {"field": "L2", "type": "quantitative", "title": "L2",
                                        "scale": {"type": "log"}}}}}
    if snapshot.eps > 0:  # 0 has no place on a log scale
        layers[f"eps = {snapshot.eps:g}"] = {"mark": {"type": "rule", "strokeDash": [6, 4]},
                                             "encoding": {"y": {"datum": snapshot.eps}}}
    colours = {"domain": list(layers), "range": ["#1f77b4", "#d62728"][:len(layers)]}
    for name, layer in layers.items():  # one legend: each layer's colour by its name
        layer["encoding"]["color"] = {"datum": name, "scale": colours, "legend": {"title": None, "orient": "top-right"}}
    chart = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "layer": list(layers.values()),
             "width": 280, "height": 250, "autosize": {"type": "fit", "contains": "padding"},  # axes included
             "padding": {"top": 36, "left": 5, "right": 10, "bottom": 5}}  # the top clear of Gradio's label
    return gr.components.plot.PlotData(type="altair", plot=json.dumps(chart))


def results_summary(face_results):
    """One line per result, NOT CONVERGED as plainly as run.py says it."""
    lines = []
    for record in face_results.records:
        status = record.status if record.converged else (
            f"**{record.status}** (try the converge recipe, more steps, more tries, another seed, or a larger eps)")
        lines.append(f"- {Path(record.output).name}: {status}; seed {record.seed}, best step {record.best_step}, "
                     f"L2 {record.losses['L2']:.4g}{record.note}")
    return "\n".join(lines)


# ---- the page --------------------------------------------------------------------------------

class Page:
    """The Gradio page: its handlers, and the layout that wires them."""

    def __init__(self, model, aligner, aligner_problem, workdir):
        self.model, self.aligner, self.aligner_problem = model, aligner, aligner_problem
        self.workdir = Path(workdir)
        # session -> its Running search, from Run until its page has had the last view, in the order they
        # came: the first runs, the others wait for their turn (one search at a time)
        self.running = {}
        self.threads = []  # every Running whose thread may not have ended (its page may be gone)
        self.lock = threading.Lock()  # guards these and `closing`
        self.turn = threading.Condition(self.lock)  # notified when the line moves, or the server stops
        self.closing = False  # the server is stopping: no new search starts

    def face_sizes(self):
        return [size for size in FACE_SIZES if divides_by_power_of_two(self.model.resolution, size)
                and size < self.model.resolution]

    def notices(self):
        lines = [f"**Note:** {self.model.note}."] if self.model.note else []
        if self.aligner_problem:
            lines.append(f"**Note:** {self.aligner_problem}.")
        return "\n\n".join(lines)

    def on_upload(self, paths, face_size):
        """Uploads -> (faces, their picture, face choices, message)."""
        import gradio as gr
        faces, problems = faces_from_uploads(paths or [], self.aligner, int(face_size), self.model.resolution)
        choices = [(face.label, i) for i, face in enumerate(faces)]
        message = "\n".join(f"- **{p}**" for p in problems)
        if paths and not faces:
            message += "\n\nNo face to search yet."
        return (faces, stacked([face_picture(face) for face in faces]),
                gr.update(choices=choices, value=[i for _, i in choices]), message)

    def on_search(self, faces, chosen, *values, request=None):
        """Run the chosen faces; yields (live image, status, L2 plot, strips, summary, files) as it goes.
        A user's mistake is said in the status line alone, in place of the last message."""
        picked = [faces[i] for i in sorted(chosen or [])]
        if not picked:
            yield status_only("Drop a photo or an aligned face first, and tick at least one face.")
            return
        try:
            settings = Settings.of(**dict(zip(BOXES, values)))
        except ValueError as e:
            yield status_only(str(e))
            return
        folder = Path(tempfile.mkdtemp(prefix="search_", dir=self.workdir))
        running = self.join(session_of(request))
        if running is None:
            yield status_only("The server is stopping; no new search starts.")
            return
        try:
            if not (yield from self.wait_for_turn(running)):
                yield status_only("The server is stopping; no new search starts." if self.closing
                                  else "Stopped before it started.")
                return
            try:
                searched = yield from running.run(
                    lambda report: searches(self.model, picked, settings, folder, running.stop, report), live_view)
            except ValueError as e:  # a setting this model cannot take (noise layers): raised before any search
                yield status_only(str(e))
                return
            yield final_view(searched, folder, server_stopping=self.closing)
        finally:  # after the last view was handed to the page: end_searches waits for it
            running.stop.set()  # ends the search if the page went away
            self.finish(session_of(request))

    def join(self, session):
        """A new Running search of the session, last in line; None when the server is stopping."""
        with self.lock:
            if self.closing:
                return None
            running = self.running[session] = Running()
            return running

    def wait_for_turn(self, running):
        """Wait while other pages' searches are ahead in line, yielding the status line (its place, how far
        the running search is) when it changes. Whether its turn came: False when Stop was pressed or
        the server began stopping first."""
        shown = None
        while True:
            with self.lock:
                self.turn.wait_for(lambda: self.closing or running.stop.is_set() or self.line()[0] is running,
                                   REFRESH_SECONDS)
                if self.closing or running.stop.is_set():
                    return False
                line = self.line()
                if line[0] is running:
                    self.threads = [other for other in self.threads if not other.ended.is_set()] + [running]
                    return True
                status = waiting_status(line.index(running), line[0].latest.peek())
            if status != shown:
                shown = status
                yield status_view(status)

    def line(self):
        """The Running searches in the order they came: the first runs, the others wait."""
        return list(self.running.values())

    def finish(self, session):
        with self.lock:
            self.running.pop(session)
            self.turn.notify_all()

    def on_stop(self, request=None):
        with self.lock:
            running = self.running.get(session_of(request))
            if running is not None:
                running.stop.set()
                self.turn.notify_all()

    def end_searches(self, grace=PAGE_GRACE_SECONDS, delivery=DELIVERY_SECONDS):
        """Stop every running search and wait until it has ended (a search keeps its best image so far,
        written where the page keeps results, as on Stop); its page gets that last view if it comes
        within `grace` seconds, and `delivery` seconds more to load its pictures (closing Gradio's
        queue drops the messages it has not sent). The searches waiting in line leave it; no search
        starts after this. Whether any search was running."""
        with self.lock:
            self.closing = True
            self.turn.notify_all()  # the searches waiting in line leave it
            running = [search for search in self.threads if not search.ended.is_set()]
        for search in running:
            search.stop.set()
        for search in running:  # a search ends at its next step; none may be inside torch when Python exits
            search.ended.wait()
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if running:
            time.sleep(delivery)
        return bool(running)

    def blocks(self):
        import gradio as gr
        defaults = Settings().boxes()
        with gr.Blocks(title="PULSE", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(ABOUT)
            gr.Markdown(self.notices(), elem_id="notices")
            faces = gr.State([])
            with gr.Row():
                with gr.Column():
                    uploads = gr.File(label="photos or aligned faces (JPEG, PNG, WebP)", file_count="multiple",
                                      file_types=[".jpg", ".jpeg", ".png", ".webp"], elem_id="uploads")
                    face_size = gr.Dropdown(
                        self.face_sizes(), value=DEFAULT_FACE_SIZE,
                        label="side of the small faces cut from photos (align_face.py -output_size)")
                    upload_message = gr.Markdown(elem_id="upload_message")
                    pictures = gr.Image(label="faces found", format="png", interactive=False, elem_id="faces")
                    chosen = gr.CheckboxGroup(label="faces to search", elem_id="chosen")
                with gr.Column():
                    boxes = {name: setting_box(name, defaults[name]) for name in IN_VIEW}
                    with gr.Accordion("more settings (run.py's names and defaults)", open=False):
                        boxes.update({name: setting_box(name, defaults[name]) for name in BOXES if name not in boxes})
                    with gr.Row():
                        run = gr.Button("Run PULSE", variant="primary", elem_id="run")
                        stop = gr.Button("Stop (keeps the best so far)", variant="stop", elem_id="stop")
                    status = gr.Markdown(elem_id="status")
                    with gr.Row():
                        live = gr.Image(label="best image so far", format="png", height=300, elem_id="live")
                        plot = gr.Plot(label="L2 against eps")
            strips = gr.Image(label="input | bicubic | result | its downscale", format="png", interactive=False,
                              elem_id="strips")
            summary = gr.Markdown(elem_id="summary")
            downloads = gr.File(label="results, run log (JSON lines) and search GIFs", file_count="multiple",
                                elem_id="downloads")

            boxes["recipe"].input(on_recipe, boxes["recipe"], [boxes[name] for name in RECIPE_BOXES])
            for changed in (uploads, face_size):  # a new face size cuts the photos' faces again
                changed.change(self.on_upload, [uploads, face_size], [faces, pictures, chosen, upload_message])

            # Gradio hands its request (whose session says which page asks) only to a positional
            # parameter annotated gr.Request, an annotation that needs Gradio imported
            def on_search(request: gr.Request, faces, chosen, *values):
                yield from self.on_search(faces, chosen, *values, request=request)

            def on_stop(request: gr.Request):
                self.on_stop(request)

            run.click(on_search, [faces, chosen, *(boxes[name] for name in BOXES)],
                      [live, status, plot, strips, summary, downloads],
                      concurrency_limit=None)  # the page's own line runs one search at a time, and says so
            stop.click(on_stop, None, None, queue=False)
        return demo


def on_recipe(recipe):
    """The values of the RECIPE_BOXES when a recipe is chosen: its settings (those it leaves, the defaults)."""
    shown = Settings.of(recipe=recipe).boxes()
    return [shown[name] for name in RECIPE_BOXES]


def setting_box(name, default):
    """The page's box of a setting (elem_id: its name), as SearchConfig declares it: a checkbox, a
    dropdown of its choices, a number box or a text box, with its help. No minimum on the numbers:
    Gradio would refuse a value with a message that names no setting (and a traceback in the
    terminal); Settings.of says which one is wrong."""
    import gradio as gr
    declared = {f.name: f for f in fields(SearchConfig)}.get(name)
    if declared is None:  # the page's own: the seed and duplicates of its loop
        return gr.Number(default, label=name, info=SEED_HELP if name == "seed" else None, precision=0, elem_id=name)
    kind, choices, info = declared.type, declared.metadata["choices"], declared.metadata["help"]
    if kind is bool:
        return gr.Checkbox(default, label=name, info=info, elem_id=name)
    if choices is not None:
        return gr.Dropdown(list(choices), value=default, label=name, info=info, elem_id=name)
    if kind in (int, float):
        return gr.Number(default, label=name, info=info, precision=0 if kind is int else None, elem_id=name)
    return gr.Textbox("" if default is None else str(default), label=name, info=info, elem_id=name,
                      placeholder="blank: the default")


class Latest:
    """A one-place mailbox: put() replaces what is there, read or not; take() waits for something new.
    The live view takes the search's snapshots from it, so it shows the newest and never falls behind."""
    CLOSED = object()  # what take() gives once the mailbox is closed and its last item taken

    def __init__(self):
        self.changed = threading.Condition()
        self.item, self.unread, self.closed = None, False, False

    def put(self, item):
        with self.changed:
            self.item, self.unread = item, True
            self.changed.notify_all()

    def close(self):
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def take(self):
        with self.changed:
            self.changed.wait_for(lambda: self.unread or self.closed)
            if not self.unread:
                return Latest.CLOSED
            self.unread = False
            return self.item

    def peek(self):
        """The newest item, taken or not (None before the first)."""
        return self.item


@dataclass
class Running:
    """A session's search, from Run: `stop` ends it with its best so far (or before it starts), `latest`
    holds its newest Snapshot, `ended` is set once its thread is done."""
    stop: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    latest: Latest = field(default_factory=Latest)

    def run(self, task, show):
        """Run `task(report)` on a thread, `report` putting a Snapshot in `latest`; yield show(the newest
        snapshot) as they come, skipping those the page had no time for, and return the task's result
        (or raise its error)."""
        outcome = {}

        def work():
            try:
                outcome["value"] = task(self.latest.put)
            except BaseException as e:  # handed to the caller's thread
                outcome["error"] = e
            finally:
                self.latest.close()
                self.ended.set()

        threading.Thread(target=work, daemon=True).start()
        while (snapshot := self.latest.take()) is not Latest.CLOSED:
            yield show(snapshot)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def status_only(message):
    """The page's outputs for a mistake: the message in the status line, the rest as they are."""
    return status_view(f"**{message}**")


def status_view(status):
    """The page's outputs with a new status line, the rest as they are."""
    import gradio as gr
    return gr.update(), status, gr.update(), gr.update(), gr.update(), gr.update()


def waiting_status(place, ahead):
    """The status line of a search waiting in line at `place` (1: next), while the search `ahead`
    runs (its newest Snapshot, None before its first)."""
    progress = "starting" if ahead is None else (
        f"search {ahead.search} of {ahead.searches}, step {ahead.step} of {ahead.steps}")
    return f"waiting in the queue, place {place}: another page's search runs now ({progress})"


def final_view(searched, folder, server_stopping):
    """The page's outputs when the searches are done: status, strips, summary and downloads."""
    import gradio as gr
    if server_stopping:
        status = "stopped: the server is shutting down; the best image so far is below"
    else:
        status = "done (stopped: the best image so far is kept)" if any(r.interrupted for r in searched) else "done"
    return (gr.update(), status, gr.update(), stacked([r.strip for r in searched]),
            "\n".join(results_summary(r) for r in searched), sorted(str(p) for p in folder.iterdir()))


def live_view(snap):
    """The page's outputs during a search: the live image, status and curve; the rest as they are."""
    import gradio as gr
    status = f"search {snap.search} of {snap.searches} ({snap.label}): step {snap.step} of {snap.steps}"
    return snap.best, status, l2_chart(snap), gr.update(), gr.update(), gr.update()


def session_of(request):
    return getattr(request, "session_hash", None)


def main(argv=None):
    args = build_parser().parse_args(argv)
    messages.show_messages()
    if importlib.util.find_spec("gradio") is None:
        print("error: app.py needs its extra: pip install -r requirements-app.txt", file=sys.stderr)
        return exits.EXIT_SETUP_FAILED
    cpu_threads.set_threads(args.threads)
    try:
        model = PULSE.load(**asdict(flags.options_from(ModelOptions, args)))
    except PulseError as e:
        return exits.report_failure(e, "app.py")
    aligner, problem = load_aligner(args.cache_dir)
    if problem:
        print(f"note: {problem}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pulse_app_") as workdir, quiet_stop.StopSignals() as stop:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(workdir) / "gradio")  # uploads and served files
        try:
            searching = serve(Page(model, aligner, problem, workdir), args)
        except PulseError as e:
            return exits.report_failure(e, "app.py")
    if stop.requested:
        print("interrupted" + (": the running search ended with its best image so far, shown on its page"
                               if searching else ""), file=sys.stderr)
    return stop.exit_status if stop.requested else exits.EXIT_OK


def serve(page, args):
    """Serve the page until Ctrl-C, SIGTERM or SIGHUP (quiet_stop.StopSignals's KeyboardInterrupt), then end the
    running searches and close the server; whether a search was running. SetupError when the port
    cannot be had. Gradio's own wait for Ctrl-C
    would leave a search on its thread while Python exits, and the C++ runtime aborts the process
    when that thread is inside torch."""
    demo = None
    try:
        demo = page.blocks()
        try:
            demo.queue(default_concurrency_limit=1).launch(
                server_name=args.host, server_port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb",
                allowed_paths=[str(page.workdir)], prevent_thread_lock=True, quiet=True)
        except OSError:  # Gradio's message speaks of its launch() arguments
            raise exits.SetupError(f"cannot serve on {args.host}, port {args.port} (taken?); "
                                 f"choose another with -port or -host") from None
        print(f"the page is at {demo.local_url} (Ctrl-C stops the server)", file=sys.stderr, flush=True)
        while demo.is_running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        searching = page.end_searches()
        if demo is not None:
            demo.close(verbose=False)
    return searching


if __name__ == "__main__":
    sys.exit(main())
