"""Nothing lost, nothing silent: bad inputs, Ctrl-C, crashes and resumed runs."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import folder_run
from runkit import files
import search
from conftest import ROOT, TINY_INPUT, TINY_MODEL, log_records, make_inputs, pixels, run_cli, wait_for


def test_missing_input_folder_stops_at_once_saying_what_to_run(tmp_path, capsys):
    code, _ = run_cli(tmp_path, inputs=tmp_path / "nowhere")
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 3 and "does not exist" in line and "align_face.py" in line


def test_empty_input_folder_stops_at_once_saying_what_to_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _ = run_cli(tmp_path, inputs=tmp_path / "empty")
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 3 and "is empty" in line and "align_face.py" in line


def test_inputs_that_would_write_the_same_result_are_refused_before_any_work(tmp_path, capsys):
    inputs = make_inputs(tmp_path / "in", count=2)
    Image.open(inputs / "face0.png").save(inputs / "face0.jpg")
    code, out_dir = run_cli(tmp_path, "-seed", "0", "-steps", "2", inputs=inputs)
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 3 and "face0.jpg and face0.png" in line
    assert not out_dir.exists()


def test_an_output_folder_that_cannot_be_written_is_refused_before_loading_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(folder_run, "load", lambda *_, **__: pytest.fail("the model was loaded"))
    (tmp_path / "a_file").write_text("not a folder")
    for out in ("a_file", "a_file/below"):
        code, _ = run_cli(tmp_path, inputs=make_inputs(tmp_path / "in"), out=out)
        (line,) = capsys.readouterr().err.splitlines()
        assert code == 3 and f"cannot write results to -output_dir {tmp_path / out}" in line


def test_a_read_only_output_folder_is_refused_before_loading_the_model(tmp_path, capsys, monkeypatch):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root writes anyway: make the probe meet a refusal as a user would
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(folder_run.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(folder_run, "load", lambda *_, **__: pytest.fail("the model was loaded"))
    code, _ = run_cli(tmp_path, inputs=make_inputs(tmp_path / "in"), out="read_only")
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 3 and line.endswith("Permission denied")


def test_a_killed_runs_temporary_files_are_removed_by_the_next_run(tmp_path):
    out_dir = tmp_path / "out"
    (out_dir / "face0" / "HR").mkdir(parents=True)
    stale = [out_dir / ".t1_0_search.gif.k3j_x9a2.tmp.gif", out_dir / "face0" / "HR" / ".face0_1.png.abcdefgh.tmp.png"]
    kept = [out_dir / ".keep.tmp", out_dir / "notes.tmp.txt", out_dir / ".hidden.png.abc.tmp.png"]
    for path in stale + kept:
        path.write_bytes(b"")
    code, _ = run_cli(tmp_path, "-seed", "0", "-steps", "2")
    assert code == 0
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)


def write_bad_inputs(folder):
    """Every kind of unusable input, each with the words its error message must contain."""
    good = (folder / "face0.png").read_bytes()
    (folder / "notes.png").write_text("this is not an image")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    jpeg = folder / "whole.jpg"
    Image.open(TINY_INPUT).convert("RGB").save(jpeg)
    (folder / "cut.jpg").write_bytes(jpeg.read_bytes()[:200])
    jpeg.unlink()
    (folder / "zero.png").write_bytes(b"")
    (folder / "readme.txt").write_text("hello")
    Image.new("RGB", (16, 12)).save(folder / "wide.png")
    Image.new("RGB", (24, 24)).save(folder / "odd.png")
    Image.new("RGB", (512, 512)).save(folder / "huge.png")
    return {"notes.png": "not a readable image", "truncated.png": "not a readable image",
            "cut.jpg": "not a readable image", "zero.png": "empty file",
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
    monkeypatch.setattr(search.BatchSearch, "step", no_memory)
    code, _ = run_cli(tmp_path, "-seed", "0", "-batch_size", "4")
    err = capsys.readouterr().err
    assert code == 3  # nothing was searched
    assert "out of memory" in err and "try -batch_size 2" in err
    code, _ = run_cli(tmp_path, "-seed", "0", "-batch_size", "1", out="one")
    assert code == 3 and "try -precision bf16" in capsys.readouterr().err


def test_out_of_memory_after_some_results_names_the_searches_left_and_resume_finishes(tmp_path, monkeypatch, capsys):
    step = search.BatchSearch.step

    def memory_for_one(self, *args, **kwargs):
        if self.searches[0].attempt.job.name != "face0":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return step(self, *args, **kwargs)
    monkeypatch.setattr(search.BatchSearch, "step", memory_for_one)
    inputs = make_inputs(tmp_path / "in", count=3)
    code, out_dir = run_cli(tmp_path, "-seed", "0", "-steps", "2", inputs=inputs)
    assert code == 1  # some results written: inputs failed, not setup
    assert "not searched: face1, face2" in capsys.readouterr().err
    monkeypatch.setattr(search.BatchSearch, "step", step)
    assert run_cli(tmp_path, "-seed", "0", "-steps", "2", "-resume", inputs=inputs)[0] == 0
    assert sorted(p.name for p in out_dir.glob("face*.png")) == ["face0.png", "face1.png", "face2.png"]


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_a_stop_while_the_temporary_file_is_set_up_leaves_none(tmp_path, monkeypatch):
    """align_face.py stopped by SIGINT once left `.photo0_1.png.<random>.tmp.png`: the interrupt came
    between the temporary file's creation and the code that removes it."""
    def interrupted(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(files.os, "chmod", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.save_image(Image.new("RGB", (4, 4)), tmp_path / "face.png")
    assert not list(tmp_path.iterdir())


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


@pytest.mark.parametrize("signum, status", [
    pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow), (signal.SIGTERM, 143),
    pytest.param(signal.SIGHUP, 129, marks=pytest.mark.slow)])
def test_a_stop_signal_writes_the_best_image_so_far_and_exits_128_plus_its_number(tmp_path, signum, status):
    inputs = make_inputs(tmp_path / "in")
    out_dir = tmp_path / "out"
    progress = tmp_path / "out" / "face0" / "HR"
    proc = start_run(tmp_path, inputs, out_dir, "-seed", "0", "-steps", "100000", "-save_intermediate")
    wait_for(lambda: progress.exists() and len(list(progress.glob("*.png"))) >= 2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    (record,) = log_records(out_dir)
    assert record["interrupted"] is True and 2 <= record["steps"] < 100000
    assert len(record["trajectory"]) == record["steps"]
    assert Image.open(out_dir / "face0.png").size == (256, 256)
    assert "interrupted" in err.splitlines()[-1] and "Traceback" not in err


def test_a_stop_while_the_gif_is_encoded_keeps_the_finished_result(tmp_path, monkeypatch, capsys):
    def stopped(*_):
        raise KeyboardInterrupt  # what a signal raises while the GIF is written
    monkeypatch.setattr(folder_run.visuals.SearchGif, "save", stopped)
    code, out_dir = run_cli(tmp_path, "-seed", "0", "-steps", "3", "-gif")
    assert code == 130
    (record,) = log_records(out_dir)
    assert record["interrupted"] is False and record["steps"] == 3
    assert Image.open(out_dir / "face0.png").size == (256, 256)


def test_a_signal_while_results_are_written_waits_for_them(tmp_path, monkeypatch):
    record_result = folder_run.record_result

    def signalled_midway(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # handled inside the deferred block: noted, not raised
        return record_result(*args)
    monkeypatch.setattr(folder_run, "record_result", signalled_midway)
    code, out_dir = run_cli(tmp_path, "-seed", "0", "-steps", "2", inputs=make_inputs(tmp_path / "in", count=2))
    assert code == 143
    (record,) = log_records(out_dir)  # the first result is whole; the second search never started
    assert record["output"].endswith("face0.png") and (out_dir / "face0.png").exists()
    assert not (out_dir / "face1.png").exists()


@pytest.mark.slow
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


def test_resume_reruns_results_made_with_other_flags_and_says_so(tmp_path, capsys):
    inputs = make_inputs(tmp_path / "in", count=2)
    run_cli(tmp_path, "-seed", "4", "-steps", "2", inputs=inputs)
    (inputs / "face2.png").write_bytes((inputs / "face1.png").read_bytes())
    capsys.readouterr()
    code, out_dir = run_cli(tmp_path, "-seed", "4", "-steps", "3", "-resume", inputs=inputs)
    assert [r["steps"] for r in log_records(out_dir)] == [2, 2, 3, 3, 3]
    assert "0 result(s) already done, 3 to go, 2 of them redone because their flags or seed differ" in capsys.readouterr().out


def test_resume_without_seed_says_the_seed_comes_from_the_log(tmp_path, capsys):
    inputs = make_inputs(tmp_path / "in")
    run_cli(tmp_path, "-seed", "11", "-steps", "2", inputs=inputs)
    capsys.readouterr()
    code, _ = run_cli(tmp_path, "-steps", "2", "-resume", inputs=inputs)
    out = capsys.readouterr().out
    assert code == 0 and "seed 11 (from the resumed run's log)" in out and "drawn" not in out


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


def test_a_stop_says_what_was_written(tmp_path, monkeypatch, capsys):
    reporter, searched = folder_run.progress_reporter, set()

    def stopped_in_the_second_search(bar):
        report = reporter(bar)

        def hook(step):
            searched.add(step.rows[0].name)
            if len(searched) == 2 and step.number == 2:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it
            report(step)
        return hook
    monkeypatch.setattr(folder_run, "progress_reporter", stopped_in_the_second_search)
    code, out_dir = run_cli(tmp_path, "-seed", "0", "-steps", "4", inputs=make_inputs(tmp_path / "in", count=3))
    assert code == 130 and searched == {"face0", "face1"}
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted: 1 finished result(s) and the best image so far of 1 stopped search(es) written and logged; "
        "-resume finishes the rest")
    assert [r["interrupted"] for r in log_records(out_dir)] == [False, True]


def test_a_stop_before_any_search_says_nothing_was_written_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    def stopped_while_loading(**_):
        raise KeyboardInterrupt
    monkeypatch.setattr(folder_run, "load", stopped_while_loading)
    code, out_dir = run_cli(tmp_path, "-seed", "0")
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("nothing was written")
    assert not out_dir.exists()
