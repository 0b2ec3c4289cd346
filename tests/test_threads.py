"""The CPU threads: by default one per core that other processes leave free, looked at as each
search starts; fixed by -threads or OMP_NUM_THREADS; recorded in the run log."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

import PULSE
import run
from conftest import TINY_INPUT, TINY_MODEL
from runkit import cpu_threads

HZ = os.sysconf("SC_CLK_TCK")


@pytest.fixture(autouse=True)
def default_rule_restored(monkeypatch):
    """Each test here starts with no rule chosen (as a fresh process) and leaves the count as it was."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "_rule", None)
    monkeypatch.setattr(cpu_threads, "_free_cores", None)
    count = torch.get_num_threads()
    yield
    torch.set_num_threads(count)


class FakeMachine:
    """/proc/stat, the clock and this process's CPU time of a machine whose load a test sets."""

    def __init__(self, monkeypatch, tmp_path, cpus):
        self.stat, self.cpus, self.wall = tmp_path / "stat", cpus, 100.0
        self.ticks = {cpu: [0] * 8 for cpu in cpus}  # user nice system idle iowait irq softirq steal
        self.own = 0.0
        monkeypatch.setattr(cpu_threads, "PROC_STAT", self.stat)
        monkeypatch.setattr(cpu_threads, "niced_processes_yield", lambda: True)
        monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: set(cpus))
        monkeypatch.setattr(cpu_threads.time, "monotonic", lambda: self.wall)
        monkeypatch.setattr(cpu_threads.os, "times", lambda: os.times_result((self.own, 0, 0, 0, 0)))
        self.write()

    def write(self):
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{cpu} " + " ".join(map(str, t)) + " 0 0"
                                                for cpu, t in self.ticks.items()]
        self.stat.write_text("\n".join(lines) + "\n")

    def run(self, seconds, others_busy=(), niced_busy=(), own_busy=()):
        """`seconds` pass with the CPUs in others_busy kept busy by other processes, those in
        niced_busy by niced ones, those in own_busy by this process; the rest idle."""
        for cpu in self.cpus:
            column = 0 if cpu in others_busy or cpu in own_busy else 1 if cpu in niced_busy else 3
            self.ticks[cpu][column] += round(seconds * HZ)
        self.own += seconds * len(own_busy)
        self.wall += seconds
        self.write()


def look_after(free, machine, *loads):
    """The count a search starting now gets, after a reading of the clocks and then `loads`
    (FakeMachine.run's arguments) one after the other."""
    free.note()
    for load in loads:
        machine.run(**load)
    return free.threads_now()


def test_the_threads_follow_the_cores_that_other_processes_leave_free(monkeypatch, tmp_path):
    machine = FakeMachine(monkeypatch, tmp_path, cpus=[0, 1, 2, 3])
    free = cpu_threads.FreeCores(4)
    assert look_after(free, machine, dict(seconds=0.3, others_busy=[2])) == 3
    assert look_after(free, machine, dict(seconds=0.3, others_busy=[1, 2, 3], own_busy=[0])) == 1
    # our own threads take no core from us, and niced processes yield to ours
    assert look_after(free, machine, dict(seconds=0.3, own_busy=[0, 1, 2, 3])) == 4
    assert look_after(free, machine, dict(seconds=0.3, niced_busy=[0, 1, 2])) == 4
    assert look_after(free, machine, dict(seconds=0.3, others_busy=[0, 1, 2, 3])) == 1  # one at least


def test_niced_processes_take_cores_where_they_do_not_yield(monkeypatch, tmp_path):
    machine = FakeMachine(monkeypatch, tmp_path, cpus=[0, 1])
    monkeypatch.setattr(cpu_threads, "niced_processes_yield", lambda: False)
    free = cpu_threads.FreeCores(2)
    assert look_after(free, machine, dict(seconds=0.3, niced_busy=[1])) == 1


@pytest.mark.parametrize("autogroup, niceness, yields", [("0", 0, True), ("1", 0, False), ("0", 5, False)])
def test_niced_processes_yield_to_a_process_not_niced_without_autogroup(monkeypatch, tmp_path, autogroup,
                                                                        niceness, yields):
    (tmp_path / "autogroup").write_text(autogroup + "\n")
    monkeypatch.setattr(cpu_threads, "AUTOGROUP", tmp_path / "autogroup")
    monkeypatch.setattr(cpu_threads.os, "nice", lambda increment: niceness)
    cpu_threads.niced_processes_yield.cache_clear()
    try:
        assert cpu_threads.niced_processes_yield() is yields
    finally:
        cpu_threads.niced_processes_yield.cache_clear()


def test_a_process_busy_less_than_half_the_time_takes_no_core(monkeypatch, tmp_path):
    machine = FakeMachine(monkeypatch, tmp_path, cpus=[0, 1])
    free = cpu_threads.FreeCores(2)
    assert look_after(free, machine, dict(seconds=0.15, others_busy=[1]), dict(seconds=0.25)) == 2  # 0.375 core
    assert look_after(free, machine, dict(seconds=0.25, others_busy=[1]), dict(seconds=0.2)) == 1  # 0.56 core


def test_a_look_sees_the_last_moments_not_the_whole_run(monkeypatch, tmp_path):
    machine = FakeMachine(monkeypatch, tmp_path, cpus=[0, 1])
    free = cpu_threads.FreeCores(2)
    machine.run(60.0)  # a minute idle, then a reading, then another process takes a core
    assert look_after(free, machine, dict(seconds=0.3, others_busy=[1])) == 1
    free.note()  # the reading a quarter second later, and the next one too young to compare with
    machine.run(0.3)
    assert look_after(free, machine, dict(seconds=0.1)) == 2


def test_the_first_look_of_a_process_waits_for_a_window(monkeypatch, tmp_path):
    machine = FakeMachine(monkeypatch, tmp_path, cpus=[0, 1])
    free = cpu_threads.FreeCores(2)
    machine.run(0.1, others_busy=[1])
    waits = []
    monkeypatch.setattr(cpu_threads.time, "sleep", lambda s: (waits.append(s), machine.run(s, others_busy=[1])))
    assert free.threads_now() == 1 and waits == [pytest.approx(cpu_threads.CHECK_SECONDS - 0.1)]


def test_set_threads_fixes_the_count_or_follows_the_free_cores(monkeypatch):
    assert cpu_threads.set_threads(1) == 1 and cpu_threads._free_cores is None
    assert "fixed at 1" in cpu_threads.rule()
    assert cpu_threads.set_threads() == cpu_threads.physical_cores()
    assert cpu_threads._free_cores is not None and "free core" in cpu_threads.rule()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads.set_threads() == 1 and "OMP_NUM_THREADS" in cpu_threads.rule()
    assert cpu_threads._free_cores is None


def test_the_library_sets_the_default_unless_the_process_chose(monkeypatch):
    cpu_threads.set_default()
    assert cpu_threads._free_cores is not None  # a notebook that chose nothing follows the free cores
    cpu_threads.set_threads(1)
    PULSE.load(cache_dir=str(TINY_MODEL))
    assert torch.get_num_threads() == 1 and "fixed at 1" in cpu_threads.rule()


def test_a_search_starts_with_the_count_of_the_free_cores(monkeypatch):
    cpu_threads.set_threads()
    monkeypatch.setattr(cpu_threads._free_cores, "threads_now", lambda: 1)
    model = PULSE.load(cache_dir=str(TINY_MODEL))
    counts = []
    model.upsample(str(TINY_INPUT), seed=0, steps=2, on_step=lambda step: counts.append(torch.get_num_threads()))
    assert counts == [1, 1]


def test_the_log_records_the_count_and_the_rule(tmp_path):
    out = tmp_path / "out"
    assert run.main(["-cache_dir", str(TINY_MODEL), "-input_dir", str(TINY_INPUT.parent), "-output_dir", str(out),
                     "-seed", "0", "-steps", "2", "-threads", "1"]) == 0
    (record,) = [json.loads(line) for line in (out / "pulse_log.jsonl").read_text().splitlines()]
    assert record["threads"] == 1 and record["thread_rule"].startswith("fixed at 1 (-threads); idle threads")


@pytest.mark.skipif(not os.path.exists("/proc/stat") or cpu_threads.physical_cores() < 2,
                    reason="needs Linux's /proc/stat and two cores")
def test_a_real_busy_process_takes_a_core(tmp_path):
    free = cpu_threads.FreeCores(cpu_threads.physical_cores())
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)  # started
        free.note()
        time.sleep(2 * cpu_threads.CHECK_SECONDS)
        assert free.threads_now() <= cpu_threads.physical_cores() - 1
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.slow  # 13 s
@pytest.mark.skipif(not os.path.exists("/proc/stat") or cpu_threads.physical_cores() < 2,
                    reason="needs Linux's /proc/stat and two cores")
def test_bench_busy_times_each_configuration_beside_its_own_busy_core(tmp_path):
    import bench
    out = tmp_path / "bench.json"
    assert bench.main(["-generator", "dcgan", "-steps", "1", "-batch_sizes", "1", "-no_drift", "-busy",
                       "-json", str(out)]) == 0
    report = json.loads(out.read_text())
    cores = cpu_threads.physical_cores()
    busy = {row["name"]: row for row in report["busy"]}
    assert set(busy) == {t["name"] for t in report["timings"]} | {f"default, threads fixed at {cores} (before)"}
    assert busy["default"]["threads"] <= cores - 1
    assert busy[f"default, threads fixed at {cores} (before)"]["threads"] == cores
    assert all(row["busy_over_idle"] > 0 for row in busy.values())
    assert "free core" in report["thread_rule"]
