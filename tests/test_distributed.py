"""A folder over several processes with torchrun (gloo on the CPU): the same results as one process."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runkit import distributed
from conftest import ROOT, TINY_MODEL, log_records, make_inputs, pixels, wait_for

INPUTS, DUPLICATES = 5, 2
FLAGS = ["-seed", "3", "-duplicates", str(DUPLICATES), "-precision", "fp64", "-steps", "12", "-threads", "1"]
OUTPUTS = [f"face{i}_{k}.png" for i in range(INPUTS) for k in range(1, DUPLICATES + 1)]


# ---- the launch and the shares ---------------------------------------------------------------

def test_without_torchrun_variables_a_process_runs_alone():
    assert distributed.launch_from_environment({}) == distributed.Launch(rank=0, local_rank=None, world_size=1)


def test_torchrun_variables_give_rank_local_rank_and_world_size():
    launch = distributed.launch_from_environment({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"})
    assert launch == distributed.Launch(rank=5, local_rank=1, world_size=8)


@pytest.mark.parametrize("environ, message", [
    ({"WORLD_SIZE": "2"}, "RANK and LOCAL_RANK not"),
    ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
    ({"RANK": "-1", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "RANK='-1'"),
    ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "not below WORLD_SIZE=2"),
])
def test_bad_launch_variables_are_an_error(environ, message):
    with pytest.raises(distributed.TeamError, match=message):
        distributed.launch_from_environment(environ)


@pytest.mark.parametrize("count", [0, 1, 5, 10, 11])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 8])
def test_the_shares_of_all_ranks_cover_every_search_exactly_once(count, size):
    items = list(range(count))
    shares = [distributed.Team(distributed.Launch(rank, rank, size), None).share(items) for rank in range(size)]
    assert [item for share in shares for item in share] == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_team_of_one_is_a_plain_process():
    import torch
    with distributed.Team(distributed.Launch(), torch.device("cpu")) as team:
        assert not team.is_multi and team.is_main
        assert team.from_main([4, 5]) == [4, 5] and team.main_first(lambda: "set up") == "set up"
        assert team.tag("error: x") == "error: x"
        team.count("results", 3)
        assert team.counts("results") == [3] and team.counts("searches") == [0]
        team.finish()


# ---- torchrun jobs on the tiny model ---------------------------------------------------------

def run_flags(inputs, out_dir, *flags):
    return ["-input_dir", str(inputs), "-output_dir", str(out_dir), "-cache_dir", str(TINY_MODEL), *FLAGS, *flags]


def start(processes, script, *args):
    """One process (python), or a torchrun job of `processes`, in a session of its own."""
    launcher = ([sys.executable] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)])
    return subprocess.Popen([*launcher, str(script), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


def run_job(processes, inputs, out_dir, *flags):
    proc = start(processes, ROOT / "run.py", *run_flags(inputs, out_dir, *flags))
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("in"), count=INPUTS)


@pytest.fixture(scope="module")
def single_run(inputs, tmp_path_factory):
    """The reference: the whole folder in one process."""
    out_dir = tmp_path_factory.mktemp("single")
    code, _, err = run_job(1, inputs, out_dir, "-strip")
    assert code == 0, err
    return out_dir


def assert_same_outputs(out_dir, reference):
    assert sorted(p.name for p in out_dir.glob("face*_?.png")) == OUTPUTS
    for name in OUTPUTS:
        assert np.array_equal(pixels(out_dir / name), pixels(reference / name)), name


def complete_records(out_dir):
    return [r for r in log_records(out_dir) if not r["interrupted"]]


@pytest.mark.slow
def test_two_processes_make_every_output_once_equal_to_one_process(inputs, single_run, tmp_path):
    out_dir = tmp_path / "two"
    code, out, err = run_job(2, inputs, out_dir, "-strip")
    assert code == 0, err
    assert_same_outputs(out_dir, single_run)
    lines = (out_dir / "pulse_log.jsonl").read_text().splitlines()
    assert len(lines) == 10
    records = log_records(out_dir)
    assert sorted(r["output"] for r in records) == sorted(str(out_dir / name) for name in OUTPUTS)
    want = {Path(r["output"]).name: r for r in log_records(single_run)}
    for record in records:  # float64: strictly equal, seed for seed
        reference = want[Path(record["output"]).name]
        assert (record["seed"], record["trajectory"]) == (reference["seed"], reference["trajectory"])
    for i in range(INPUTS):  # rank 0 drew every strip, with duplicates from both ranks
        assert np.array_equal(pixels(out_dir / f"face{i}_strip.png"), pixels(single_run / f"face{i}_strip.png"))
    assert "10 result(s) from 10 search(es) on 2 processes" in out
    assert "\r" not in err  # no progress bars on a stderr that is not a terminal


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_resume_with_another_process_count_does_only_what_is_missing(inputs, single_run, tmp_path, first, then):
    out_dir = tmp_path / "out"
    log = out_dir / "pulse_log.jsonl"
    killed = start(first, ROOT / "run.py", *run_flags(inputs, out_dir))
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, timeout=300)
    os.killpg(killed.pid, signal.SIGKILL)  # a crash of the whole job: no chance to clean up
    killed.communicate()
    done_before = len(complete_records(out_dir))
    assert 2 <= done_before < 10

    code, out, err = run_job(then, inputs, out_dir, "-resume")
    assert code == 0, err
    assert f"resuming: {done_before} result(s) already done, {10 - done_before} to go" in out
    outputs = [r["output"] for r in complete_records(out_dir)]
    assert sorted(outputs) == sorted(str(out_dir / name) for name in OUTPUTS)  # each exactly once
    assert_same_outputs(out_dir, single_run)


@pytest.mark.slow
def test_a_bad_input_is_reported_once_and_every_good_result_is_made(single_run, tmp_path):
    inputs = make_inputs(tmp_path / "in", count=INPUTS)
    (inputs / "notes.png").write_text("this is not an image")
    out_dir = tmp_path / "out"
    code, _, err = run_job(2, inputs, out_dir)
    assert code != 0
    (line,) = [l for l in err.splitlines() if "notes.png" in l and "error" in l]
    assert line.startswith("rank 0: error: ") and "not a readable image" in line
    assert_same_outputs(out_dir, single_run)


@pytest.mark.slow
def test_a_rank_out_of_memory_leaves_the_other_ranks_results(inputs, single_run, tmp_path):
    out_dir = tmp_path / "out"
    proc = start(2, ROOT / "tests" / "team_worker.py", "oom_on_rank_1", *run_flags(inputs, out_dir))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "rank 1: error: out of memory on cpu" in err
    rank_0_share = OUTPUTS[:5]
    assert sorted(r["output"] for r in complete_records(out_dir)) == [str(out_dir / n) for n in rank_0_share]
    for name in rank_0_share:
        assert np.array_equal(pixels(out_dir / name), pixels(single_run / name))

    code, out, err = run_job(1, inputs, out_dir, "-resume")  # then only rank 1's share is run
    assert code == 0, err
    assert "resuming: 5 result(s) already done, 5 to go" in out
    assert_same_outputs(out_dir, single_run)


@pytest.mark.slow
def test_setup_runs_on_rank_0_while_the_others_wait(tmp_path):
    record = tmp_path / "setup.txt"
    proc = start(2, ROOT / "tests" / "team_worker.py", "main_first", str(record))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert record.read_text().split("\n")[:4] == ["start 0", "end 0", "start 1", "end 1"]


@pytest.mark.slow
def test_a_setup_failure_on_rank_0_stops_every_rank_with_a_message(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "synthesis.pt").write_bytes(b"not a model")
    inputs = make_inputs(tmp_path / "in")
    proc = start(2, ROOT / "run.py", "-input_dir", str(inputs), "-output_dir", str(tmp_path / "out"),
                 "-cache_dir", str(cache))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "rank 0: error: " in err and "synthesis.pt" in err
    assert "rank 1: error: setup failed on rank 0 (see its message)" in err


# ---- bench.py -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_bench_reports_searches_per_hour_by_process_count_and_batch_size(tmp_path, capsys):
    import bench
    out = tmp_path / "bench.json"
    assert bench.main(["-steps", "1", "-batch_sizes", "1", "2", "-resolution", "64", "-no_drift",
                       "-processes", "1", "2", "-threads", "2", "-json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["processes"], r["batch"]): r for r in report["throughput"]}
    assert sorted(rows) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [rows[2, b]["threads_per_process"] for b in (1, 2)] == [1, 1]  # the 2 threads split
    timings = {t["name"]: t for t in report["timings"]}
    for batch, name in ((1, "default"), (2, "default, batch 2")):  # one process: the timed default search
        seconds = timings[name]["seconds_per_step"]  # rounded to 4 decimals in the report
        per_hour = 3600 * batch / (seconds * bench.STEPS_PER_FACE)
        rounding = per_hour * 0.5e-4 / seconds + 0.005  # of seconds here, of searches per hour there
        assert rows[1, batch]["searches_per_hour"] == pytest.approx(per_hour, abs=rounding)
        assert timings[name]["searches_per_hour"] == rows[1, batch]["searches_per_hour"]
    assert rows[1, 1]["speedup"] == 1 and all(r["searches_per_hour"] > 0 for r in rows.values())
    ratio = rows[2, 2]["searches_per_hour"] / rows[1, 1]["searches_per_hour"]
    assert rows[2, 2]["speedup"] == pytest.approx(ratio, rel=0.02)
    assert "searches/h" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("signal_number, to_whole_group", [
    (signal.SIGINT, True),  # Ctrl-C in a terminal: torchrun and every rank get it
    (signal.SIGTERM, True),  # Slurm's preemption: to every process of the job, then again from torchrun
    (signal.SIGTERM, False),  # to torchrun alone, which passes it on
])
def test_a_stopped_job_writes_every_ranks_best_so_far(inputs, tmp_path, signal_number, to_whole_group):
    out_dir = tmp_path / "out"
    job = start(2, ROOT / "run.py", *run_flags(inputs, out_dir, "-steps", "100000", "-save_intermediate"))
    first_of_each_share = ("face0_1", "face2_2")
    wait_for(lambda: all(len(list((out_dir / name / "HR").glob("*.png"))) >= 2 for name in first_of_each_share),
             timeout=300)
    if to_whole_group:
        os.killpg(job.pid, signal_number)
    else:
        job.send_signal(signal_number)
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0
    records = log_records(out_dir)
    assert sorted(r["output"] for r in records) == [str(out_dir / f"{name}.png") for name in first_of_each_share]
    for record in records:
        assert record["interrupted"] is True and 2 <= record["steps"] < 100000
        assert (out_dir / Path(record["output"]).name).exists()
    assert "rank 0: interrupted" in err and "rank 1: interrupted" in err


def test_in_a_job_a_repeated_stop_signal_does_not_cut_the_saving_short():
    from runkit import quiet_stop
    with quiet_stop.StopSignals(repeat_leaves=False) as stop:
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGTERM, None)  # from Slurm: the search ends with its best so far
        stop._handle(signal.SIGTERM, None)  # the same stop, passed on by torchrun: ignored, no exit
        assert stop.exit_status == 143
