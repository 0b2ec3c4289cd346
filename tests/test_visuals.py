"""The pictures and measurements of a run: run.py -strip/-gif, plot_log.py and sweep.py on the tiny model."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import plot_log
import run
import sweep
import visuals
from PULSE import BestTracker
from conftest import TINY_INPUT, TINY_MODEL
from visuals import LABEL_HEIGHT, PANEL, RED

STEPS = 3
DUPLICATES = 3  # with -batch_size 2: one batch of two, then one of one


def run_tiny(out_dir, *flags):
    return run.main(["-input_dir", str(TINY_INPUT.parent), "-cache_dir", str(TINY_MODEL), "-output_dir", str(out_dir),
                     "-seed", "0", "-steps", str(STEPS), *flags])


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
    record = {"output": str(image_path), "converged": True, "seed": 3, "best_step": 7, "losses": {"L2": 0.002}}
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
    paths = [tmp_path / "a_search.gif", tmp_path / "b_search.gif"]
    gif = visuals.SearchGif(paths, steps=3)
    best = BestTracker(loss_terms=[(100.0, "L2")])
    totals, l2s = [[3.0, 1.0], [2.0, 1.0], [2.0, 0.5]], [[0.3, 0.1], [0.2, 0.2], [0.1, 0.05]]
    for step, (total, l2) in enumerate(zip(totals, l2s), start=1):
        losses = {"L2": torch.tensor(l2), "TOTAL": torch.tensor(total)}
        best.update(step, losses, torch.rand(2, 3, 512, 512))
        gif(step, losses, best, None)
    # sample a: step 3 ties step 2's TOTAL, so the best stays step 2's (the search keeps the first)
    assert [l2 for _, l2, _ in gif.frames[0]] == pytest.approx([0.3, 0.2, 0.2])
    assert [l2 for _, l2, _ in gif.frames[1]] == pytest.approx([0.1, 0.1, 0.05])
    gif.save()
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (PANEL, PANEL) and image.n_frames == 3


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


def test_plot_log_writes_one_png_per_record(pictured_run, tmp_path):
    out_dir, _ = pictured_run
    assert plot_log.main([str(out_dir / "pulse_log.jsonl"), "-output_dir", str(tmp_path)]) == 0
    plots = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in plots] == [f"target_{k}_losses.png" for k in range(1, DUPLICATES + 1)]
    for plot in plots:
        with Image.open(plot) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 250
        assert plot.stat().st_size > 10_000


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), ("", "no log records"), ("not json\n", "no log records"),
    ('{"output": "a.png"}\n', "cannot be plotted")])
def test_plot_log_fails_clearly_on_a_bad_log(tmp_path, capsys, content, message):
    log = tmp_path / "pulse_log.jsonl"
    if content is not None:
        log.write_text(content)
    assert plot_log.main([str(log)]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "plots").exists() or not any((tmp_path / "plots").iterdir())


@pytest.fixture(scope="module")
def sweep_argv(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sweep")
    argv = ["-input_dir", str(TINY_INPUT.parent), "-grid", "steps=2,3", "-output_dir", str(out_dir),
            "--", "-cache_dir", str(TINY_MODEL)]
    assert sweep.main(argv) == 0
    return out_dir, argv


def table_rows(out_dir):
    lines = [line for line in (out_dir / "sweep.md").read_text().splitlines() if line.startswith("|")]
    return lines[2:]  # after the header and its separator


def test_sweep_writes_a_folder_and_a_table_row_per_combination(sweep_argv):
    out_dir, _ = sweep_argv
    assert sorted(p.name for p in out_dir.iterdir() if p.is_dir()) == ["steps=2", "steps=3"]
    rows = table_rows(out_dir)
    assert len(rows) == 2
    assert all(row.endswith("| ok |") and "| 1 |" in row for row in rows)


def test_second_sweep_reruns_nothing(sweep_argv):
    out_dir, argv = sweep_argv
    logs = sorted(out_dir.glob("*/pulse_log.jsonl"))
    before = {log: (log.read_text(), (log.parent / "target.png").stat().st_mtime_ns) for log in logs}
    assert sweep.main(argv) == 0
    assert {log: (log.read_text(), (log.parent / "target.png").stat().st_mtime_ns) for log in logs} == before
    assert len(table_rows(out_dir)) == 2


def test_sweep_rejects_a_grid_key_that_is_not_a_run_flag(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["-grid", "learning_rat=0.1", "-output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "'learning_rat' is not a run.py flag" in error and "learning_rate" in error
    assert not any(tmp_path.iterdir())
