"""Run one of the project's scripts as `python SCRIPT ARGS...` would, with the weight sources and
the draws of a gaussian fit that a test chooses (what monkeypatch does in the test's own process):

    python tests/patched_script.py PATCH_JSON SCRIPT [ARGS...]

PATCH_JSON: {"sources": {release name: [the fields of a releases.Source, ...]}, "fit_draws": N},
each key optional; releases not named keep their sources.
"""
import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from weightfiles import releases, weights  # noqa: E402


def main():
    patch, script, *args = sys.argv[1:]
    patch = json.loads(patch)
    for name, sources in patch.get("sources", {}).items():
        releases.SOURCES[name] = [releases.Source(**source) for source in sources]
    weights.GAUSSIAN_FIT_DRAWS = patch.get("fit_draws", weights.GAUSSIAN_FIT_DRAWS)
    sys.argv = [script, *args]
    runpy.run_path(str(ROOT / script), run_name="__main__")


if __name__ == "__main__":
    main()
