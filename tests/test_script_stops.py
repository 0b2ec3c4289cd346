"""Every script stopped by a signal at any moment, its imports included: one line, no traceback, 128+N.

The scripts run as subprocesses and get real signals. The moment "during the imports" is made
exact by watching /proc/<pid>/status: a script's first line installs quiet_stop's handlers (the
kernel then lists SIGTERM among the caught signals), and torch and the rest load after it.
"""
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from skimage.data import astronaut

from runkit import quiet_stop
from conftest import ROOT

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status (Linux)")

SCRIPTS = ["run.py", "align_face.py", "convert_weights.py", "evaluate.py", "plot_log.py", "sweep.py", "bench.py", "app.py"]
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
# What makes a script load torch and the rest: --help, except where --help needs no torch (then
# a missing folder or file, which it finds only after the imports: a stop that comes too late fails).
LOADING = {"run.py": ["-input_dir", "no_such_folder"], "evaluate.py": ["no_such_folder"],
           "sweep.py": ["-grid", "steps=1", "-input_dir", "no_such_folder"], "app.py": ["-network", "no_such_file.pkl"],
           "align_face.py": ["-input_dir", "no_such_folder"]}


def start(script, *args, **popen):
    return subprocess.Popen([sys.executable, script, *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def caught_signals(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return {signum for signum in quiet_stop.STOP_SIGNALS if mask >> (signum - 1) & 1}


def wait_for(condition, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def assert_stopped_in_one_line(proc, signum, send=None):
    (send or proc.send_signal)(signum)
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == STATUS[signum], err
    assert "Traceback" not in err, err
    assert lines and "interrupted" in lines[-1] and len(lines[-1]) < 200, err
    return err


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("signum, delay", [(signal.SIGINT, 0), (signal.SIGINT, 0.2), (signal.SIGTERM, 0)])
def test_a_stop_while_the_script_loads_is_one_line(script, signum, delay):
    """`--help` (LOADING) would print and exit 0 once the imports are done: a stop that came too late fails."""
    if script == "app.py" and importlib.util.find_spec("gradio") is None:
        pytest.skip("without its extra app.py loads nothing: it says so and exits 3 at once")
    proc = start(script, *LOADING.get(script, ["--help"]))
    wait_for(lambda: signal.SIGTERM in caught_signals(proc.pid), proc)
    time.sleep(delay)
    assert_stopped_in_one_line(proc, signum)


def test_a_stop_while_faces_are_aligned_is_one_line_and_leaves_no_partial_file(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    for i in range(6):
        Image.fromarray(astronaut()).save(photos / f"photo{i}.png")
    proc = start("align_face.py", "-input_dir", photos, "-output_dir", out, "-cache_dir", tmp_path / "cache")
    wait_for(lambda: out.exists() and any(out.glob("photo*_0.png")), proc)
    assert_stopped_in_one_line(proc, signal.SIGINT)
    assert not list(out.glob(".*.tmp*"))  # the file being written when it stopped is removed


@pytest.mark.slow
def test_a_stop_while_the_bench_times_is_one_line():
    proc = start("bench.py", "-resolution", "32", "-steps", "100000", "-batch_sizes", "1", "-processes", "1",
                 "-no_drift")
    wait_for(lambda: proc.stderr.readline().startswith("timing:"), proc)
    assert_stopped_in_one_line(proc, signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_bench_and_its_workers_in_one_line():
    """A terminal's Ctrl-C reaches the whole process group: the workers, still loading torch, too."""
    proc = start("bench.py", "-resolution", "32", "-steps", "1", "-batch_sizes", "1", "-processes", "1", "2",
                 "-no_drift", start_new_session=True)
    wait_for(lambda: proc.stderr.readline().startswith("timing: 2 processes"), proc)
    time.sleep(1)
    err = assert_stopped_in_one_line(proc, signal.SIGINT, send=lambda signum: os.killpg(proc.pid, signum))
    assert err.count("interrupted") == 1


def test_stop_signals_hand_back_to_the_quiet_stop_not_to_pythons_default():
    previous = {signum: signal.getsignal(signum) for signum in quiet_stop.STOP_SIGNALS}
    try:
        quiet_stop.install()
        with quiet_stop.StopSignals() as stop:
            assert signal.getsignal(signal.SIGINT) == stop._handle
        assert all(signal.getsignal(signum) == quiet_stop.stop for signum in quiet_stop.STOP_SIGNALS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_the_quiet_stop_says_one_line_and_exits_128_plus_the_signal(capsys):
    previous = {signum: signal.getsignal(signum) for signum in quiet_stop.STOP_SIGNALS}
    try:
        with pytest.raises(SystemExit) as stopped:
            quiet_stop.stop(signal.SIGTERM, None)
        assert stopped.value.code == 143 and capsys.readouterr().err == "interrupted\n"
        assert signal.getsignal(signal.SIGINT) == quiet_stop.leave_at_once  # a repeat does not wait
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_stop_knows_when_it_lands_inside_an_import(tmp_path, monkeypatch):
    """Inside an import the stop leaves at once: unwinding a C extension's half-done start can abort."""
    (tmp_path / "probe_module.py").write_text(
        "import sys\nfrom runkit import quiet_stop\nINSIDE = quiet_stop.importing(sys._getframe())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import probe_module
    assert probe_module.INSIDE is True
    assert quiet_stop.importing(sys._getframe()) is False
