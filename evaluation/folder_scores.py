"""NIQE of every image in folders (evaluate.py DIR [DIR ...]): one table row per folder."""
import sys

from evaluation.shared import fmt, list_images, load_rgb, summarise
from niqe import niqe


def report_skipped(folder, skipped):
    """One line per reason on stderr for the images of `folder` that were skipped ({reason: [path]}):
    the file's name for one, the count for several (all too small for NIQE, say)."""
    for reason, paths in skipped.items():
        print(f"skipped {paths[0] if len(paths) == 1 else f'{len(paths)} images of {folder}'}: {reason}",
              file=sys.stderr)


def score_folder(folder):
    """{image name: NIQE} for the images that could be scored, and {reason: [path]} for the others."""
    scores, skipped = {}, {}
    for path in list_images(folder):
        try:
            scores[path.name] = niqe(load_rgb(path))
        except (OSError, ValueError) as error:  # PIL raises OSError subclasses for corrupt files
            skipped.setdefault(str(error), []).append(path)
    return scores, skipped


def evaluate_folders(folders):
    """Print one table row per folder; returns the JSON report and the number of failures."""
    report, failures = {}, 0
    print(f"{'folder':40} {'images':>6} {'mean':>9} {'median':>9}")
    for folder in folders:
        scores, skipped = score_folder(folder)
        report_skipped(folder, skipped)
        summary = summarise(scores.values())
        if scores:
            print(f"{folder:40} {summary['count']:6d} {fmt(summary['mean'])} {fmt(summary['median'])}")
        else:  # the reason, not a row of nothing
            print(f"{folder:40} none scored: {next(iter(skipped)) if len(skipped) == 1 else 'see the lines above'}")
        failed = sum(map(len, skipped.values()))
        report[folder] = {"images": scores, "failed": failed, **summary}
        failures += failed
    return {"metric": "NIQE", "folders": report}, failures
