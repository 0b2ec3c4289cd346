"""Pictures of a PULSE run (run.py -strip, -gif; their flags are visual_flags.py's).

- A strip per input, `<output_dir>/<stem>_strip.png`: the input, its bicubic upscale, the true
  face (-hr_dir), then for every result the image PULSE found and that image downscaled again
  the way the search compared it with the input. Every panel is PANEL x PANEL with a label under it.
- A GIF per result, `<output_dir>/<name>_search.gif`: the best image so far after every step.
"""
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from torch.nn import functional as F

from runkit import runlog
from runkit.files import atomic_path, save_image
from runkit.images import IMAGE_SUFFIXES, ImageReadError, read_rgb
from runkit.image_tensors import bicubic_downscaler, to_pil
from runkit.visual_flags import PANEL

LINE_HEIGHT = 16
MARGIN = 6
LABEL_HEIGHT = 3 * LINE_HEIGHT + 2 * MARGIN  # three lines of label under each panel
RED = (200, 0, 0)
BORDER = 4              # width of the red frame around a result that did not converge
GIF_FRAME_MS, GIF_LAST_FRAME_MS = 100, 2000
DIGITS_AS_ZERO = str.maketrans("123456789", "000000000")


# ---- labelled panels -----------------------------------------------------------------------

@lru_cache(maxsize=1)
def label_font():
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has only its small bitmap font, which takes no size
        return ImageFont.load_default()


def fit_text(draw, text, width):
    """`text`, or its longest start with an ellipsis that fits in `width` pixels (at least the ellipsis)."""
    font = label_font()
    if len(text) <= 1 or draw.textlength(text, font=font) <= width:
        return text
    shortest, longest = 0, len(text) - 1  # bisect over the kept characters
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if draw.textlength(text[:middle] + "…", font=font) <= width:
            shortest = middle
        else:
            longest = middle - 1
    return text[:shortest] + "…"


@dataclass
class Panel:
    image: Image.Image                          # any size; shown at PANEL x PANEL
    lines: list                                 # label lines, black on white
    alarm: str = ""                             # a last label line white on red; also frames the image in red
    resample: int = Image.Resampling.LANCZOS    # how the image is brought to PANEL x PANEL


def draw_panel(panel):
    tile = Image.new("RGB", (PANEL, PANEL + LABEL_HEIGHT), "white")
    image = panel.image if panel.image.size == (PANEL, PANEL) else panel.image.resize((PANEL, PANEL), panel.resample)
    tile.paste(image, (0, 0))
    draw = ImageDraw.Draw(tile)
    font = label_font()
    y = PANEL + MARGIN // 2
    for line in panel.lines:
        draw.text((MARGIN, y), fit_text(draw, line, PANEL - 2 * MARGIN), fill="black", font=font)
        y += LINE_HEIGHT
    if panel.alarm:
        draw.rectangle((0, 0, PANEL - 1, PANEL - 1), outline=RED, width=BORDER)
        text = fit_text(draw, panel.alarm, PANEL - 2 * MARGIN)
        left, top, right, bottom = draw.textbbox((MARGIN, y), text, font=font)
        draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=RED)
        draw.text((MARGIN, y), text, fill="white", font=font)
    return tile


def draw_strip(panels):
    """The panels side by side: len(panels) * PANEL wide, PANEL + LABEL_HEIGHT high."""
    strip = Image.new("RGB", (len(panels) * PANEL, PANEL + LABEL_HEIGHT), "white")
    for i, panel in enumerate(panels):
        strip.paste(draw_panel(panel), (i * PANEL, 0))
    return strip


# ---- strips --------------------------------------------------------------------------------

def input_panels(low):
    side = f"{low.width}x{low.height}"
    return [Panel(low, ["input", f"{side}, nearest-neighbour upscale"], resample=Image.Resampling.NEAREST),
            Panel(low, ["bicubic upscale", f"of the {side} input (PIL)"], resample=Image.Resampling.BICUBIC)]


def find_ground_truth(hr_dir, stem):
    matches = sorted(p for p in Path(hr_dir).iterdir() if p.stem == stem and p.suffix.lower() in IMAGE_SUFFIXES)
    return matches[0] if matches else None


def ground_truth_panels(hr_dir, stem):
    """A 'ground truth' panel when hr_dir holds <stem>.<image suffix>; otherwise a note and none."""
    path = find_ground_truth(hr_dir, stem)
    if path is None:
        print(f"note: no ground truth {stem}{'|'.join(IMAGE_SUFFIXES)} in {hr_dir}; strip made without it",
              file=sys.stderr)
        return []
    try:
        truth = read_rgb(path)
    except ImageReadError as e:
        print(f"note: ground truth left out of the strip: {e}", file=sys.stderr)
        return []
    return [Panel(truth, ["ground truth", f"{path.name}, {truth.width}x{truth.height}"])]


def downscale_like_search(image, low_size):
    """`image` downscaled to `low_size` by the search's own bicubic operator."""
    return bicubic_downscaler(image.width // low_size)(image)


def result_panels(record, low_size):
    """The result of one log record, and what the search's downscaler makes of it."""
    path = Path(record.output)
    result = read_rgb(path)
    lines = [path.stem, f"seed {record.seed} | step {record.best_step} | L2 {record.losses['L2']:.3g}"]
    shown = Panel(result, lines + ([record.status] if record.converged else []),
                  alarm="" if record.converged else record.status)
    side = f"{low_size}x{low_size}"
    down = Panel(downscale_like_search(result, low_size), [f"{path.stem} downscaled to {side}",
                                                           "what L2 compared (nearest upscale)"],
                 resample=Image.Resampling.NEAREST)
    return [shown, down]


class StripWriter:
    """Collects the log records of each input's results; writes its strip when the last one arrives.

    The duplicates of one input may be spread over batches, and with -resume some of them come
    from an earlier run: their records are taken from that run's log. In a multi-process job
    rank 0 makes one at the end, from the log, as an input's duplicates may run on several ranks.
    """

    def __init__(self, jobs, todo, earlier_records, out_dir, hr_dir=None):
        self.out_dir, self.hr_dir = Path(out_dir), hr_dir
        self.source_of = {job.name: job.source for job in jobs}  # output names are unique in a run
        self.expected = {}  # input path -> its output names, in duplicate order
        for job in jobs:
            self.expected.setdefault(job.source, []).append(job.name)
        self.records = {source: {} for source in self.expected}
        running = {job.name for job in todo}
        earlier = runlog.latest_by_output(earlier_records)
        outputs = (str(job.output) for job in jobs if job.name not in running)
        self.add(earlier[output] for output in outputs if output in earlier)  # none for a failed search

    def add(self, records):
        for record in records:
            name = Path(record.output).stem
            source = self.source_of[name]
            self.records[source][name] = record
            if len(self.records[source]) == len(self.expected[source]):
                self.write(source)

    def write(self, source):
        low = read_rgb(Path(source))
        panels = input_panels(low)
        if self.hr_dir is not None:
            panels += ground_truth_panels(self.hr_dir, Path(source).stem)
        for name in self.expected[source]:
            panels += result_panels(self.records[source][name], low.width)
        save_image(draw_strip(panels), self.out_dir / f"{Path(source).stem}_strip.png")


# ---- search GIFs ---------------------------------------------------------------------------

def caption(image, text):
    """`image` with `text` (fitted to it: fit_captions) white on a black band along its bottom edge."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, image.height - LINE_HEIGHT - 4, image.width, image.height), fill="black")
    draw.text((4, image.height - LINE_HEIGHT - 2), text, fill="white", font=label_font())
    return image


def fit_captions(texts, width):
    """fit_text for the captions of a GIF whose frames are `width` wide. Fitting each frame's caption
    took as long as drawing it (20 ms of a 60-frame GIF's 80); the captions differ in their digits,
    which the label font sets at one width (the tests check it), so captions alike but for their
    digits are cut alike and each shape is fitted once."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    kept = {}  # caption shape -> characters kept, None when it fits whole
    fitted = []
    for text in texts:
        shape = text.translate(DIGITS_AS_ZERO)
        if shape not in kept:
            fit = fit_text(draw, text, width - 8)
            kept[shape] = None if fit == text else len(fit) - 1
        fitted.append(text if kept[shape] is None else text[:kept[shape]] + "…")
    return fitted


def at_most_panel(images):
    """A batch of images (N, C, H, W) brought down by area to PANEL x PANEL where they are larger: a
    frame of a search GIF, the page's live view. Pictures for looking at, not results: a 1024x1024
    face took 0.43 s to write as PNG, 27 ms at 256x256."""
    return F.interpolate(images, size=(PANEL, PANEL), mode="area") if images.shape[-1] > PANEL else images


class SearchGif:
    """A step hook (see PULSE.Step) that films the best image so far of every search of a batch.

    Frames are kept as small 8-bit images (at most PANEL x PANEL), not as device tensors, so a
    long search costs about 200 KB of memory per step and search. `save(path, result)` writes the
    GIF of the search a result kept (with tries, the others of its job are dropped unseen).
    """

    def __init__(self, steps):
        self.steps = steps
        self.frames = {}  # (result name, seed) -> (step, best L2, image) per step

    def __call__(self, step):
        for row, best_l2, image in zip(step.rows, step.best_l2, at_most_panel(step.best_im)):
            self.frames.setdefault((row.name, row.seed), []).append((row.step, best_l2, to_pil(image)))

    def save(self, path, result):
        frames = self.frames[(result.name, result.seed)]
        self.frames = {key: value for key, value in self.frames.items() if key[0] != result.name}
        digits = len(str(self.steps))
        texts = fit_captions([f"step {step:{digits}d}/{self.steps}  best L2 {l2:.3g}" for step, l2, _ in frames],
                             frames[0][2].width)
        # Each frame gets its own 256-colour palette by fast octree: PIL's default (median cut) took
        # 7 ms a 64x64 frame and 49 ms a 256x256 one, as long as the DCGAN's whole search.
        images = [caption(image, text).quantize(256, method=Image.Quantize.FASTOCTREE)
                  for (_, _, image), text in zip(frames, texts)]
        durations = [GIF_FRAME_MS] * (len(images) - 1) + [GIF_LAST_FRAME_MS]
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],  # palettes full already:
                           duration=durations, loop=0, optimize=False)  # optimizing them took 11 of 18 ms
