"""The adaptive budget (-patience, -max_steps) and the recipes (issue 37), on the tiny model in float64.

The budget only decides where a search ends (and, with -max_steps, the length the schedule runs
over): up to its end a budgeted search is a lone search of the same seed, step for step. Where it
must end is computed here from the lone search's L2s, not written down, since the draws of a seed
depend on the CPU's kernels."""
import pytest
import torch

from evaluation.row_settings import settings_row
import PULSE
import run
import sweep
from webpage import setting_boxes
from conftest import TINY_INPUT, TINY_MODEL, log_records, run_on_tiny_model

STEPS = 8
BOUNCING = dict(learning_rate=2.0, lr_schedule="fixed", eps=1e-9)  # an L2 that goes up and down, never reaching eps


@pytest.fixture(scope="module")
def model64():
    return PULSE.load(cache_dir=TINY_MODEL, precision="fp64")


@pytest.fixture(scope="module")
def lone(model64):
    """seed -> the Result of a lone search of STEPS steps with the BOUNCING settings, from seeds 0 and 1."""
    return {r.seed: r for r in model64.upsample(TINY_INPUT, seed=0, steps=STEPS, duplicates=2, **BOUNCING)}


def l2s(result):
    return [row["L2"] for row in result.trajectory]


def since_best(values):
    """At each step, how many steps ago the lowest value so far came (0: at this step)."""
    best, since, counts = float("inf"), 0, []
    for value in values:
        best, since = (value, 0) if value < best else (best, since + 1)
        counts.append(since)
    return counts


def first_stall(values, patience):
    """1-based step at which a search with these L2s has had no new best for `patience` steps, or None."""
    return next((k for k, since in enumerate(since_best(values), start=1) if since >= patience), None)


@pytest.fixture(scope="module")
def patience(lone):
    """A patience at which the lone search from seed 0 stalls before its last step."""
    found = max(since_best(l2s(lone[0])[:-1]))
    assert found >= 1, "the fixture's L2 never goes back up: BOUNCING needs a higher learning rate"
    return found


@pytest.mark.parametrize("budget", [dict(steps=STEPS), dict(steps=1, max_steps=STEPS)],
                         ids=["stalled before steps", "stalled past steps"])
def test_a_search_that_stalls_ends_there(model64, lone, patience, budget):
    end = first_stall(l2s(lone[0]), patience)
    (result,) = model64.upsample(TINY_INPUT, seed=0, patience=patience, **budget, **BOUNCING)
    assert end < STEPS and (result.ended, result.steps) == ("stalled", end)
    assert result.trajectory == lone[0].trajectory[:end] and not result.converged
    assert result.tries == [{"seed": 0, "L2": result.losses["L2"], "converged": False, "steps": end,
                             "ended": "stalled"}]


def test_a_search_still_improving_at_steps_goes_on_to_the_ceiling_its_schedule_over_it(model64):
    # Patience above the ceiling: it never stalls. The 2020 schedule then runs over max_steps, so the
    # search is the one of -steps max_steps, bit for bit.
    (longer,) = model64.upsample(TINY_INPUT, seed=1, steps=STEPS, eps=1e-9)
    (result,) = model64.upsample(TINY_INPUT, seed=1, steps=2, max_steps=STEPS, patience=STEPS, eps=1e-9)
    assert (result.ended, result.steps, longer.ended) == ("ceiling", STEPS, "steps")
    assert result.trajectory == longer.trajectory and torch.equal(result.tensor, longer.tensor)


def test_a_search_that_reaches_eps_ends_converged_under_the_budget(model64, lone):
    values = l2s(lone[0])
    eps = min(values)  # reached first at that step; every step before is above it, so unclamped
    reached = values.index(eps) + 1
    (result,) = model64.upsample(TINY_INPUT, seed=0, steps=1, max_steps=STEPS, patience=STEPS, stop_at_eps=True,
                                 **{**BOUNCING, "eps": eps})
    assert (result.ended, result.steps, result.stopped_at, result.converged) == ("converged", reached, reached, True)
    assert l2s(result)[:-1] == values[:reached - 1]


def test_a_stalled_try_hands_over_to_the_next_seed(model64, lone, patience):
    (result,) = model64.upsample(TINY_INPUT, seed=0, steps=STEPS, tries=2, patience=patience, **BOUNCING)
    ends = [first_stall(l2s(lone[seed]), patience) for seed in (0, 1)]
    assert [(t["seed"], t["steps"], t["ended"]) for t in result.tries] == [
        (0, ends[0], "stalled"), (1, ends[1] or STEPS, "stalled" if ends[1] else "steps")]
    kept = min(result.tries, key=lambda t: t["L2"])
    assert result.seed == kept["seed"] and result.trajectory == lone[kept["seed"]].trajectory[:kept["steps"]]


@pytest.mark.parametrize("flags, message", [
    (["-max_steps", "200"], "max_steps needs patience"),
    (["-max_steps", "50", "-patience", "5"], "max_steps must be a whole number of at least 100, got 50"),
    (["-patience", "-1"], "argument -patience/--patience: must be a whole number of at least 0, got -1"),
    (["-recipe", "fast"], "argument -recipe/--recipe: invalid choice"),
])
def test_budget_settings_that_cannot_be_are_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(flags)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# ---- the recipes ----------------------------------------------------------------------------------

CONVERGE = PULSE.RECIPES["converge"]


def converge(**changes):
    """The SearchConfig of the converge recipe with `changes`."""
    return PULSE.SearchConfig(**{**CONVERGE, **changes, "recipe": "converge"})


def search_of(flags):
    return run.parse_args(flags).options.search


def test_the_2020_recipe_is_the_defaults():
    assert PULSE.RECIPES["2020"] == {} and search_of(["-recipe", "2020"]) == PULSE.SearchConfig()
    assert PULSE.recipe_config() == PULSE.SearchConfig() == search_of([])


def test_an_explicit_flag_beats_the_recipe():
    # -learning_rate 0.4 is the default's value: given, it still beats the recipe's 0.8.
    assert CONVERGE["learning_rate"] != 0.4 and CONVERGE["tries"] != 1
    assert search_of(["-recipe", "converge"]) == converge()
    expected = converge(learning_rate=0.4, tries=1)
    assert search_of(["-learning_rate", "0.4", "-recipe", "converge", "-tries", "1"]) == expected
    assert PULSE.recipe_config("converge", learning_rate=0.4, tries=1) == expected
    assert settings_row("recipe=converge,learning_rate=0.4,tries=1") == {
        "recipe": "converge", "learning_rate": 0.4, "tries": 1}
    with pytest.raises(ValueError, match="recipe must be one of 2020, converge, got 'fast'"):
        PULSE.recipe_config("fast")


def test_a_sweep_grid_can_vary_the_recipe_under_the_flags_given(tmp_path):
    parser = sweep.build_parser()
    args = parser.parse_args(["-grid", "recipe=2020,converge", "-output_dir", str(tmp_path)])
    flags = sweep.run_flags()
    base = run.parse_args(["-learning_rate", "0.4"]).options
    combinations = sweep.plan(args, sweep.parse_grid(args.grid, flags, parser), base, flags, parser)
    assert [c.options.search for c in combinations] == [PULSE.SearchConfig(learning_rate=0.4),
                                                        converge(learning_rate=0.4)]


def test_choosing_a_recipe_on_the_page_shows_its_values():
    shown = dict(zip(setting_boxes.RECIPE_BOXES, setting_boxes.on_recipe("converge")))
    assert shown == {name: CONVERGE.get(name, getattr(PULSE.SearchConfig, name)) for name in setting_boxes.RECIPE_BOXES}
    assert set(CONVERGE) <= set(setting_boxes.RECIPE_BOXES)
    assert setting_boxes.Settings.of(recipe="converge", tries=1).search == converge(tries=1)


def test_the_recipe_reproduces_from_its_seed_and_the_log_keeps_the_values_used(model64, tmp_path):
    # The recipe as it is, but for eps (no recipe sets it): the best L2 of its own search until that
    # first stops improving (patience 1), so that it converges soon.
    (probe,) = model64.upsample(TINY_INPUT, seed=5, recipe="converge", tries=1, patience=1, eps=1e-9)
    eps = min(l2s(probe))
    first, again = (model64.upsample(TINY_INPUT, seed=5, recipe="converge", eps=eps)[0] for _ in range(2))
    assert first.converged and first.ended == "converged"
    assert torch.equal(first.tensor, again.tensor) and first.tries == again.tries
    assert run_on_tiny_model(tmp_path, "-seed", 5, "-recipe", "converge", "-eps", eps, "-precision", "fp64") == 0
    (record,) = log_records(tmp_path)
    assert record["args"]["recipe"] == "converge" and record["tries"] == first.tries
    assert {name: record["args"][name] for name in CONVERGE} == CONVERGE
