"""Device choice: CUDA, then MPS, then CPU; PULSE_DEVICE overrides, never silently."""
import subprocess
import sys

import pytest
import torch

import device
from conftest import ROOT, TINY_INPUT, TINY_MODEL


@pytest.fixture
def no_accelerators(monkeypatch):
    monkeypatch.delenv("PULSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "_mps_available", lambda: False)


def test_cpu_when_nothing_else_is_there(no_accelerators):
    assert device.pick_device() == torch.device("cpu")


def test_cuda_comes_first_then_mps(no_accelerators, monkeypatch):
    monkeypatch.setattr(device, "_mps_available", lambda: True)
    assert device.pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.pick_device() == torch.device("cuda")


def test_environment_variable_overrides(no_accelerators, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("PULSE_DEVICE", "cpu")
    assert device.pick_device() == torch.device("cpu")


@pytest.mark.parametrize("name, message", [
    ("cuda", "sees no CUDA GPU"), ("cuda:1", "sees no CUDA GPU"), ("mps", "not available"),
    ("banana", "not a device name"),
])
def test_a_device_that_is_not_there_is_an_error(no_accelerators, monkeypatch, name, message):
    monkeypatch.setenv("PULSE_DEVICE", name)
    with pytest.raises(device.DeviceError, match=message):
        device.pick_device()


def test_a_missing_cuda_index_is_an_error(no_accelerators, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(device.DeviceError, match="only 1 CUDA device"):
        device.pick_device("cuda:1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_py_stops_with_a_clear_message_for_a_missing_device(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-input_dir", str(TINY_INPUT.parent),
                           "-output_dir", str(tmp_path), "-cache_dir", str(TINY_MODEL)],
                          env={"PULSE_DEVICE": "cuda", "PATH": ""}, capture_output=True, text=True)
    assert proc.returncode == 3  # setup failed
    assert "error: PULSE_DEVICE=cuda asks for CUDA" in proc.stderr
    assert not list(tmp_path.glob("*.png"))


def test_each_process_of_a_job_takes_the_gpu_of_its_local_rank(no_accelerators, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device.pick_device(local_rank=1) == torch.device("cuda:1")
    with pytest.raises(device.DeviceError, match="LOCAL_RANK=2 asks for cuda:2: there are only 2 CUDA device"):
        device.pick_device(local_rank=2)
    monkeypatch.setenv("PULSE_DEVICE", "cuda:0")  # the user's choice still wins
    assert device.pick_device(local_rank=1) == torch.device("cuda:0")
    monkeypatch.setenv("PULSE_DEVICE", "cpu")
    assert device.pick_device(local_rank=1) == torch.device("cpu")
    monkeypatch.setenv("PULSE_DEVICE", "cuda")  # any GPU: in a job, this process's own
    assert device.pick_device(local_rank=1) == torch.device("cuda:1")


def test_without_a_gpu_every_process_of_a_job_runs_on_the_cpu(no_accelerators):
    assert device.pick_device(local_rank=3) == torch.device("cpu")
