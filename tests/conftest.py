import http.server
import json
import logging
import os
import sys
import threading
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))


def pytest_addoption(parser):
    parser.addoption("--screenshot", metavar="PNG", default=None,
                     help="where the browser test of app.py saves its screenshot of the page "
                          "(docs/app.png is made so); by default none is saved")


@pytest.fixture
def fixtures():
    return FIXTURES


THREADS_FROM_OUTSIDE = bool(os.environ.get("OMP_NUM_THREADS"))


@cache
def suite_free_cores():
    from runkit import cpu_threads
    return cpu_threads.FreeCores(cpu_threads.physical_cores())


def fix_threads(monkeypatch, count):
    """torch's thread count, and that of the scripts a test starts (OMP_NUM_THREADS), fixed at `count`."""
    from runkit import cpu_threads
    monkeypatch.setenv("OMP_NUM_THREADS", str(count))
    cpu_threads.set_threads(count)


@pytest.fixture(scope="module", autouse=True)
def module_threads():
    """The thread count of a test module: what the default would choose as the module starts (the
    cores other processes leave free), set before the module's own fixtures run (autouse comes first
    in its scope). One count a module, so that a search its fixtures made and one its tests make,
    compared bit for bit, sum alike; a busy machine still gets fewer threads. A count set from
    outside (OMP_NUM_THREADS, as CI's run with another CPU's kernels) is kept: None."""
    if THREADS_FROM_OUTSIDE:
        yield None
        return
    import torch
    count = suite_free_cores().threads_now() or torch.get_num_threads()
    suite_free_cores().note()
    with pytest.MonkeyPatch.context() as monkeypatch:
        fix_threads(monkeypatch, count)
        yield count


@pytest.fixture(autouse=True)
def threads_fixed_for_each_test(module_threads, monkeypatch):
    """Each test runs with its module's thread count, set again before it (a test before may have changed it)."""
    if module_threads is not None:
        fix_threads(monkeypatch, module_threads)


def load_fixture(name):
    import torch
    return torch.load(FIXTURES / name, map_location="cpu", weights_only=True)


TINY_MODEL = FIXTURES / "tiny_model"
TINY_INPUT = FIXTURES / "tiny_input" / "target.png"


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 serving files the test makes, and noting every request.

    A file is found by its path with the query, else without it. Each can misbehave the ways
    real servers do: ignore Range requests, drop the connection part-way (in its first answer),
    send extra headers.
    """

    def __init__(self):
        self.files, self.requests = {}, []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path, body, content_type="application/octet-stream", ranges=True, drop_after=None, headers=None):
        self.files[path] = dict(body=body, content_type=content_type, ranges=ranges, drop_after=drop_after,
                                headers=headers or {})
        return self.url(path)

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def requested(self, path):
        return [r for r in self.requests if r["path"].split("?")[0] == path]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                entry = server.files.get(self.path) or server.files.get(self.path.split("?")[0])
                if entry is None:
                    return self.send_error(404)
                body, start = entry["body"], 0
                asked = self.headers.get("Range")
                if asked and entry["ranges"]:
                    start = int(asked.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", entry["content_type"])
                self.send_header("Content-Length", str(len(body) - start))
                for name, value in entry["headers"].items():
                    self.send_header(name, value)
                self.end_headers()
                if entry.get("drop_after") is not None:  # once: the next answer is whole
                    self.wfile.write(body[start:start + entry.pop("drop_after")])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        return Handler


@pytest.fixture
def http_server():
    server = LocalServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_pickle():
    """The bytes of a 32x32 StyleGAN-1 network pickle in NVIDIA's format (random weights)."""
    from stylegan1_pickles import tiny_pickle_bytes
    return tiny_pickle_bytes()


@pytest.fixture(autouse=True)
def pulse_logger_as_found():
    """A script's main shows the `pulse` logger's messages on stderr (messages.show_messages): each test
    finds the logger as Python leaves it, whatever the tests before it ran."""
    logger = logging.getLogger("pulse")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


QUICK_FIT_DRAWS = 256  # the draws of a gaussian fit in tests (the real 1,000,000 take a minute a network)


@contextmanager
def quick_fits():
    """Inside the block, every gaussian fit made (at a conversion) takes QUICK_FIT_DRAWS draws."""
    from weightfiles import weights
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights, "GAUSSIAN_FIT_DRAWS", QUICK_FIT_DRAWS)
        yield


def convert_quickly(network_file, cache_dir, **keywords):
    """conversion.convert with quick_fits."""
    from weightfiles import conversion
    with quick_fits():
        return conversion.convert(network_file, cache_dir, **keywords)


def run_on_tiny_model(out_dir, *flags, input_dir=TINY_INPUT.parent):
    """run.main on the tiny model; returns its exit status."""
    import run
    return run.main(["-input_dir", str(input_dir), "-cache_dir", str(TINY_MODEL), "-output_dir", str(out_dir),
                     *map(str, flags)])


def make_inputs(folder, count=1):
    """`count` different 16x16 inputs: the fixture target, then colour-shifted copies."""
    folder.mkdir(parents=True, exist_ok=True)
    base = np.asarray(Image.open(TINY_INPUT).convert("RGB"), dtype=np.int16)
    for i in range(count):
        Image.fromarray(np.clip(base + 25 * i, 0, 255).astype(np.uint8)).save(folder / f"face{i}.png")
    return folder


def run_cli(tmp_path, *flags, inputs=None, out="out"):
    """run.main on the tiny model over `inputs` (one made in tmp_path by default): (status, output folder)."""
    inputs = inputs or make_inputs(tmp_path / "in")
    out_dir = tmp_path / out
    return run_on_tiny_model(out_dir, *flags, input_dir=inputs), out_dir


def make_record(output="a.png", **changes):
    """A run-log record with small made-up values, `changes` replacing some."""
    from runkit import runlog
    fields = dict(input="in.png", output=output, seed=0, base_seed=0, device="cpu", threads=1, steps=2,
                  best_step=1, losses={"L2": 0.1, "TOTAL": 10.0}, converged=False, interrupted=False, seconds=1.0,
                  args={"eps": 0.002}, trajectory=[{"step": 1, "L2": 0.1, "TOTAL": 10.0}])
    return runlog.Record(**{**fields, **changes})


def log_records(out_dir):
    return [json.loads(line) for line in (out_dir / "pulse_log.jsonl").read_text().splitlines()]


def pixels(path):
    return np.asarray(Image.open(path), dtype=int)


def relative_error(got, want):
    """Largest absolute error over the largest absolute value: float32 kernels differ between
    CPUs (oneDNN picks them by instruction set), so float32 is compared to a tolerance."""
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


class Payload:
    """Unpickling it calls `func(arg)`: what a malicious network file would carry."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def wait_for(condition, timeout=120):
    """Until `condition()` holds, looking every 0.05 s; a failure after `timeout` seconds."""
    import time
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
