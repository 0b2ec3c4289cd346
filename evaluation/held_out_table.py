"""PULSE measured on held-out faces (evaluate.py -generated N): faces drawn from the generator, downscaled,
searched with the 2020 defaults and each -rows change of them, and scored against their truth."""
import statistics
import time

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from runkit import exits
import PULSE
from bicubic import BicubicDownSample, divides_by_power_of_two
from evaluation.row_settings import row_label, search_settings
from evaluation.shared import psnr_from_mse
from ffhq_alignment import packaged_predictor
from runkit.image_tensors import to_pil, to_tensor
from runkit.speed import PrecisionError
from settings import ModelOptions

DETECTOR = "mmod_human_face_detector.dat"  # dlib's CNN face detector, shipped by face_recognition_models
DETECTOR_SIDE = 256  # the detector finds faces of about 80 pixels and more: images are enlarged to this first


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
    return psnr_from_mse(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2), 255)


def ssim(a, b):
    from skimage.metrics import structural_similarity
    return structural_similarity(a, b, channel_axis=2, data_range=255)


def face_detector():
    import dlib
    path = packaged_predictor(DETECTOR)
    if path is None:
        raise exits.SetupError(f"dlib's {DETECTOR} not found: pip install face_recognition_models")
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
    model = models.get(changes.get("precision", ModelOptions.precision))
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
    model = models.get(ModelOptions.precision)
    for factor in args.factors:
        if not divides_by_power_of_two(model.resolution, model.resolution // factor):
            raise exits.SetupError(f"-factors {factor}: not a power of two dividing the {model.resolution}x"
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
