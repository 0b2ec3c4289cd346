"""Score images with NIQE (lower is better), or compare a PULSE run with plain upscaling as the paper does.

    python evaluate.py runs/a runs/b -json scores.json
    python evaluate.py -paper input runs/a
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from runkit import cli
from bicubic import BicubicDownSample, divides_by_power_of_two
from niqe import niqe
from runkit.files import atomic_path
from runkit.images import IMAGE_SUFFIXES, read_rgb

# NIQE the paper reports on CelebA HQ at x64: a guide only, since other images give other scores
PAPER_NIQE_X64 = {"HR": 3.90, "nearest": 12.48, "bicubic": 7.06, "PULSE": 2.47}


def build_parser():
    parser = cli.parser(
        "NIQE (MATLAB's no-reference quality score; lower is better) of images, "
                    "or the PULSE paper's comparison for a run.",
        epilog="Folders are read non-recursively (png, jpg, jpeg, webp). Images that cannot be "
               "scored are named on stderr and skipped, and the exit status is then 1.")
    parser.add_argument("folders", nargs="*", metavar="DIR",
                        help="score every image in each folder; prints count, mean and median per folder")
    parser.add_argument("-paper", "--paper", nargs=2, metavar=("INPUT_DIR", "RESULT_DIR"),
                        help="compare PULSE's results (RESULT_DIR/<stem>.png or <stem>_<k>.png) for "
                             "each low-res input with its nearest and bicubic upscales (NIQE), and "
                             "check that the results downscale back to the inputs (PSNR)")
    parser.add_argument("-json", "--json", type=Path, metavar="FILE",
                        help="also write the per-image scores and the summary to this JSON file")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.folders) == bool(args.paper):
        parser.error("give either one or more folders, or -paper INPUT_DIR RESULT_DIR")
    return args


def check_folders(args):
    """Refuse (SetupError) a folder that is missing or holds no image to score."""
    for folder in args.paper or args.folders:
        if not Path(folder).is_dir():
            raise cli.SetupError(f"{folder} is not a folder")
    image_folders = args.paper[:1] if args.paper else args.folders  # results are looked up per input
    for folder in image_folders:
        if not list_images(folder):
            raise cli.SetupError(f"{folder} has no png, jpg, jpeg or webp images")


def list_images(folder):
    """The images of a folder, leaving out run.py's comparison strips (they are not results)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_strip"))


def load_rgb(path):
    """An HxWx3 uint8 array (alpha dropped, grey expanded, EXIF rotation applied)."""
    return np.asarray(read_rgb(path))


def report_failure(path, error):
    print(f"skipped {path}: {error}", file=sys.stderr)


def score_folder(folder):
    """{image name: NIQE} for the images that could be scored, and the number that failed."""
    scores, failed = {}, 0
    for path in list_images(folder):
        try:
            scores[path.name] = niqe(load_rgb(path))
        except (OSError, ValueError) as error:  # PIL raises OSError subclasses for corrupt files
            report_failure(path, error)
            failed += 1
    return scores, failed


def summarise(values):
    values = list(values)
    if not values:
        return {"count": 0, "mean": None, "median": None}
    return {"count": len(values), "mean": statistics.fmean(values), "median": statistics.median(values)}


def fmt(value, width=9):
    return f"{value:{width}.3f}" if value is not None else f"{'-':>{width}}"


def evaluate_folders(folders):
    """Print one table row per folder; returns the JSON report and the number of failures."""
    report, failures = {}, 0
    print(f"{'folder':40} {'images':>6} {'mean':>9} {'median':>9}")
    for folder in folders:
        scores, failed = score_folder(folder)
        summary = summarise(scores.values())
        print(f"{folder:40} {summary['count']:6d} {fmt(summary['mean'])} {fmt(summary['median'])}")
        report[folder] = {"images": scores, "failed": failed, **summary}
        failures += failed
    return {"metric": "NIQE", "folders": report}, failures


def find_results(input_path, result_dir, input_stems):
    """PULSE's outputs for one input: <stem>.png and the duplicates <stem>_<k>.png.

    A name like <stem>_2.png that is itself an input's stem belongs to that input instead.
    """
    pattern = re.compile(re.escape(input_path.stem) + r"(_\d+)?\.png")
    return sorted(p for p in Path(result_dir).iterdir()
                  if pattern.fullmatch(p.name) and (p.stem == input_path.stem or p.stem not in input_stems))


def upscale(low, size, resample):
    height, width = size
    return np.asarray(Image.fromarray(low).resize((width, height), resample))


def scale_factor(low, result):
    """The power-of-two factor between an input and its result, which BicubicDownSample needs."""
    factor = result.shape[0] // low.shape[0]
    if not divides_by_power_of_two(result.shape[0], low.shape[0]) or result.shape[1] != low.shape[1] * factor:
        raise ValueError(f"result size {result.shape[1]}x{result.shape[0]} is not a power-of-two "
                         f"multiple of the input size {low.shape[1]}x{low.shape[0]}")
    return factor


def downscale_psnr(result, low):
    """PSNR (dB, images in [0, 1]) between the result downscaled as PULSE does and the input."""
    def to_tensor(image):
        return torch.tensor(image, dtype=torch.float64).permute(2, 0, 1)[None] / 255

    down = BicubicDownSample(scale_factor(low, result)).double()
    with torch.no_grad():
        mse = torch.mean((down(to_tensor(result)) - to_tensor(low)) ** 2).item()
    return 10 * np.log10(1 / mse) if mse > 0 else float("inf")


def compare_input(input_path, result_paths):
    """NIQE of the nearest and bicubic upscales of one input, and NIQE and PSNR of its results."""
    low = load_rgb(input_path)
    results = {path.name: load_rgb(path) for path in result_paths}
    size = next(iter(results.values())).shape[:2]
    if any(result.shape[:2] != size for result in results.values()):
        raise ValueError("its results differ in size")
    return {"nearest": niqe(upscale(low, size, Image.NEAREST)),
            "bicubic": niqe(upscale(low, size, Image.BICUBIC)),
            "results": {name: {"niqe": niqe(result), "psnr": downscale_psnr(result, low)}
                        for name, result in results.items()}}


def print_paper_table(summary):
    measured = {"HR": None, "nearest": summary["nearest"], "bicubic": summary["bicubic"],
                "PULSE": summary["pulse"]}  # a PULSE run has no HR images to score
    print(f"{'method':10} {'NIQE':>9} {'paper x64':>10}")
    for method, value in measured.items():
        print(f"{method:10} {fmt(value)} {PAPER_NIQE_X64[method]:10.2f}")
    print(f"PULSE results downscaled back to the inputs: mean PSNR {fmt(summary['psnr'], 0)} dB "
          f"over {summary['results']} result(s) of {summary['inputs']} input(s)")


def evaluate_paper(input_dir, result_dir):
    """The paper's NIQE comparison for a PULSE run; returns the JSON report and the number of failures."""
    inputs = list_images(input_dir)
    stems = {path.stem for path in inputs}
    report, failures = {}, 0
    for input_path in inputs:
        result_paths = find_results(input_path, result_dir, stems)
        try:
            if not result_paths:
                raise ValueError(f"no {input_path.stem}.png or {input_path.stem}_<k>.png in {result_dir}")
            report[input_path.name] = compare_input(input_path, result_paths)
        except (OSError, ValueError) as error:
            report_failure(input_path, error)
            failures += 1
    results = [r for entry in report.values() for r in entry["results"].values()]
    summary = {"inputs": len(report), "results": len(results),
               "nearest": summarise(e["nearest"] for e in report.values())["mean"],
               "bicubic": summarise(e["bicubic"] for e in report.values())["mean"],
               "pulse": summarise(r["niqe"] for r in results)["mean"],
               "psnr": summarise(r["psnr"] for r in results)["mean"]}
    print_paper_table(summary)
    return {"metric": "NIQE", "inputs": report, "summary": summary, "paper_x64": PAPER_NIQE_X64}, failures


def main(argv=None):
    args = parse_args(argv)
    try:
        check_folders(args)
    except cli.SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.EXIT_SETUP_FAILED
    report, failures = evaluate_paper(*args.paper) if args.paper else evaluate_folders(args.folders)
    if args.json:
        try:
            with atomic_path(args.json) as tmp:
                tmp.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as e:
            print(f"error: cannot write {args.json}: {e}", file=sys.stderr)
            return cli.EXIT_SETUP_FAILED
    return cli.EXIT_INPUTS_FAILED if failures else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
