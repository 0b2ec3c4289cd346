"""sweep.py: run.py over a grid of flags, one folder and one table row per combination."""
import pytest

import sweep
from conftest import TINY_INPUT, TINY_MODEL


@pytest.fixture(scope="module")
def sweep_argv(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sweep")
    argv = ["-input_dir", str(TINY_INPUT.parent), "-grid", "steps=2,3", "-output_dir", str(out_dir),
            "--", "-cache_dir", str(TINY_MODEL)]
    assert sweep.main(argv) == 0
    return out_dir, argv


def table_rows(out_dir):
    lines = [line for line in (out_dir / "sweep.md").read_text().splitlines() if line.startswith("|")]
    return lines[2:]  # after the header and its separator


def test_sweep_writes_a_folder_and_a_table_row_per_combination(sweep_argv):
    out_dir, _ = sweep_argv
    assert sorted(p.name for p in out_dir.iterdir() if p.is_dir()) == ["steps=2", "steps=3"]
    rows = table_rows(out_dir)
    assert len(rows) == 2
    assert all(row.endswith("| ok |") and "| 1 |" in row for row in rows)


def test_second_sweep_reruns_nothing(sweep_argv):
    out_dir, argv = sweep_argv
    logs = sorted(out_dir.glob("*/pulse_log.jsonl"))
    before = {log: (log.read_text(), (log.parent / "target.png").stat().st_mtime_ns) for log in logs}
    assert sweep.main(argv) == 0
    assert {log: (log.read_text(), (log.parent / "target.png").stat().st_mtime_ns) for log in logs} == before
    assert len(table_rows(out_dir)) == 2


def test_sweep_rejects_a_grid_key_that_is_not_a_run_flag(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["-grid", "learning_rat=0.1", "-output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "'learning_rat' is not a run.py flag" in error and "learning_rate" in error
    assert not any(tmp_path.iterdir())


def test_speed_settings_are_made_once_for_the_whole_sweep(tmp_path, monkeypatch):
    from runkit import cpu_threads
    thread_settings = []
    monkeypatch.setattr(cpu_threads, "set_threads", lambda requested=None: thread_settings.append(requested))
    argv = ["-input_dir", str(TINY_INPUT.parent), "-grid", "learning_rate=0.2,0.4", "-output_dir", str(tmp_path),
            "--", "-cache_dir", str(TINY_MODEL), "-steps", "2", "-threads", "1"]
    assert sweep.main(argv) == 0
    assert thread_settings == [1]


@pytest.mark.parametrize("grid", ["threads=1,2", "no_speedups=true,false"])
def test_process_wide_flags_cannot_vary_in_a_grid(capsys, tmp_path, grid):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["-grid", grid, "-output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "holds for the whole process" in capsys.readouterr().err and not any(tmp_path.iterdir())
