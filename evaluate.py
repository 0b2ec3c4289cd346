"""Score images with NIQE (lower is better), compare a PULSE run with plain upscaling as the paper
does, or measure PULSE on held-out faces drawn from a generator, against their truth.

    python evaluate.py runs/a runs/b -json scores.json
    python evaluate.py -paper input runs/a
    python evaluate.py -generated 64 -network dcgan-digiface
    python evaluate.py -generated 32 -rows steps=200 learning_rate=0.8 tries=4,stop_at_eps=on recipe=converge
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from runkit import cli, cpu_threads
import PULSE
from ffhq_alignment import packaged_predictor
from bicubic import BicubicDownSample, divides_by_power_of_two
from niqe import niqe
from runkit.files import atomic_path
from runkit.images import IMAGE_SUFFIXES, read_rgb, to_pil, to_tensor
from errors import PulseError
from runkit.speed import PrecisionError

# NIQE the paper reports on CelebA HQ at x64: a guide only, since other images give other scores
PAPER_NIQE_X64 = {"HR": 3.90, "nearest": 12.48, "bicubic": 7.06, "PULSE": 2.47}
DETECTOR = "mmod_human_face_detector.dat"  # dlib's CNN face detector, shipped by face_recognition_models
DETECTOR_SIDE = 256  # the detector finds faces of about 80 pixels and more: images are enlarged to this first


def build_parser():
    parser = cli.parser(
        "NIQE (MATLAB's no-reference quality score; lower is better) of images, "
                    "or the PULSE paper's comparison for a run.",
        epilog="Folders are read non-recursively (png, jpg, jpeg, webp). Images that cannot be read or "
               "scored are named on stderr (one line per reason) and skipped, and the exit status is then 1; "
               "-paper gives images too small for NIQE (under 96x96) their PSNR and a note.")
    parser.add_argument("folders", nargs="*", metavar="DIR",
                        help="score every image in each folder; prints count, mean and median per folder")
    parser.add_argument("-paper", "--paper", nargs=2, metavar=("INPUT_DIR", "RESULT_DIR"),
                        help="compare PULSE's results (RESULT_DIR/<stem>.png or <stem>_<k>.png) for "
                             "each low-res input with its nearest and bicubic upscales (NIQE), and "
                             "check that the results downscale back to the inputs (PSNR)")
    parser.add_argument("-json", "--json", type=Path, metavar="FILE",
                        help="also write the per-image scores and the summary to this JSON file")
    held_out = parser.add_argument_group(
        "held-out faces (-generated N): N faces drawn from the generator are downscaled by each factor and searched "
        "with the 2020 defaults, and with each -rows change of them; per factor and row: share converged, median "
        "downscale L2, PSNR and SSIM against the truth, the share in which dlib's CNN face detector finds a face, "
        "seconds and steps per face; the bicubic upscale's row first")
    held_out.add_argument("-generated", "--generated", type=cli.positive_int, metavar="N",
                          help="measure PULSE on N faces drawn from the generator")
    held_out.add_argument("-network", "--network", default="dcgan-digiface", metavar="NAME_PATH_OR_URL",
                          help="the generator, as run.py's -network (default: the DCGAN trained on DigiFace-1M)")
    held_out.add_argument("-cache_dir", "--cache_dir", default=PULSE.ModelOptions.cache_dir,
                          help="as run.py's -cache_dir: where -network is converted")
    held_out.add_argument("-faces_seed", "--faces_seed", type=cli.non_negative_int, default=1000,
                          help="seed of the faces drawn (apart from the searches' seeds)")
    held_out.add_argument("-seed", "--seed", type=cli.non_negative_int, default=0,
                          help="search seed of the first face (face i: seed + i)")
    held_out.add_argument("-factors", "--factors", type=cli.positive_int, nargs="+", default=[4, 8],
                          help="downscaling factors (powers of two)")
    held_out.add_argument("-rows", "--rows", type=settings_row, nargs="+", default=[], metavar="NAME=VALUE[,...]",
                          help="more rows: the defaults with these settings changed, e.g. steps=200, "
                               "tries=4,stop_at_eps=on or recipe=converge (names: upsample's recipe and search "
                               "settings, and precision)")
    held_out.add_argument("-write", "--write", type=Path, metavar="DIR",
                          help="also write the faces as PNGs: DIR/truth/, and DIR/x<factor>/input/ and pulse/")
    cpu_threads.add_flag(held_out)
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if sum(map(bool, (args.folders, args.paper, args.generated))) != 1:
        parser.error("give either one or more folders, -paper INPUT_DIR RESULT_DIR, or -generated N")
    most_tries = max([PULSE.recipe_config(**search_settings(row)).tries for row in args.rows], default=1)
    if args.generated and args.faces_seed in range(args.seed, args.seed + args.generated + most_tries - 1):
        parser.error("-faces_seed must not be one of the searches' seeds (-seed .. -seed + N - 1, and the seeds of "
                     "more -tries): a face drawn from a search's seed would be its starting point")
    return args


MODEL_SETTINGS = ("precision",)  # -rows may change these model options besides the search settings
ROW_SETTINGS = {option.name: option for option in fields(PULSE.SearchConfig)} | {
    option.name: option for option in fields(PULSE.ModelOptions) if option.name in MODEL_SETTINGS}


def search_settings(row):
    """What a row changes of the search: upsample's keywords (the search settings, the recipe among them)."""
    return {name: value for name, value in row.items() if name not in MODEL_SETTINGS}


def setting_value(option, text):
    """A -rows value read as run.py reads the flag of that setting (its declared parse); on/off for a switch."""
    if isinstance(option.default, bool):
        if text.lower() not in ("on", "off"):
            raise argparse.ArgumentTypeError(f"is on or off, got {text!r}")
        return text.lower() == "on"
    parse = option.metadata["parse"]
    return parse(text) if parse else text


def settings_row(text):
    """-rows' argument type: 'name=value,name=value' -> {name: value}, checked as upsample checks them."""
    row = {}
    for assignment in text.split(","):
        name, _, value = assignment.partition("=")
        if name not in ROW_SETTINGS or not value:
            raise argparse.ArgumentTypeError(f"{assignment!r} is not NAME=VALUE with a NAME among "
                                             f"{', '.join(ROW_SETTINGS)}")
        try:
            row[name] = setting_value(ROW_SETTINGS[name], value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{assignment!r}: {e}") from None
    try:
        PULSE.recipe_config(**search_settings(row))
        PULSE.ModelOptions(**{k: v for k, v in row.items() if k in MODEL_SETTINGS})
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return row


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


# ---- held-out faces -----------------------------------------------------------------------------

@torch.no_grad()
def held_out_faces(model, count, seed):
    """`count` faces [N, 3, R, R] in [0, 1] that `model`'s generator draws under its prior, from one
    random stream seeded with `seed`: every latent, then every noise map."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn((count, model.prior.rows(False), model.prior.width), generator=generator)
    noise = [torch.randn((count, 1, size, size), generator=generator) for size in model.noise_sizes]
    _, faces = model.generate(latent.to(model.anchor), [layer.to(model.anchor) for layer in noise])
    return faces.clamp(0, 1).cpu()


def as_uint8(images):
    """[N, 3, R, R] in [0, 1] -> the N HxWx3 uint8 arrays their PNGs hold."""
    return [np.asarray(to_pil(image)) for image in images]


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / mse) if mse > 0 else float("inf")


def ssim(a, b):
    from skimage.metrics import structural_similarity
    return structural_similarity(a, b, channel_axis=2, data_range=255)


def face_detector():
    import dlib
    path = packaged_predictor(DETECTOR)
    if path is None:
        raise cli.SetupError(f"dlib's {DETECTOR} not found: pip install face_recognition_models")
    return dlib.cnn_face_detection_model_v1(str(path))


def finds_face(detector, image):
    """Whether the detector finds a face in the HxWx3 uint8 `image`, enlarged (bicubic) to DETECTOR_SIDE."""
    enlarged = np.asarray(Image.fromarray(image).resize((DETECTOR_SIDE, DETECTOR_SIDE), Image.BICUBIC))
    return len(detector(enlarged, 0)) > 0


def search_held_out(model, low, seed, settings, label):
    """PULSE's results (uint8 arrays) for the inputs `low` (uint8 arrays), face i searched alone from seed + i,
    with their Results and the seconds the searches took; a bar (on a terminal) counts the faces of the row `label`."""
    start = time.perf_counter()
    faces = tqdm(low, desc=label, unit="face", leave=False, disable=None)  # None: no bar where stderr is a file
    found = [model.upsample(to_tensor(Image.fromarray(image)), seed=seed + i, **settings)[0]
             for i, image in enumerate(faces)]
    return as_uint8(torch.stack([result.tensor for result in found])), found, time.perf_counter() - start


def image_scores(images, truths, detector):
    """Mean PSNR and SSIM of `images` against `truths`, and the share in which the detector finds a face."""
    return {"psnr": statistics.fmean(psnr(a, t) for a, t in zip(images, truths)),
            "ssim": statistics.fmean(ssim(a, t) for a, t in zip(images, truths)),
            "face": statistics.fmean(finds_face(detector, image) for image in images)}


def write_faces(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"face_{i}.png")


def row_label(changes):
    def shown(value):
        return ("on" if value else "off") if isinstance(value, bool) else value
    return ",".join(f"{name}={shown(value)}" for name, value in changes.items()) or "the 2020 defaults"


class Models:
    """The generator at each precision a row asks for, loaded once; the PrecisionError where the machine refuses it."""

    def __init__(self, args):
        self.args, self.loaded = args, {}

    def get(self, precision):
        if precision not in self.loaded:
            try:
                self.loaded[precision] = PULSE.load(network=self.args.network, cache_dir=self.args.cache_dir,
                                                    precision=precision)
            except PrecisionError as e:
                self.loaded[precision] = e
        return self.loaded[precision]


def measure_row(models, low, truths, changes, seed, detector):
    """One PULSE row of the held-out table: the faces `low` searched with the defaults changed by `changes`."""
    model = models.get(changes.get("precision", PULSE.ModelOptions.precision))
    if isinstance(model, PrecisionError):
        return {"method": row_label(changes), "changes": changes, "refused": str(model)}, None
    label = f"x{truths[0].shape[0] // low[0].shape[0]} {row_label(changes)}"
    results, found, seconds = search_held_out(model, low, seed, search_settings(changes), label)
    return {"method": row_label(changes), "changes": changes, "converged": statistics.fmean(r.converged for r in found),
            "median_l2": statistics.median(r.losses["L2"] for r in found), **image_scores(results, truths, detector),
            "seconds_per_face": seconds / len(found),
            "steps_per_face": statistics.fmean(sum(t["steps"] for t in r.tries) for r in found)}, results


def measure_factor(models, truth, factor, args, detector):
    """The rows of one factor: bicubic's, then PULSE's with the defaults and with each -rows change."""
    low = as_uint8(BicubicDownSample(factor)(truth).clamp(0, 1))
    truths = as_uint8(truth)
    bicubic = [np.asarray(Image.fromarray(image).resize(truth.shape[-2:], Image.BICUBIC)) for image in low]
    rows = [{"method": "bicubic", **image_scores(bicubic, truths, detector)}]
    for changes in [{}] + args.rows:
        row, results = measure_row(models, low, truths, changes, args.seed, detector)
        rows.append(row)
        if args.write and not changes:
            write_faces(args.write / f"x{factor}" / "input", low)
            write_faces(args.write / f"x{factor}" / "pulse", results)
    return {"factor": factor, "input": low[0].shape[0], "rows": rows}


def print_held_out_table(report):
    print(f"\n{report['faces']} held-out faces from {report['network']} (faces seed {report['faces_seed']}, "
          f"search seeds from {report['seed']}: face i's is seed + i); the truth's faces found: {report['truth_face']:.0%}")
    width = max(len(row["method"]) for factor in report["factors"] for row in factor["rows"])
    print(f"{'factor':>6} {'input':>6}  {'method':{width}} {'converged':>9} {'median L2':>10} {'PSNR':>6} {'SSIM':>6} "
          f"{'face':>5} {'s/face':>7} {'steps/face':>10}")
    for factor in report["factors"]:
        for r in factor["rows"]:
            start = f"{'x' + str(factor['factor']):>6} {str(factor['input']) + 'px':>6}  {r['method']:{width}}"
            if "refused" in r:
                print(f"{start} not measured: {r['refused']}")
            elif r["method"] == "bicubic":
                print(f"{start} {'-':>9} {'-':>10} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['face']:5.0%} {'-':>7} {'-':>10}")
            else:
                print(f"{start} {r['converged']:9.0%} {r['median_l2']:10.5f} {r['psnr']:6.2f} {r['ssim']:6.3f} "
                      f"{r['face']:5.0%} {r['seconds_per_face']:7.2f} {r['steps_per_face']:10.1f}")
    print(f"PSNR (dB) and SSIM against the truth, means; face: share in which dlib's CNN detector finds a face "
          f"(images enlarged to {DETECTOR_SIDE}x{DETECTOR_SIDE} first); s/face: seconds of search per face, all its "
          f"tries; steps/face: steps searched per face, all its tries")


def evaluate_held_out(args):
    """The held-out table of -generated; returns the JSON report and no failures."""
    models = Models(args)
    model = models.get(PULSE.ModelOptions.precision)
    for factor in args.factors:
        if not divides_by_power_of_two(model.resolution, model.resolution // factor):
            raise cli.SetupError(f"-factors {factor}: not a power of two dividing the {model.resolution}x"
                                 f"{model.resolution} generator's side")
    detector = face_detector()
    truth = held_out_faces(model, args.generated, args.faces_seed)
    if args.write:
        write_faces(args.write / "truth", as_uint8(truth))
    report = {"network": args.network, "faces": args.generated, "faces_seed": args.faces_seed, "seed": args.seed,
              "truth_face": statistics.fmean(finds_face(detector, image) for image in as_uint8(truth)),
              "factors": [measure_factor(models, truth, factor, args, detector) for factor in args.factors]}
    print_held_out_table(report)
    return report, 0


def main(argv=None):
    args = parse_args(argv)
    cli.show_messages()
    cpu_threads.set_threads(args.threads)
    try:
        check_folders(args)
        if args.generated:
            report, failures = evaluate_held_out(args)
        else:
            report, failures = evaluate_paper(*args.paper) if args.paper else evaluate_folders(args.folders)
    except PulseError as e:
        return cli.report_failure(e, "evaluate.py")
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
