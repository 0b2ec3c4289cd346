"""-tries and -stop_at_eps (issue 29) on the tiny model, in float64.

What a try finds is checked against a search run alone from the try's seed: the thresholds (eps)
are chosen from those lone searches here, not written down, since the draws of a seed depend on
the CPU's kernels."""
import json
import logging

import pytest
import torch

import PULSE
import run
import search
import sweep
from conftest import TINY_INPUT, TINY_MODEL, log_records, make_record, run_on_tiny_model
from runkit import runlog

STEPS = 6


@pytest.fixture(scope="module")
def model64():
    return PULSE.load(cache_dir=TINY_MODEL, precision="fp64")


@pytest.fixture(scope="module")
def alone(model64):
    """seed -> the L2 of every step of a lone search from it (default eps, below every L2 here, so
    the same as under any larger eps until the first step that reaches it)."""
    results = model64.upsample(TINY_INPUT, seed=0, steps=STEPS, duplicates=9)
    return {r.seed: [row["L2"] for row in r.trajectory] for r in results}


def between(values, at):
    """A threshold halfway between the sorted values at places `at` - 1 and `at`: never equal to one."""
    ordered = sorted(values)
    return (ordered[at - 1] + ordered[at]) / 2


def first_reach(l2s, eps):
    """1-based step of the first L2 <= eps, or None."""
    return next((k for k, l2 in enumerate(l2s, start=1) if l2 <= eps), None)


def test_default_is_one_try_and_says_so(model64):
    (result,) = model64.upsample(TINY_INPUT, seed=4, steps=2)
    assert result.tries == [{"seed": 4, "L2": result.losses["L2"], "converged": result.converged, "steps": 2,
                             "ended": "steps"}]
    assert result.stopped_at is None


def test_a_search_that_does_not_converge_is_run_again_from_the_next_seed(model64, alone):
    # duplicate 1 tries seeds 1, 3, 5; duplicate 2 tries seeds 2, 4, 6 (seed + k - 1 + (t - 1) * 2)
    lowest = {seed: min(l2s) for seed, l2s in alone.items()}
    eps = between([lowest[s] for s in range(1, 7)], 3)  # three of the six seeds converge
    results = model64.upsample(TINY_INPUT, seed=1, steps=STEPS, duplicates=2, tries=3, eps=eps)
    assert [r.name for r in results] == ["target_1", "target_2"]
    for k, result in enumerate(results, start=1):
        seeds = [k + 2 * t for t in range(3)]
        converging = [s for s in seeds if lowest[s] <= eps]
        used = seeds[:seeds.index(converging[0]) + 1] if converging else seeds
        assert [t["seed"] for t in result.tries] == used
        assert [t["converged"] for t in result.tries] == [s in converging for s in used]
        assert result.converged == bool(converging)
        # The kept try is what -seed S -tries 1 alone finds, bit for bit.
        (single,) = model64.upsample(TINY_INPUT, seed=result.seed, steps=STEPS, eps=eps)
        assert torch.equal(result.tensor, single.tensor) and result.trajectory == single.trajectory
        if not converging:
            assert result.losses["L2"] == min(t["L2"] for t in result.tries)
        else:
            assert result.seed == converging[0]


def test_without_a_converged_try_the_one_with_the_lowest_l2_is_kept(model64):
    (result,) = model64.upsample(TINY_INPUT, seed=2, steps=3, tries=3, eps=1e-9)
    singles = [model64.upsample(TINY_INPUT, seed=s, steps=3, eps=1e-9)[0] for s in (2, 3, 4)]
    assert result.tries == [{"seed": s.seed, "L2": s.losses["L2"], "converged": False, "steps": 3, "ended": "steps"}
                            for s in singles]
    best = min(singles, key=lambda s: s.losses["L2"])
    assert result.seed == best.seed and torch.equal(result.tensor, best.tensor)
    assert not result.converged and not result.interrupted


def test_stop_at_eps_ends_the_search_at_the_first_step_that_reaches_eps(model64, alone):
    seed, l2s = next((s, l2s) for s, l2s in alone.items() if min(l2s[:-1]) < min(l2s[0], l2s[-1]))
    eps = (min(l2s[:-1]) + min(l2s[0], l2s[-1])) / 2  # reached before the last step, not at the first
    stop = first_reach(l2s, eps)
    (full,) = model64.upsample(TINY_INPUT, seed=seed, steps=STEPS, eps=eps)
    (early,) = model64.upsample(TINY_INPUT, seed=seed, steps=STEPS, eps=eps, stop_at_eps=True)
    assert early.converged and early.stopped_at == early.steps == early.best_step == stop < STEPS
    assert early.trajectory == full.trajectory[:stop]  # the same search, cut short
    assert early.losses == {k: v for k, v in full.trajectory[stop - 1].items() if k != "step"}
    assert model64.render(early.latent, early.noise).tobytes() == early.image.tobytes()  # that step's image
    assert full.stopped_at is None and full.steps == STEPS


def test_a_try_in_a_row_of_a_batch_is_a_fresh_search_bit_for_bit(model64):
    """Rows that held other searches start the next tries from scratch: the same numbers as a run of
    those seeds in a batch of the same make-up (the generator's batched rounding is then the same)."""
    tried = model64.upsample(TINY_INPUT, seed=0, steps=3, duplicates=2, tries=2, eps=1e-9, batch_size=2)
    fresh = model64.upsample(TINY_INPUT, seed=2, steps=3, duplicates=2, eps=1e-9, batch_size=2)  # seeds 2, 3
    for result, second in zip(tried, fresh):
        (try_2,) = [t for t in result.tries if t["seed"] == second.seed]
        assert try_2 == second.tries[0]
        if result.seed == second.seed:
            assert torch.equal(result.tensor, second.tensor) and result.trajectory == second.trajectory


def test_in_a_batch_a_finished_search_leaves_its_row_to_the_next_try(model64, alone):
    """-batch_size 2, 3 duplicates, 3 tries, stop_at_eps: rows refilled mid-search, each search its
    own (optimizer state, schedule, step count), and never an idle row while searches wait."""
    eps = between([min(l2s) for l2s in alone.values()], 5)  # about half the seeds converge, at various steps
    rows = []

    def watch(step):
        rows.append([(row.name, row.attempt, row.step) for row in step.rows])
    results = model64.upsample(TINY_INPUT, seed=0, steps=STEPS, duplicates=3, tries=3, eps=eps,
                               stop_at_eps=True, batch_size=2, on_step=watch)
    searched = set()
    for k, result in enumerate(results, start=1):
        seeds = [k - 1 + 3 * t for t in range(3)]  # try t of duplicate k: k - 1 + (t - 1) * 3
        reach = [first_reach(alone[s], eps) for s in seeds]
        used = next((t for t, step in enumerate(reach, start=1) if step), 3)
        assert [t["seed"] for t in result.tries] == seeds[:used]
        assert [t["steps"] for t in result.tries] == [step or STEPS for step in reach[:used]]
        kept = result.tries.index(next(t for t in result.tries if t["seed"] == result.seed))
        assert result.stopped_at == reach[kept]
        before_eps = result.steps - (1 if result.stopped_at else 0)  # where it reaches eps, L2 is clamped to it
        assert [row["L2"] for row in result.trajectory[:before_eps]] == pytest.approx(
            alone[result.seed][:before_eps], rel=1e-9)  # batched: the generator's rounding differs a little
        searched.update((result.name, t) for t in range(1, used + 1))
    assert {(name, number) for step in rows for name, number, _ in step} == searched
    counts = [len(step) for step in rows]
    assert counts[0] == 2 and counts == sorted(counts, reverse=True)  # a row is left empty only when nothing waits
    assert any(len({number for _, _, number in step}) > 1 for step in rows), "no search started mid-batch"


def test_a_stop_during_a_later_try_keeps_the_best_so_far(model64):
    def stop_in_try_2(step):
        if step.rows[0].attempt == 2 and step.number == 2:
            raise KeyboardInterrupt
    (result,) = model64.upsample(TINY_INPUT, seed=7, steps=4, tries=3, eps=1e-9, on_step=stop_in_try_2)
    assert result.interrupted and "interrupted" in result.status
    assert [(t["seed"], t["steps"]) for t in result.tries] == [(7, 4), (8, 2)]
    assert result.losses["L2"] == min(t["L2"] for t in result.tries)


# ---- run.py, the log, -resume, sweep.py -------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two"])
def test_a_bad_tries_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(["-tries", value])
    assert exit_info.value.code == 2
    assert ": error: argument -tries" in capsys.readouterr().err.strip().splitlines()[-1]


def test_run_py_logs_one_line_per_result_with_its_tries_and_resume_keeps_them(tmp_path, capsys):
    out_dir = tmp_path / "out"
    flags = ["-seed", "3", "-steps", "2", "-duplicates", "2", "-tries", "2", "-eps", "1e-9", "-precision", "fp64"]
    assert run_on_tiny_model(out_dir, *flags) == 0
    printed = capsys.readouterr().out
    records = log_records(out_dir)
    assert [r["output"] for r in records] == [str(out_dir / f"target_{k}.png") for k in (1, 2)]
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["target_1.png", "target_2.png"]
    for k, record in enumerate(records, start=1):
        assert [t["seed"] for t in record["tries"]] == [3 + k - 1, 3 + k + 1]
        assert record["seed"] in (3 + k - 1, 3 + k + 1) and record["args"]["tries"] == 2
        assert f"kept (seed {record['seed']})" in printed
    assert run_on_tiny_model(out_dir, *flags, "-resume") == 0
    assert "2 result(s) already done, 0 to go" in capsys.readouterr().out
    assert len(log_records(out_dir)) == 2


def test_eps_0_leaves_l2_unclamped_and_converges_nothing(model64, alone, caplog):
    caplog.set_level(logging.INFO, logger="pulse")
    (result,) = model64.upsample(TINY_INPUT, seed=0, steps=STEPS, eps=0)
    assert [row["L2"] for row in result.trajectory] == alone[0]  # the default eps is below every L2 here
    assert not result.converged and caplog.messages == []  # without stop_at_eps, nothing to say


def test_stop_at_eps_with_eps_0_is_noted_once_however_many_searches(model64, caplog):
    search.note_once.cache_clear()  # a note is said once a process: this test's process starts afresh
    caplog.set_level(logging.INFO, logger="pulse")
    for seed in (0, 1):
        model64.upsample(TINY_INPUT, seed=seed, steps=1, eps=0, stop_at_eps=True)
    assert caplog.messages == ["note: with eps 0, stop_at_eps never stops a search early (its L2 would have to "
                               "be exactly 0)"]


def test_stop_at_eps_with_eps_0_runs_every_step_and_says_so_once(tmp_path, capsys):
    search.note_once.cache_clear()
    out_dir = tmp_path / "out"
    flags = ["-seed", "0", "-steps", "3", "-duplicates", "2", "-tries", "2", "-eps", "0", "-stop_at_eps",
             "-precision", "fp64"]
    assert run_on_tiny_model(out_dir, *flags) == 0
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    notes = [line for line in lines if "with eps 0, stop_at_eps never stops a search early" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ")  # once, on a line of its own, not inside the bar
    for record in log_records(out_dir):
        assert record["stopped_at"] is None and not record["converged"]
        assert [t["steps"] for t in record["tries"]] == [3, 3]


def test_results_of_older_logs_count_as_one_try_without_stop_at_eps(tmp_path):
    record = make_record(args={"steps": 2})
    line = json.loads(record.to_json())
    del line["tries"], line["stopped_at"]
    old = runlog.Record.from_json(line)
    assert old.tries == [] and old.stopped_at is None
    assert old.is_complete({"steps": 2, "tries": 1, "stop_at_eps": False})
    assert not old.is_complete({"steps": 2, "tries": 2, "stop_at_eps": False})


def test_sweep_can_vary_tries_and_stop_at_eps(tmp_path):
    parser = sweep.build_parser()
    args = parser.parse_args(["-grid", "tries=1,4", "-grid", "stop_at_eps=false,true", "-output_dir", str(tmp_path)])
    flags = sweep.run_flags()
    grid = sweep.parse_grid(args.grid, flags, parser)
    combinations = sweep.plan(args, grid, run.parse_args([]).options, flags, parser)
    assert [(c.options.search.tries, c.options.search.stop_at_eps) for c in combinations] == [
        (1, False), (1, True), (4, False), (4, True)]
    assert [c.folder.name for c in combinations][-1] == "tries=4,stop_at_eps=true"
