"""The PULSE paper's comparison of a run (evaluate.py -paper): NIQE of its results against the nearest and
bicubic upscales of their inputs, and the PSNR of the results downscaled back to the inputs."""
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bicubic import BicubicDownSample, divides_by_power_of_two
from evaluation.shared import fmt, list_images, load_rgb, psnr_from_mse, summarise
from niqe import niqe

# NIQE the paper reports on CelebA HQ at x64: a guide only, since other images give other scores
PAPER_NIQE_X64 = {"HR": 3.90, "nearest": 12.48, "bicubic": 7.06, "PULSE": 2.47}


def report_failure(path, error):
    print(f"skipped {path}: {error}", file=sys.stderr)


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
    return psnr_from_mse(mse, 1)


def compare_input(input_path, result_paths, unscored):
    """NIQE of the nearest and bicubic upscales of one input, and NIQE and PSNR of its results. Where
    NIQE cannot be had (an image smaller than its 96x96 blocks) it is None, and `unscored` (a Counter)
    counts the reason; PSNR needs no NIQE."""
    def niqe_if_possible(image):
        try:
            return niqe(image)
        except ValueError as error:
            unscored[str(error)] += 1
            return None

    low = load_rgb(input_path)
    results = {path.name: load_rgb(path) for path in result_paths}
    size = next(iter(results.values())).shape[:2]
    if any(result.shape[:2] != size for result in results.values()):
        raise ValueError("its results differ in size")
    return {"nearest": niqe_if_possible(upscale(low, size, Image.NEAREST)),
            "bicubic": niqe_if_possible(upscale(low, size, Image.BICUBIC)),
            "results": {name: {"niqe": niqe_if_possible(result), "psnr": downscale_psnr(result, low)}
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
    report, failures, unscored = {}, 0, Counter()
    for input_path in inputs:
        result_paths = find_results(input_path, result_dir, stems)
        try:
            if not result_paths:
                raise ValueError(f"no {input_path.stem}.png or {input_path.stem}_<k>.png in {result_dir}")
            report[input_path.name] = compare_input(input_path, result_paths, unscored)
        except (OSError, ValueError) as error:
            report_failure(input_path, error)
            failures += 1
    results = [r for entry in report.values() for r in entry["results"].values()]

    def mean(values):
        return summarise(value for value in values if value is not None)["mean"]
    summary = {"inputs": len(report), "results": len(results),
               "nearest": mean(e["nearest"] for e in report.values()),
               "bicubic": mean(e["bicubic"] for e in report.values()),
               "pulse": mean(r["niqe"] for r in results), "psnr": mean(r["psnr"] for r in results)}
    print_paper_table(summary)
    for reason, count in unscored.items():
        print(f"note: no NIQE for {count} image(s): {reason}")
    return {"metric": "NIQE", "inputs": report, "summary": summary, "paper_x64": PAPER_NIQE_X64}, failures
