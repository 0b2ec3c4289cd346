"""The run log: typed records that survive a JSON round trip, and a file that stays whole when
many processes append to it at once."""
import json
import multiprocessing
import subprocess
import sys
import threading
import time

import pytest

from runkit import runlog
from conftest import ROOT, make_record


def append_many(log_path, writer, count):
    for i in range(count):
        # records of ~20 kB, far beyond what one write of a pipe or a page keeps whole
        runlog.append(log_path, make_record(seed=writer, base_seed=i, input="x" * (20000 + writer * 7 + i)))


def test_concurrent_appends_from_many_processes_leave_every_line_whole(tmp_path):
    log_path = tmp_path / runlog.LOG_NAME
    writers, per_writer = 4, 100
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=append_many, args=(log_path, w, per_writer)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert len(records) == writers * per_writer
    for w in range(writers):
        mine = [r for r in records if r["seed"] == w]
        assert [r["base_seed"] for r in mine] == list(range(per_writer))
        assert all(len(r["input"]) == 20000 + w * 7 + r["base_seed"] for r in mine)


@pytest.mark.skipif(runlog.fcntl is None, reason="no POSIX record locks on this system")
def test_an_append_waits_for_the_writer_that_holds_the_lock(tmp_path):
    log_path = tmp_path / runlog.LOG_NAME
    log_path.write_text("")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         f"f = open({str(log_path)!r}, 'a')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\n"
         "sys.stdin.readline()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    writer = threading.Thread(target=runlog.append, args=(log_path, make_record("a.png")))
    writer.start()
    time.sleep(1.0)
    assert writer.is_alive() and log_path.read_text() == ""  # blocked by the other process's lock
    holder.communicate("\n", timeout=30)
    writer.join(timeout=30)
    assert runlog.read(log_path) == [make_record("a.png")]


def test_a_line_cut_off_by_a_killed_writer_damages_only_itself(tmp_path, capsys):
    log_path = tmp_path / runlog.LOG_NAME
    runlog.append(log_path, make_record("a.png"))
    with open(log_path, "a") as f:
        f.write('{"output": "b.p')  # the writer died here
    runlog.append(log_path, make_record("c.png"))
    assert runlog.read(log_path) == [make_record("a.png"), make_record("c.png")]
    assert f"{log_path}:2 is not a JSON line" in capsys.readouterr().err


def test_a_record_survives_the_log_and_a_line_of_another_kind_is_named(tmp_path):
    log_path = tmp_path / runlog.LOG_NAME
    written = make_record("a.png", converged=True, args={"eps": 0.002, "loss_str": "100*L2"})
    runlog.append(log_path, written)
    with open(log_path, "a") as f:
        f.write('{"output": "b.png"}\n[1, 2]\n')
    problems = []
    assert runlog.read(log_path, problems) == [written]
    assert [p.split(" is ")[0] for p in problems] == [f"{log_path}:2", f"{log_path}:3"]
    assert all("not a run-log record" in p for p in problems)
    assert written.status == "converged"
    assert make_record(interrupted=True, steps=7).status == "NOT CONVERGED, interrupted after 7 steps"


def test_a_log_of_the_previous_version_is_read_with_the_default_noise_layers_of_today(tmp_path):
    settings = {"eps": 0.002, "bad_noise_layers": None}
    old = json.loads(make_record(args={"eps": 0.002, "bad_noise_layers": "17"}).to_json())
    (tmp_path / runlog.LOG_NAME).write_text(json.dumps(old) + "\n")
    (record,) = runlog.read(tmp_path / runlog.LOG_NAME)
    assert record.is_complete(settings)
    assert not make_record(args={"eps": 0.002, "bad_noise_layers": "3.5"}).is_complete(settings)
    assert not make_record(args=settings, interrupted=True).is_complete(settings)


def test_a_converged_result_whose_kept_image_is_above_eps_says_where_l2_reached_eps():
    """Converged means some step's L2 reached eps (where it is clamped); the image kept is the lowest
    TOTAL (2020), which GEOCROSS can put at a later step whose L2 is above eps: the line says so."""
    trajectory = [{"step": 1, "L2": 0.003, "TOTAL": 0.9}, {"step": 2, "L2": 0.002, "TOTAL": 0.8},
                  {"step": 3, "L2": 0.0021, "TOTAL": 0.7}]
    above = make_record(steps=3, best_step=3, losses=dict(trajectory[2]), converged=True, trajectory=trajectory)
    assert above.status == "converged" and above.eps_step == 2
    assert above.note == (" | L2 reached eps at step 2; the image kept is the lowest TOTAL (step 3), whose L2 "
                          "is above eps")
    at_eps = make_record(steps=3, best_step=2, losses=dict(trajectory[1]), converged=True, trajectory=trajectory)
    not_converged = make_record(steps=3, best_step=3, losses=dict(trajectory[2]), trajectory=trajectory)
    assert at_eps.note == not_converged.note == "" and not_converged.eps_step is None
