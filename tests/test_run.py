"""run.py end to end on the tiny model: seeds, duplicates, batches, outputs and the run log."""
import io
import os
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tqdm import tqdm

import folder_run
from conftest import ROOT, TINY_INPUT, TINY_MODEL, log_records, make_inputs, pixels, run_cli

try:
    import fcntl
    import termios
except ImportError:  # Windows
    termios = None


def test_seed_zero_is_a_seed(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    runs = [run_cli(tmp_path, "-seed", seed, "-steps", "3", inputs=inputs, out=f"out{i}")[1]
            for i, seed in enumerate(["0", "0", "1"])]
    first, again, other = (pixels(d / "face0.png") for d in runs)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert log_records(runs[0])[0]["seed"] == 0


def test_without_seed_one_is_drawn_and_logged(tmp_path, capsys):
    code, out_dir = run_cli(tmp_path, "-steps", "2")
    assert code == 0
    seed = log_records(out_dir)[0]["seed"]
    assert isinstance(seed, int) and f"seed {seed} (drawn" in capsys.readouterr().out


def test_duplicates_use_consecutive_seeds_and_match_single_runs(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    _, dup_dir = run_cli(tmp_path, "-seed", "3", "-duplicates", "2", "-steps", "3", inputs=inputs, out="dup")
    _, single_dir = run_cli(tmp_path, "-seed", "4", "-steps", "3", inputs=inputs, out="single")
    assert sorted(p.name for p in dup_dir.glob("*.png")) == ["face0_1.png", "face0_2.png"]
    assert [r["seed"] for r in log_records(dup_dir)] == [3, 4]
    assert np.array_equal(pixels(dup_dir / "face0_2.png"), pixels(single_dir / "face0.png"))
    assert not np.array_equal(pixels(dup_dir / "face0_1.png"), pixels(dup_dir / "face0_2.png"))


def test_a_batch_of_two_equals_two_batches_of_one(tmp_path):
    inputs = make_inputs(tmp_path / "in", count=2)
    flags = ["-seed", "7", "-steps", "6", "-precision", "fp64"]
    _, batched = run_cli(tmp_path, *flags, "-batch_size", "2", inputs=inputs, out="b2")
    _, alone = run_cli(tmp_path, *flags, "-batch_size", "1", inputs=inputs, out="b1")
    for got, want in zip(log_records(batched), log_records(alone)):
        assert got["best_step"] == want["best_step"]
        for g, w in zip(got["trajectory"], want["trajectory"]):
            assert g == pytest.approx(w, rel=1e-9)
    for name in ("face0.png", "face1.png"):
        assert np.abs(pixels(batched / name) - pixels(alone / name)).max() <= 1


def test_last_batch_may_be_smaller(tmp_path):
    code, out_dir = run_cli(tmp_path, "-seed", "0", "-steps", "2", "-batch_size", "2",
                            inputs=make_inputs(tmp_path / "in", count=3))
    assert code == 0 and len(log_records(out_dir)) == 3


def test_log_record_holds_the_whole_search(tmp_path):
    _, out_dir = run_cli(tmp_path, "-seed", "1", "-steps", "5", "-precision", "fp64")
    (record,) = log_records(out_dir)
    assert {"input", "output", "seed", "device", "steps", "best_step", "losses", "converged",
            "seconds", "args", "trajectory"} <= set(record)
    assert record["device"] == "cpu" and record["args"]["precision"] == "fp64"
    assert [t["step"] for t in record["trajectory"]] == [1, 2, 3, 4, 5]
    totals = [t["TOTAL"] for t in record["trajectory"]]
    assert record["best_step"] == 1 + totals.index(min(totals))
    assert record["losses"]["TOTAL"] == min(totals)
    assert set(record["losses"]) == {"L2", "GEOCROSS", "TOTAL"}


# The keys of a log line and of its args, as run.py wrote them before the API's Result became what
# the log writes (plot_log.py, sweep.py and -resume read them, from old logs too), and ended and thread_rule since.
LOG_KEYS = ["input", "output", "seed", "base_seed", "device", "threads", "steps", "best_step", "losses", "converged",
            "interrupted", "seconds", "args", "trajectory", "tries", "stopped_at", "ended", "thread_rule"]
ARGS_KEYS = ["input_dir", "output_dir", "save_intermediate", "resume", "strip", "gif", "hr_dir", "seed", "duplicates",
             "batch_size", "network", "cache_dir", "keep_pickle", "precision", "speedups", "compile", "loss_str",
             "eps", "noise_type", "num_trainable_noise_layers", "tile_latent", "bad_noise_layers", "opt_name",
             "learning_rate", "steps", "lr_schedule", "tries", "stop_at_eps", "patience", "max_steps", "recipe"]


def test_a_log_line_is_the_apis_result_with_the_runs_own_fields(tmp_path):
    """Every key a line always had, each value the API's Result's, or the run's (its output, seed,
    device, threads and flags)."""
    import torch
    import PULSE
    from conftest import TINY_MODEL
    flags = ["-seed", "3", "-steps", "2", "-duplicates", "2", "-tries", "2", "-eps", "1e-9", "-precision", "fp64"]
    _, out_dir = run_cli(tmp_path, *flags)
    lines = log_records(out_dir)
    model = PULSE.load(cache_dir=TINY_MODEL, precision="fp64")
    results = model.upsample(tmp_path / "in" / "face0.png", seed=3, steps=2, duplicates=2, tries=2, eps=1e-9)
    for k, (line, result) in enumerate(zip(lines, results), start=1):
        assert sorted(line) == sorted(LOG_KEYS) and list(line["args"]) == ARGS_KEYS
        assert line["output"] == str(out_dir / f"face0_{k}.png") and line["base_seed"] == 3
        assert (line["device"], line["threads"]) == ("cpu", torch.get_num_threads())
        assert line["args"] == {**line["args"], "seed": 3, "duplicates": 2, "steps": 2, "tries": 2, "eps": 1e-9,
                                "precision": "fp64", "loss_str": "100*L2+0.05*GEOCROSS", "speedups": True}
        for key in ("input", "seed", "steps", "best_step", "losses", "converged", "interrupted", "trajectory",
                    "tries", "stopped_at", "ended"):
            assert line[key] == getattr(result, key), key
        assert line["input"] == str(tmp_path / "in" / "face0.png") and line["tries"][0]["seed"] == 3 + k - 1


def test_l2_is_reported_even_when_the_loss_leaves_it_out(tmp_path):
    _, out_dir = run_cli(tmp_path, "-seed", "1", "-steps", "2", "-loss_str", "1*L1")
    (record,) = log_records(out_dir)
    assert set(record["trajectory"][0]) == {"step", "L1", "L2", "TOTAL"}


def test_text_flags_are_parsed_once_and_logged_as_written(tmp_path, monkeypatch):
    import parsed_text
    import settings  # noqa: F401 (the 2020 default is parsed once, as settings.py is imported)
    parsed = []
    parse_terms = parsed_text.parse_terms
    monkeypatch.setattr(parsed_text, "parse_terms", lambda text: parsed.append(text) or parse_terms(text))
    written = {"loss_str": "100*L2 + 0.05*GEOCROSS", "bad_noise_layers": "3.5"}
    code, out_dir = run_cli(tmp_path, "-seed", "1", "-steps", "2", "-duplicates", "2",
                            *(f"-{name}={text}" for name, text in written.items()))
    assert code == 0 and parsed == [written["loss_str"]]  # not again per search, nor to log it
    for record in log_records(out_dir):
        assert {name: record["args"][name] for name in written} == written
    parsed.clear()
    code, _ = run_cli(tmp_path, "-seed", "1", "-steps", "2", "-duplicates", "2", "-resume",
                      *(f"-{name}={text}" for name, text in written.items()), inputs=tmp_path / "in")
    assert code == 0 and parsed == [written["loss_str"]]  # nor to compare with the log's flags


def test_unreached_eps_still_writes_the_best_image_flagged_not_converged(tmp_path, capsys):
    code, out_dir = run_cli(tmp_path, "-seed", "1", "-steps", "3", "-eps", "1e-12")
    assert code == 0 and (out_dir / "face0.png").exists()
    assert log_records(out_dir)[0]["converged"] is False
    assert "NOT CONVERGED" in capsys.readouterr().out


def test_save_intermediate_writes_every_step_for_every_sample(tmp_path):
    _, out_dir = run_cli(tmp_path, "-seed", "0", "-steps", "3", "-batch_size", "2", "-save_intermediate",
                         inputs=make_inputs(tmp_path / "in", count=2))
    for name in ("face0", "face1"):
        hr = sorted((out_dir / name / "HR").iterdir())
        lr = sorted((out_dir / name / "LR").iterdir())
        assert [p.name for p in hr] == [f"{name}_{k}.png" for k in (1, 2, 3)]
        assert Image.open(hr[0]).size == (256, 256) and Image.open(lr[0]).size == (16, 16)
    # the last intermediate HR image is the best image, which is the result
    assert np.array_equal(pixels(out_dir / "face0" / "HR" / "face0_3.png"), pixels(out_dir / "face0.png"))


@pytest.mark.parametrize("mode, suffix", [("RGBA", ".png"), ("L", ".png"), ("RGB", ".jpg"),
                                          ("RGB", ".webp"), ("P", ".png")])
def test_common_formats_and_modes_are_read_as_rgb(tmp_path, mode, suffix):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(TINY_INPUT).convert(mode).save(folder / f"face{suffix}")
    code, out_dir = run_cli(tmp_path, "-seed", "0", "-steps", "2", inputs=folder)
    assert code == 0 and Image.open(out_dir / "face.png").mode == "RGB"


@pytest.mark.parametrize("flag, value, message", [
    ("-loss_str", "100*L3", "unknown loss 'L3'"),
    ("-loss_str", "100*L2+", "bad term"),
    ("-loss_str", "a*L2", "bad weight 'a'"),
    ("-noise_type", "random", "invalid choice"),
    ("-opt_name", "lbfgs", "invalid choice"),
    ("-lr_schedule", "cosine", "invalid choice"),
    ("-steps", "0", "must be a whole number of at least 1, got 0"),
    ("-steps", "abc", "argument -steps/--steps: must be a whole number, got 'abc'"),
    ("-seed", "1.5", "argument -seed/--seed: must be a whole number, got '1.5'"),
    ("-eps", "abc", "argument -eps/--eps: must be a number, got 'abc'"),
    ("-batch_size", "0", "must be a whole number of at least 1, got 0"),
    ("-duplicates", "0", "must be a whole number of at least 1, got 0"),
    ("-eps", "-1", "must be a finite number of 0 or more"),
    ("-eps", "inf", "must be a finite number of 0 or more"),
    ("-eps", "nan", "must be a finite number of 0 or more"),
    ("-learning_rate", "0", "must be a finite number above 0"),
    ("-bad_noise_layers", "99", "this model's noise layers are 0..13, not 99"),
    ("-bad_noise_layers", "3.14.17", "not 14, 17"),
    ("-bad_noise_layers", "3,5", "dot-separated list"),
    ("-num_trainable_noise_layers", "15", "this model has 14 layers"),
])
def test_bad_flag_values_are_rejected_with_the_reason(tmp_path, capsys, flag, value, message):
    # argparse refuses a value on its own; a value out of the loaded model's range is refused after loading
    try:
        code, _ = run_cli(tmp_path, flag, value)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    printed = capsys.readouterr()
    assert message in printed.err and flag in printed.err
    assert printed.out == ""  # refused before the run starts: no seed line, no input read
    assert not (tmp_path / "out").exists()  # nothing written, not even the output folder


def test_choices_are_listed_for_a_bad_choice(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(tmp_path, "-opt_name", "lbfgs")
    assert "'sgd', 'adam', 'sgdm', 'adamax'" in capsys.readouterr().err


def test_the_bar_shows_each_search_with_its_own_clock():
    bar = tqdm(total=3, file=io.StringIO())
    report = folder_run.progress_reporter(bar)

    def step(name, attempt, number):  # what the bar reads of a step: its first row's search and the losses
        return SimpleNamespace(number=number, rows=[SimpleNamespace(name=name, attempt=attempt)],
                               losses={"L2": torch.tensor([0.1])})
    report(step("face0", 1, 1))
    bar.start_t = 0  # as if the search had started long ago
    report(step("face0", 1, 2))
    assert bar.start_t == 0 and bar.n == 2
    report(step("face0", 2, 1))  # its next try
    assert bar.start_t > 0 and bar.n == 1
    bar.start_t = 0
    report(step("face1", 1, 1))  # the next face
    assert bar.start_t > 0


def run_on_a_terminal(tmp_path, input_dir, *flags):
    """run.py in a process whose stderr is a terminal (a pseudo-terminal): what the terminal showed."""
    terminal, its_end = os.openpty()
    fcntl.ioctl(its_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a window's size: tqdm draws in it
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-cache_dir", str(TINY_MODEL), "-input_dir",
                                str(input_dir), "-output_dir", str(tmp_path / "out"), "-seed", "0", *flags],
                               stdout=subprocess.DEVNULL, stderr=its_end)
    os.close(its_end)
    shown = b""
    while True:  # read as it comes (a terminal holds little), until the process closes its end
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # Linux: EIO once no process holds the other end
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert process.wait(timeout=300) in (0, 1)
    return shown.decode().replace("\r\n", "\n")  # a terminal ends its lines with \r\n


@pytest.mark.skipif(termios is None, reason="needs a pseudo-terminal (POSIX)")
def test_a_bar_is_drawn_on_a_terminal_for_a_search_and_not_for_a_run_without_one(tmp_path):
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "face.png").write_bytes(b"not a png")
    shown = run_on_a_terminal(tmp_path, unreadable)
    assert "error:" in shown and "\r" not in shown  # no bar drawn and erased
    assert "\r" in run_on_a_terminal(tmp_path, TINY_INPUT.parent, "-steps", "2")


def test_a_redirected_run_draws_no_bar_and_counts_its_searches(tmp_path, capsys):
    inputs = make_inputs(tmp_path / "in", count=2)
    assert run_cli(tmp_path, "-seed", "0", "-steps", "2", "-tries", "3", "-eps", "1e-9", inputs=inputs)[0] == 0
    out, err = capsys.readouterr()
    assert "2 input(s), 2 result(s) from 6 search(es), 0 input(s) failed" in out
    assert "\r" not in err  # captured, as a file: no bar, no line of refreshes
