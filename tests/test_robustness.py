"""Nothing lost, nothing silent: bad inputs, Ctrl-C, crashes and resumed runs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import files
import run
from conftest import ROOT, TINY_INPUT, TINY_MODEL
from test_run import log_records, make_inputs, pixels, run_cli


def test_missing_input_folder_stops_at_once_saying_what_to_run(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tmp_path, inputs=tmp_path / "nowhere")
    assert "does not exist" in str(exit_info.value.code) and "align_face.py" in str(exit_info.value.code)


def test_empty_input_folder_stops_at_once_saying_what_to_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tmp_path, inputs=tmp_path / "empty")
    assert "is empty" in str(exit_info.value.code) and "align_face.py" in str(exit_info.value.code)


def write_bad_inputs(folder):
    """Every kind of unusable input, each with the words its error message must contain."""
    good = (folder / "face0.png").read_bytes()
    (folder / "notes.png").write_text("this is not an image")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    jpeg = folder / "whole.jpg"
    Image.open(TINY_INPUT).convert("RGB").save(jpeg)
    (folder / "truncated.jpg").write_bytes(jpeg.read_bytes()[:200])
    jpeg.unlink()
    (folder / "zero.png").write_bytes(b"")
    (folder / "readme.txt").write_text("hello")
    Image.new("RGB", (16, 12)).save(folder / "wide.png")
    Image.new("RGB", (24, 24)).save(folder / "odd.png")
    Image.new("RGB", (512, 512)).save(folder / "huge.png")
    return {"notes.png": "not a readable image", "truncated.png": "not a readable image",
            "truncated.jpg": "not a readable image", "zero.png": "empty file",
            "readme.txt": "not an image file", "wide.png": "not square",
            "odd.png": "does not divide 256", "huge.png": "larger than the 256x256 model"}


def test_bad_inputs_are_named_and_skipped_and_the_rest_is_done(tmp_path, capsys):
    inputs = make_inputs(tmp_path / "in", count=2)
    expected = write_bad_inputs(inputs)
    code, out_dir = run_cli(tmp_path, "-seed", "2", "-steps", "3", inputs=inputs)
    err = capsys.readouterr().err
    assert code == 1
    for name, reason in expected.items():
        (line,) = [l for l in err.splitlines() if name in l]
        assert reason in line, line
    assert "align_face.py" in err and "16" in err  # says how to get a usable size

    clean_inputs = make_inputs(tmp_path / "clean_in", count=2)
    _, clean_dir = run_cli(tmp_path, "-seed", "2", "-steps", "3", inputs=clean_inputs, out="clean")
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["face0.png", "face1.png"]
    for name in ("face0.png", "face1.png"):
        assert np.array_equal(pixels(out_dir / name), pixels(clean_dir / name))


def test_out_of_memory_suggests_a_smaller_batch(tmp_path, monkeypatch, capsys):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(run.PULSE, "search", no_memory)
    code, _ = run_cli(tmp_path, "-seed", "0", "-batch_size", "4")
    err = capsys.readouterr().err
    assert code == 2
    assert "out of memory" in err and "try -batch_size 2" in err
    code, _ = run_cli(tmp_path, "-seed", "0", "-batch_size", "1", out="one")
    assert code == 2 and "try -precision bf16" in capsys.readouterr().err


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_an_image_save_that_crashes_leaves_the_old_image(tmp_path, monkeypatch):
    target = tmp_path / "face.png"
    files.save_image(Image.new("RGB", (4, 4), "red"), target)

    def crash(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError):
        files.save_image(Image.new("RGB", (4, 4), "blue"), target)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["face.png"]
    assert Image.open(target).getpixel((0, 0)) == (255, 0, 0)


def start_run(tmp_path, inputs, out_dir, *flags, cwd=ROOT):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-input_dir", str(inputs), "-output_dir", str(out_dir),
         "-cache_dir", str(TINY_MODEL), *flags],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_ctrl_c_writes_the_best_image_so_far_and_exits_130(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    out_dir = tmp_path / "out"
    progress = tmp_path / "out" / "face0" / "HR"
    proc = start_run(tmp_path, inputs, out_dir, "-seed", "0", "-steps", "100000", "-save_intermediate")
    wait_for(lambda: progress.exists() and len(list(progress.glob("*.png"))) >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (record,) = log_records(out_dir)
    assert record["interrupted"] is True and 2 <= record["steps"] < 100000
    assert len(record["trajectory"]) == record["steps"]
    assert Image.open(out_dir / "face0.png").size == (256, 256)
    assert "interrupted" in err


def test_resume_after_a_crash_ends_with_the_outputs_of_an_uninterrupted_run(tmp_path):
    inputs = make_inputs(tmp_path / "in", count=3)
    flags = ["-seed", "4", "-steps", "8"]
    out_dir = tmp_path / "out"
    proc = start_run(tmp_path, inputs, out_dir, *flags)
    log = out_dir / "pulse_log.jsonl"
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 1)
    proc.kill()  # a crash between two inputs: no chance to clean up
    proc.wait()
    done_before = len(log_records(out_dir))
    assert done_before < 3

    resumed = start_run(tmp_path, inputs, out_dir, *flags, "-resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"{done_before} result(s) already done" in out
    records = log_records(out_dir)
    assert sorted(r["output"] for r in records) == sorted(str(out_dir / f"face{i}.png") for i in range(3))

    _, clean_dir = run_cli(tmp_path, *flags, inputs=inputs, out="clean")
    for i in range(3):
        assert np.array_equal(pixels(out_dir / f"face{i}.png"), pixels(clean_dir / f"face{i}.png"))
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_resume_reruns_results_made_with_other_flags(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    run_cli(tmp_path, "-seed", "4", "-steps", "2", inputs=inputs)
    code, out_dir = run_cli(tmp_path, "-seed", "4", "-steps", "3", "-resume", inputs=inputs)
    assert [r["steps"] for r in log_records(out_dir)] == [2, 3]


def test_runs_from_any_working_directory_with_the_bundled_gaussian_fit(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "synthesis.pt").write_bytes((TINY_MODEL / "synthesis.pt").read_bytes())
    make_inputs(tmp_path / "in")
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-input_dir", "in", "-output_dir", "out",
                           "-cache_dir", "cache", "-seed", "0", "-steps", "2"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "face0.png").exists()
    assert not (cache / "gaussian_fit.pt").exists()  # the bundled fit was used, nothing rebuilt


def test_written_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    target = tmp_path / "face.png"
    files.save_image(Image.new("RGB", (4, 4)), target)
    assert target.stat().st_mode & 0o777 == 0o666 & ~files._umask()
