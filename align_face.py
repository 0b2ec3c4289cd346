#!/usr/bin/env python3
"""Find, align and downscale the faces in a folder of photos, ready for run.py.

Each face dlib finds is cropped, levelled and scaled the way FFHQ was built
(NVlabs/ffhq-dataset), giving the 1024x1024 framing StyleGAN learnt, then shrunk to
-output_size with the same bicubic operator PULSE inverts. Face i of photo.jpg is
written as <output_dir>/photo_<i>.png, numbered from 0 as in 2020. The alignment itself
is ffhq_alignment.py's; this file is its command line.
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import argparse
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from runkit import exits, flags
from errors import PulseError
from ffhq_alignment import ALIGNED_SIZE, OUTPUT_SIZES, PREDICTOR_NAME, FaceAligner
from runkit.exits import SetupError
from runkit.files import save_image, stem_clashes
from runkit.images import ImageReadError


# ---------------------------------------------------------------- command line

def output_size(text):
    """argparse type: a power of two that divides 1024, so the bicubic factor is a whole power of two."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if size not in OUTPUT_SIZES:
        raise argparse.ArgumentTypeError(
            f"{size} is not a power of two between 1 and {ALIGNED_SIZE} (e.g. 16, 32, 64)")
    return size


def build_parser():
    parser = flags.parser(
        "Align every face in -input_dir the FFHQ way (1024x1024) and downscale it "
        "to -output_size for PULSE. Face i of photo.jpg becomes <output_dir>/photo_<i>.png.",
        epilog=exits.EXIT_STATUSES)
    parser.add_argument("-input_dir", "--input_dir", type=Path, default=Path("realpics"),
                        help="folder of photos: JPEG, PNG, WebP, ...")
    parser.add_argument("-output_dir", "--output_dir", type=Path, default=Path("input"),
                        help="where the downscaled faces are written")
    parser.add_argument("-output_size", "--output_size", type=output_size, default=32,
                        help="side of the written faces in pixels; a power of two dividing 1024")
    parser.add_argument("-seed", "--seed", type=int, nargs="?",
                        help="has no effect (alignment is deterministic); kept for compatibility "
                             "with 2020 command lines")
    parser.add_argument("-cache_dir", "--cache_dir", type=Path, default=Path("cache"),
                        help="where a downloaded " + PREDICTOR_NAME + " is kept")
    parser.add_argument("-predictor", "--predictor", type=Path, metavar="PATH",
                        help="a local " + PREDICTOR_NAME + "; by default the copy installed by "
                             "`pip install face_recognition_models` is used, then -cache_dir, "
                             "then a download")
    parser.add_argument("-keep_hr", "--keep_hr", action="store_true",
                        help="also write each 1024x1024 aligned face to <output_dir>/hr/")
    return parser


# ---------------------------------------------------------------- photos

def list_photos(folder):
    if not folder.is_dir():
        raise SetupError(f"input folder {folder} does not exist: create it and put photos in it, or pass -input_dir")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not photos:
        raise SetupError(f"input folder {folder} holds no files: put photos in it, or pass -input_dir")
    clashes = stem_clashes(photos)
    if clashes:  # faces are named by the photo's stem: photo.jpg and photo.png would overwrite each other's
        raise SetupError(f"photos with the same name would write the same faces: {'; '.join(clashes)}. "
                         f"Rename or remove one of each")
    return photos


# ---------------------------------------------------------------- output

def make_output_folders(args):
    """Create -output_dir, and its hr/ folder when -keep_hr asks for one (else None)."""
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if not args.keep_hr:
        return args.output_dir, None
    hr_dir = args.output_dir / "hr"
    hr_dir.mkdir(exist_ok=True)
    return args.output_dir, hr_dir


def process_photo(path, aligner, downscale, output_dir, hr_dir):
    """Align and write every face of one photo; returns what happened, for the summary."""
    try:
        faces = aligner.faces(path, downscale)
    except ImageReadError as e:
        tqdm.write(f"{e}, skipped", file=sys.stderr)
        return Counter(unreadable=1)
    if not faces:
        tqdm.write(f"{path}: no face found", file=sys.stderr)
        return Counter(photos=1, faceless=1)
    tqdm.write(f"{path}: {len(faces)} face(s)")
    for i, (crop, small) in enumerate(faces):
        if hr_dir is not None:
            save_image(crop, hr_dir / f"{path.stem}_{i}.png")
        save_image(small, output_dir / f"{path.stem}_{i}.png")
    return Counter(photos=1, faces=len(faces))


def main(argv=None):
    args = build_parser().parse_args(argv)
    from device import pick_device  # torch: after the flags, so --help needs none
    from runkit.image_tensors import bicubic_downscaler
    try:
        photos = list_photos(args.input_dir)
        aligner = FaceAligner(args.cache_dir, args.predictor)
        downscale = bicubic_downscaler(ALIGNED_SIZE // args.output_size, pick_device())
        output_dir, hr_dir = make_output_folders(args)
    except (PulseError, OSError) as e:
        return exits.report_failure(e, "align_face.py")

    tally = Counter()
    for path in tqdm(photos, unit="photo", disable=None):
        tally += process_photo(path, aligner, downscale, output_dir, hr_dir)
    failures = tally["unreadable"] + tally["faceless"]
    print(f"{tally['photos']} photo(s) read, {tally['faces']} face(s) written to {args.output_dir}, "
          f"{failures} failure(s) ({tally['unreadable']} unreadable, {tally['faceless']} without a face)")
    return exits.EXIT_INPUTS_FAILED if failures else exits.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
