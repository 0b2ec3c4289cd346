"""The pictures of a run (visuals.py): run.py -strip and -gif on the tiny model."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from runkit import visuals
import run
from conftest import TINY_INPUT, make_record, run_on_tiny_model
from search import BestTracker, Row, Step
from runkit.visual_flags import PANEL
from runkit.visuals import LABEL_HEIGHT, RED

STEPS = 3
DUPLICATES = 3  # with -batch_size 2: one batch of two, then one of one


def run_tiny(out_dir, *flags):
    return run_on_tiny_model(out_dir, "-seed", "0", "-steps", str(STEPS), *flags)


def red_pixels(image):
    return int((np.asarray(image) == RED).all(axis=-1).sum())


def label_area(strip, panel):
    return strip.crop((panel * PANEL, PANEL, (panel + 1) * PANEL, PANEL + LABEL_HEIGHT))


@pytest.fixture(scope="module")
def pictured_run(tmp_path_factory):
    """Three duplicates over two batches, a ground truth, eps 0 (never reached), strip and GIFs."""
    hr_dir = tmp_path_factory.mktemp("hr")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(hr_dir / "target.webp")
    out_dir = tmp_path_factory.mktemp("pictured")
    flags = ["-duplicates", str(DUPLICATES), "-batch_size", "2", "-eps", "1e-12", "-strip", "-gif", "-hr_dir", str(hr_dir)]
    assert run_tiny(out_dir, *flags) == 0
    return out_dir, flags


def test_strip_shows_input_bicubic_truth_and_two_panels_per_duplicate(pictured_run):
    out_dir, _ = pictured_run
    with Image.open(out_dir / "target_strip.png") as strip:
        assert strip.size == ((3 + 2 * DUPLICATES) * PANEL, PANEL + LABEL_HEIGHT)
    assert sorted(p.name for p in out_dir.glob("*_strip.png")) == ["target_strip.png"]


def test_results_that_did_not_converge_are_marked_red(pictured_run):
    out_dir, _ = pictured_run
    with Image.open(out_dir / "target_strip.png") as strip:
        strip = strip.convert("RGB")
        result_panels = [3 + 2 * k for k in range(DUPLICATES)]
        assert all(red_pixels(label_area(strip, panel)) > 100 for panel in result_panels)
        assert all(strip.getpixel((panel * PANEL + 1, PANEL // 2)) == RED for panel in result_panels)
        assert red_pixels(label_area(strip, 0)) == 0


def test_a_converged_result_gets_no_red_mark(tmp_path):
    image_path = tmp_path / "face.png"
    Image.new("RGB", (64, 64), "grey").save(image_path)
    record = make_record(str(image_path), converged=True, seed=3, best_step=7, losses={"L2": 0.002})
    strip = visuals.draw_strip(visuals.result_panels(record, 16))
    assert strip.size == (2 * PANEL, PANEL + LABEL_HEIGHT)
    assert red_pixels(strip) == 0


def test_gif_has_one_frame_per_step_for_every_sample_of_every_batch(pictured_run):
    out_dir, _ = pictured_run
    for k in range(1, DUPLICATES + 1):
        with Image.open(out_dir / f"target_{k}_search.gif") as gif:
            assert gif.format == "GIF" and gif.size == (PANEL, PANEL)
            assert sum(1 for _ in ImageSequence.Iterator(gif)) == STEPS


def test_gif_frames_are_small_and_show_the_best_so_far(tmp_path):
    gif = visuals.SearchGif(steps=3)
    searches = [("a", 0), ("b", 0), ("b", 1)]  # (name, seed); b: two tries
    trackers = [BestTracker([(100.0, "L2")], [torch.zeros(1, 1, 4)]) for _ in searches]
    totals, l2s = [[3.0, 1.0, 1.0], [2.0, 1.0, 1.0], [2.0, 0.5, 0.9]], [[0.3, 0.1, 0.1], [0.2, 0.2, 0.2], [0.1, 0.05, 0.1]]
    for step, (total, l2) in enumerate(zip(totals, l2s), start=1):
        losses = {"L2": torch.tensor(l2), "TOTAL": torch.tensor(total)}
        image = torch.rand(3, 3, 512, 512)
        for b, tracker in enumerate(trackers):
            tracker.update(step, {k: v[b:b + 1] for k, v in losses.items()}, image[b:b + 1])
        rows = [Row(f"{name}.png", name, 1, seed + 1, seed, step) for name, seed in searches]
        gif(Step(losses, rows, trackers, downscale=None))
    # search a: step 3 ties step 2's TOTAL, so the best stays step 2's (the search keeps the first)
    assert [l2 for _, l2, _ in gif.frames[("a", 0)]] == pytest.approx([0.3, 0.2, 0.2])
    assert [l2 for _, l2, _ in gif.frames[("b", 0)]] == pytest.approx([0.1, 0.1, 0.05])
    gif.save(tmp_path / "a_search.gif", SimpleNamespace(name="a", seed=0))
    gif.save(tmp_path / "b_search.gif", SimpleNamespace(name="b", seed=1))  # the kept try's film
    assert not gif.frames  # the other try of b is dropped with it
    for name in ("a", "b"):
        with Image.open(tmp_path / f"{name}_search.gif") as image:
            assert image.size == (PANEL, PANEL) and image.n_frames == 3


@pytest.mark.parametrize("width", [16, 32, 64, 128, 256])
def test_gif_captions_are_fitted_as_each_frames_own_would_be(width):
    """fit_captions fits each caption shape once (digits set at one width) and cuts its alikes the
    same; the result must be what fitting every frame's caption on its own gives."""
    from PIL import ImageDraw
    draw = ImageDraw.Draw(Image.new("RGB", (width, width)))
    for steps in (9, 60, 1000):
        digits = len(str(steps))
        l2s = np.geomspace(3.0, 1e-6, steps)
        texts = [f"step {step:{digits}d}/{steps}  best L2 {l2:.3g}" for step, l2 in enumerate(l2s, 1)]
        fitted = visuals.fit_captions(texts, width)
        checked = range(0, steps, 1 + steps // 100)  # fitting a caption takes 0.4 ms
        assert [fitted[i] for i in checked] == [visuals.fit_text(draw, texts[i], width - 8) for i in checked]


def test_resume_makes_the_strip_from_the_log_without_searching(pictured_run):
    out_dir, flags = pictured_run
    log_lines = (out_dir / "pulse_log.jsonl").read_text().count("\n")
    (out_dir / "target_strip.png").unlink()
    assert run_tiny(out_dir, *flags, "-resume") == 0
    assert (out_dir / "pulse_log.jsonl").read_text().count("\n") == log_lines
    with Image.open(out_dir / "target_strip.png") as strip:
        assert strip.width == (3 + 2 * DUPLICATES) * PANEL


def test_hr_dir_needs_strip(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["-hr_dir", str(TINY_INPUT.parent)])
    assert "-strip" in capsys.readouterr().err
