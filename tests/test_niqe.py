"""NIQE against MATLAB's reference score, its building blocks, and the evaluate.py CLI."""
import functools
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import FIXTURES, ROOT, TINY_MODEL
from evaluate import main as evaluate_main
from evaluation.paper_comparison import downscale_psnr, find_results
from niqe import cubic, matlab_imresize_half, niqe, rgb_to_y

MATLAB_BABOON = 5.72957338  # MATLAB R2021a niqe on baboon.png (Y channel, no border crop)


@pytest.fixture(scope="module")
def baboon():
    with Image.open(FIXTURES / "niqe" / "baboon.png") as image:
        return np.asarray(image.convert("RGB"))


def save(array, path):
    Image.fromarray(array).save(path)
    return path


def run_evaluate(*args):
    return subprocess.run([sys.executable, "evaluate.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_baboon_matches_matlab(baboon):
    # tighter than the 1e-3 the reference promises: float64 filtering is already 4e-4 off
    assert niqe(baboon) == pytest.approx(MATLAB_BABOON, abs=2e-5)


def test_blurring_makes_the_score_worse(baboon):
    blurred = ndimage.gaussian_filter(baboon.astype(float), sigma=(2, 2, 0)).round().astype(np.uint8)
    assert niqe(blurred) > niqe(baboon) + 1


def test_too_small_image_raises(baboon):
    with pytest.raises(ValueError, match="96x96"):
        niqe(baboon[:95, :200])


def test_y_channel_is_matlab_studio_range():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], dtype=np.uint8)
    # 16 + 65.481 = 81.481 for pure red, rounded as MATLAB's uint8 result
    assert rgb_to_y(rgb).tolist() == [[16, 235, 81]]


def test_half_resize_shape_and_constants():
    out = matlab_imresize_half(np.full((97, 50), 7.25))
    assert out.shape == (49, 25)
    np.testing.assert_allclose(out, 7.25, rtol=0, atol=1e-12)


def test_half_resize_preserves_a_linear_ramp_away_from_the_borders():
    ramp = np.tile(np.arange(40.0)[:, None], (1, 6))
    out = matlab_imresize_half(ramp)
    # output row o samples input coordinate 2 * o + 0.5; the 8 taps reach 4 rows either side
    expected = 2 * np.arange(20) + 0.5
    np.testing.assert_allclose(out[2:-2], np.tile(expected[2:-2, None], (1, 3)), atol=1e-12)


def test_half_resize_first_pixel_by_hand():
    x = np.random.default_rng(0).uniform(0, 255, 8)
    out = matlab_imresize_half(np.tile(x[:, None], (1, 4)))
    # kernel stretched by 2, taps at distances 0.5, 1.5, 2.5, 3.5 from 1.5 (0-based 0.5);
    # the three taps before the first row mirror rows 0, 1, 2 (symmetric padding)
    w = cubic(np.array([0.5, 1.5, 2.5, 3.5]) / 2)
    value = (w[0] * (x[0] + x[1]) + w[1] * (x[0] + x[2]) + w[2] * (x[1] + x[3])
             + w[3] * (x[2] + x[4])) / (2 * w.sum())
    np.testing.assert_allclose(out[0], value, atol=1e-12)


def test_cli_scores_each_folder_and_writes_json(tmp_path, baboon):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    images = {save(baboon[:192, :192], first / "a.png"): baboon[:192, :192],
              save(baboon[96:288, 192:480], first / "b.png"): baboon[96:288, 192:480],
              save(baboon[200:400, 100:300], second / "c.png"): baboon[200:400, 100:300]}
    proc = run_evaluate(first, second, "-json", tmp_path / "out.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out.json").read_text())["folders"]
    for path, array in images.items():
        assert report[str(path.parent)]["images"][path.name] == pytest.approx(niqe(array), abs=1e-9)
    assert report[str(first)]["count"] == 2 and report[str(second)]["count"] == 1
    rows = [line for line in proc.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert len(rows) == 2


def test_cli_skips_a_corrupt_file_by_name_and_fails(tmp_path, baboon):
    save(baboon[:192, :192], tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    proc = run_evaluate(tmp_path, "-json", tmp_path / "out.json")
    assert proc.returncode != 0
    assert "broken.png" in proc.stderr
    report = json.loads((tmp_path / "out.json").read_text())["folders"][str(tmp_path)]
    assert list(report["images"]) == ["good.png"] and report["failed"] == 1


def test_cli_rejects_a_missing_folder(tmp_path, capsys):
    assert evaluate_main([str(tmp_path / "absent")]) == 3
    assert "absent is not a folder" in capsys.readouterr().err


def test_find_results_takes_duplicates_but_not_strips_or_other_inputs(tmp_path):
    names = ["face.png", "face_1.png", "face_2.png", "face_strip.png", "face_search.gif",
             "face_1_strip.png", "faces.png", "face_3.jpg"]
    for name in names:
        (tmp_path / name).touch()
    found = find_results(tmp_path / "face.jpg", tmp_path, {"face", "face_2"})
    assert [p.name for p in found] == ["face.png", "face_1.png"]


def test_paper_comparison_on_a_tiny_run(tmp_path):
    inputs, results = tmp_path / "input", tmp_path / "runs"
    inputs.mkdir(), results.mkdir()
    noise = np.random.default_rng(1).uniform(0, 255, (16, 16, 3))
    low = Image.fromarray(ndimage.gaussian_filter(noise, (1, 1, 0)).astype(np.uint8))
    low.save(inputs / "face.png")
    low.resize((256, 256), Image.BICUBIC).save(results / "face.png")
    low.resize((256, 256), Image.LANCZOS).save(results / "face_1.png")
    low.save(results / "face_strip.png")
    proc = run_evaluate("-paper", inputs, results, "-json", tmp_path / "paper.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "paper.json").read_text())
    assert set(report["summary"]) >= {"nearest", "bicubic", "pulse", "psnr"}
    assert set(report["inputs"]["face.png"]["results"]) == {"face.png", "face_1.png"}
    assert math.isfinite(report["summary"]["psnr"]) and report["summary"]["psnr"] > 25
    for method, paper in (("nearest", "12.48"), ("bicubic", "7.06"), ("PULSE", "2.47")):
        assert any(line.startswith(method) and paper in line for line in proc.stdout.splitlines())


def test_consistent_result_downscales_closer_than_noise():
    rng = np.random.default_rng(2)
    low = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    nearest = np.asarray(Image.fromarray(low).resize((256, 256), Image.NEAREST))
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert downscale_psnr(nearest, low) > downscale_psnr(noise, low) + 5


def test_folder_scores_leave_out_comparison_strips(tmp_path):
    from evaluation.shared import list_images
    Image.new("RGB", (8, 8)).save(tmp_path / "face.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "face_strip.png")
    assert [p.name for p in list_images(tmp_path)] == ["face.png"]


def small_run(folder, count=2):
    """`count` 8x8 inputs in folder/input and their 32x32 nearest upscales in folder/runs: too small for NIQE."""
    inputs, results = folder / "input", folder / "runs"
    inputs.mkdir(), results.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        low.save(inputs / f"face_{i}.png")
        low.resize((32, 32), Image.NEAREST).save(results / f"face_{i}.png")
    return inputs, results


def test_paper_comparison_of_faces_too_small_for_niqe_gives_their_psnr_and_a_note(tmp_path):
    inputs, results = small_run(tmp_path)
    proc = run_evaluate("-paper", inputs, results, "-json", tmp_path / "paper.json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "paper.json").read_text())["summary"]
    psnrs = [downscale_psnr(np.asarray(Image.open(results / name)), np.asarray(Image.open(inputs / name)))
             for name in ("face_0.png", "face_1.png")]
    assert summary["pulse"] is None and summary["results"] == 2 and summary["psnr"] == pytest.approx(np.mean(psnrs))
    assert "mean PSNR" in proc.stdout and "over 2 result(s) of 2 input(s)" in proc.stdout
    assert ("note: no NIQE for 6 image(s): NIQE needs an image of at least 96x96 pixels, got 32x32 (width x height)"
            in proc.stdout.splitlines())  # each input's nearest and bicubic upscales and its result


def test_a_folder_with_nothing_niqe_can_score_says_why_in_one_line(tmp_path):
    _, results = small_run(tmp_path, count=3)
    proc = run_evaluate(results)
    assert proc.returncode == 1
    reason = "NIQE needs an image of at least 96x96 pixels, got 32x32 (width x height)"
    assert proc.stderr.splitlines() == [f"skipped 3 images of {results}: {reason}"]
    assert proc.stdout.splitlines()[-1].split() == [str(results), "none", "scored:", *reason.split()]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_held_out_faces_are_counted_on_a_bar_inside_their_row(monkeypatch):
    import PULSE
    from evaluation import held_out_table
    model = PULSE.load(cache_dir=TINY_MODEL, precision="fp64")
    low = [np.zeros((16, 16, 3), np.uint8)] * 2
    monkeypatch.setattr(sys, "stderr", Terminal())
    # every count drawn: tqdm otherwise redraws at most every 0.1 s, and a 1-step face takes less
    monkeypatch.setattr(held_out_table, "tqdm", functools.partial(held_out_table.tqdm, mininterval=0, miniters=1))
    held_out_table.search_held_out(model, low, 0, {"steps": 1}, "x16 steps=1")
    shown = sys.stderr.getvalue()
    assert "x16 steps=1:" in shown and "1/2 [" in shown and "2/2 [" in shown
