"""The speed options: the fast generator path gives the 2020 bits, the flags run and are logged,
and bench.py's quick mode reports what it should."""
import copy
import json

import pytest
import torch

from runkit import roof, speed
import bench
import run
from conftest import TINY_INPUT, TINY_MODEL, load_fixture
from generators.fastops import FastOps
from generators.generator import MappedGaussian
from PULSE import PULSE
from stylegan import G_synthesis, synthesis_from_state_dict


@pytest.fixture(autouse=True)
def keep_thread_count():
    """run.py and bench.py set torch's thread count for the whole process: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_synthesis(dtype=torch.float32):
    state = load_fixture("tiny_model/synthesis.pt")
    model = synthesis_from_state_dict(state)
    model.load_state_dict(state)
    return model.to(dtype).requires_grad_(False)


def tiny_pulse(compile=False):
    synthesis = tiny_synthesis()
    prior = MappedGaussian({"mean": torch.zeros(512), "std": torch.ones(512)}, synthesis.num_ws)
    return PULSE.build(synthesis, prior, torch.device("cpu"), compile=compile)


def forward_and_grads(model):
    """Image and gradients (latent, trainable noise) of the fixture inputs."""
    ref = load_fixture("forward.pt")
    dtype = next(model.parameters()).dtype
    latent = ref["dlatents"].to(dtype).requires_grad_(True)
    noise = [n.to(dtype).requires_grad_(i < 5) for i, n in enumerate(ref["noise"])]
    image = model(latent, noise)
    return [image, *torch.autograd.grad(image.square().sum(), [latent] + noise[:5])]


def assert_all_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_gives_the_2020_outputs_and_gradients_bit_for_bit(dtype):
    model = tiny_synthesis(dtype)  # 4..256: nearest-upscale blocks and fused-upscale blocks
    baseline = forward_and_grads(model.set_fast(False))
    assert_all_equal(forward_and_grads(model.set_fast(True)), baseline)
    assert_all_equal(forward_and_grads(model), baseline)  # second call: the same stored tensors


def test_stored_tensors_follow_load_state_dict_and_dtype_changes():
    fast = tiny_synthesis().set_fast(True)
    slow = copy.deepcopy(fast).set_fast(False)
    assert fast.state_dict().keys() == slow.state_dict().keys()  # the stored tensors are not saved
    stored = fast.torgb.frozen_scaled_weight
    assert fast.to("cpu", torch.float32).set_fast(True).torgb.frozen_scaled_weight is stored  # nothing to derive
    other = G_synthesis(resolution=256, fmap_base=256, fmap_max=64).state_dict()
    for model in (fast, slow):
        model.load_state_dict(other)
    assert_all_equal(forward_and_grads(fast), forward_and_grads(slow))
    for model in (fast, slow):
        model.double()  # derived anew in float64: converting the float32 ones gives other bits
    assert_all_equal(forward_and_grads(fast), forward_and_grads(slow))
    with torch.no_grad():
        for model in (fast, slow):
            model.torgb.weight.mul_(2)
            model.blocks["256x256"].conv0_up.weight.add_(1)
    fast.set_fast(False).set_fast(True)  # edits in place by hand need a new start
    assert_all_equal(forward_and_grads(fast), forward_and_grads(slow))


def test_the_fast_path_needs_frozen_weights():
    with pytest.raises(ValueError, match="frozen"):
        tiny_synthesis().requires_grad_(True).set_fast(True)
    model = tiny_synthesis().set_fast(True).requires_grad_(True)
    ref = load_fixture("forward.pt")
    with pytest.raises(RuntimeError, match="set_fast\\(False\\)"):
        model(ref["dlatents"], ref["noise"])
    model.set_fast(False)(ref["dlatents"], ref["noise"]).sum().backward()
    assert model.torgb.weight.grad is not None and model.blocks["256x256"].conv0_up.weight.grad is not None


def test_compile_keeps_the_fast_path():
    model = tiny_pulse(compile=True)
    assert model.num_ws == 14 and model.resolution == 256  # lazily compiled: nothing ran yet
    assert all(m.fast for m in model.synthesis.modules() if isinstance(m, FastOps))


def test_the_fast_path_compiles_to_one_graph_with_the_same_bits():
    """aot_eager traces what inductor compiles (fullgraph: no graph break) but runs eager kernels."""
    model = tiny_synthesis().set_fast(True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert_all_equal(forward_and_grads(compiled), forward_and_grads(model))


@pytest.mark.slow  # about two minutes of compiling on 2 CPU cores
def test_compiled_fast_path_matches_eager():
    model = tiny_pulse(compile=True)
    for got, want in zip(forward_and_grads(model.synthesis), forward_and_grads(tiny_pulse().synthesis)):
        assert (got - want).abs().max() < 1e-3 * want.abs().max()  # inductor orders float32 sums its own way


def run_tiny(tmp_path, *flags):
    inputs = tmp_path / "in"
    inputs.mkdir(parents=True)
    (inputs / "target.png").write_bytes(TINY_INPUT.read_bytes())
    out_dir = tmp_path / "out"
    code = run.main(["-input_dir", str(inputs), "-output_dir", str(out_dir), "-cache_dir", str(TINY_MODEL),
                     "-seed", "5", *flags])
    records = [json.loads(line) for line in (out_dir / "pulse_log.jsonl").read_text().splitlines()] if code == 0 else []
    return code, records


def test_bf16_runs_end_to_end_and_is_logged(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "cpu_has_fast_bfloat16", lambda: True)  # the autocast path, on any CPU
    code, (record,) = run_tiny(tmp_path, "-steps", "4", "-precision", "bf16")
    assert code == 0
    assert record["args"]["precision"] == "bf16" and record["args"]["compile"] is False
    assert record["steps"] == 4 and record["losses"]["TOTAL"] > 0


def test_threads_are_set_and_logged(tmp_path):
    code, (record,) = run_tiny(tmp_path, "-steps", "2", "-threads", "1")
    assert code == 0 and record["threads"] == 1 and torch.get_num_threads() == 1


def test_no_speedups_gives_the_same_search(tmp_path):
    _, (fast,) = run_tiny(tmp_path / "fast", "-steps", "5")
    _, (slow,) = run_tiny(tmp_path / "slow", "-steps", "5", "-no_speedups")
    assert fast["trajectory"] == slow["trajectory"]


def test_fp16_is_refused_on_the_cpu_with_a_pointer_to_bf16_where_it_is_fast(monkeypatch):
    monkeypatch.setattr(speed, "cpu_has_fast_bfloat16", lambda: True)
    with pytest.raises(speed.PrecisionError, match="^precision='fp16' is not .* use precision='bf16' there") as fp16:
        speed.precision_dtypes("fp16", torch.device("cpu"))
    assert fp16.value.script_words.startswith("-precision fp16 is not") and "use -precision bf16 there" in \
        fp16.value.script_words  # as run.py says it
    assert speed.precision_dtypes("fp16", torch.device("cuda")) == (torch.float32, torch.float16)
    assert speed.precision_dtypes("bf16", torch.device("cpu")) == (torch.float32, torch.bfloat16)


def test_bf16_is_refused_on_a_cpu_without_fast_bfloat16(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(speed, "cpu_has_fast_bfloat16", lambda: False)
    with pytest.raises(speed.PrecisionError, match="use fp32 on this CPU"):
        speed.precision_dtypes("fp16", torch.device("cpu"))
    assert speed.precision_dtypes("bf16", torch.device("cuda")) == (torch.float32, torch.bfloat16)
    code, _ = run_tiny(tmp_path, "-steps", "1", "-precision", "bf16")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "needs a CPU with AVX-512" in err[0]


def test_fp64_is_refused_on_mps_which_has_no_float64():
    with pytest.raises(speed.PrecisionError, match="PULSE_DEVICE=cpu"):
        speed.precision_dtypes("fp64", torch.device("mps"))
    assert speed.precision_dtypes("fp64", torch.device("cpu")) == (torch.float64, None)


@pytest.mark.slow  # minutes on CPUs without fast bfloat16
def test_bench_quick_mode_reports_timings_and_drift(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["-steps", "1", "-batch_sizes", "1", "2", "-resolution", "64", "-json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"device", "threads", "torch", "cpu", "resolution", "steps", "timings", "unsupported", "drift"} <= set(report)
    assert report["resolution"] == 64 and report["threads"] >= 1
    timings = {t["name"]: t for t in report["timings"]}
    assert {"all speed changes off (2020 ops)", "default", "default, batch 2"} <= set(timings)
    for t in timings.values():
        assert {"batch", "precision", "seconds_per_step", "images_per_second", "seconds_per_face",
                "peak_memory_mb", "speedup"} <= set(t)
        assert t["seconds_per_step"] > 0 and t["peak_memory_mb"] > 0
    assert timings["all speed changes off (2020 ops)"]["speedup"] == 1
    refused_on_the_cpu = ["-precision fp16"] if speed.cpu_has_fast_bfloat16() else ["-precision bf16", "-precision fp16"]
    if report["device"] == "cpu":
        assert [u["name"] for u in report["unsupported"]] == refused_on_the_cpu
    drift = {d["name"]: d for d in report["drift"]}
    assert drift["fp32 (default)"]["converged"] is True
    if "-precision bf16" in timings:
        assert {"best_total", "best_l2", "total_rel_diff", "l2_rel_diff", "converged", "best_step"} <= set(
            drift["-precision bf16"])
    assert "speed" in capsys.readouterr().out


def test_bench_times_the_stylegan2_architecture(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["-generator", "stylegan2", "-steps", "1", "-batch_sizes", "1", "-resolution", "16",
                       "-json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["generator"] == "stylegan2" and report["resolution"] == 16 and report["drift"] == []
    assert all(t["seconds_per_step"] > 0 for t in report["timings"])
    out = capsys.readouterr().out
    assert "stylegan2 16x16 generator" in out and "this machine's roof" in out
    assert report["roof"]["matmul_gflops"]["fp32"] > 0 and report["roof"]["memory_gb_per_s"] > 0
    assert report["step_gflops"] > 0 and all(t["roof_share"] > 0 for t in report["timings"])


def test_the_flop_counter_counts_a_matrix_product_and_the_roof_divides_by_the_right_type():
    a = torch.ones(64, 32)
    assert roof.counted_flops(lambda: a @ a.T) == 2 * 64 * 64 * 32
    machine = roof.Roof({"fp32": 100.0, "bf16": 400.0}, memory_gb_per_s=10.0)
    assert machine.share(50e9, 1.0, "fp32") == 0.5 and machine.share(50e9, 0.5, "bf16") == 0.25
    assert machine.share(50e9, 1.0, "fp16") is None  # a type not measured has no share
