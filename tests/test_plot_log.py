"""plot_log.py: one loss plot per result of a run log."""
import pytest
from PIL import Image

import plot_log
from conftest import run_on_tiny_model

DUPLICATES = 3


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("logged")
    assert run_on_tiny_model(out_dir, "-seed", "0", "-steps", "3", "-duplicates", str(DUPLICATES)) == 0
    return out_dir


def test_plot_log_writes_one_png_per_record(logged_run, tmp_path):
    out_dir = logged_run
    assert plot_log.main([str(out_dir / "pulse_log.jsonl"), "-output_dir", str(tmp_path)]) == 0
    plots = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in plots] == [f"target_{k}_losses.png" for k in range(1, DUPLICATES + 1)]
    for plot in plots:
        with Image.open(plot) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 250
        assert plot.stat().st_size > 10_000


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), ("", "no log records"), ("not json\n", "no log records"),
    ('{"output": "a.png"}\n', "cannot be plotted")])
def test_plot_log_fails_clearly_on_a_bad_log(tmp_path, capsys, content, message):
    log = tmp_path / "pulse_log.jsonl"
    if content is not None:
        log.write_text(content)
    assert plot_log.main([str(log)]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "plots").exists() or not any((tmp_path / "plots").iterdir())
