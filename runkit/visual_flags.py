"""run.py's flags for pictures (-strip, -hr_dir, -gif), declared and checked apart from visuals.py,
which draws them: this module imports no torch, so run.py --help need not load it.
"""
from pathlib import Path

PANEL = 256  # side of a strip panel, and the largest side of a GIF frame (-gif's help says it)


def add_flags(parser):
    pictures = parser.add_argument_group("pictures")
    pictures.add_argument("-strip", "--strip", action="store_true",
                          help="write <output_dir>/<stem>_strip.png per input: input, bicubic upscale, "
                               "[ground truth], then each result and its downscale, labelled")
    pictures.add_argument("-hr_dir", "--hr_dir",
                          help="with -strip: folder of the true high-resolution faces named like the "
                               "inputs (<stem>.png/.jpg/.jpeg/.webp), added as a 'ground truth' panel")
    pictures.add_argument("-gif", "--gif", action="store_true",
                          help="write <output_dir>/<name>_search.gif per result: the best image so far "
                               f"at every step (at most {PANEL}x{PANEL}), with the step and its L2")


def check_flags(parser, args):
    if args.hr_dir is None:
        return
    if not args.strip:
        parser.error("argument -hr_dir: the ground truth is only shown in strips; add -strip")
    if not Path(args.hr_dir).is_dir():
        parser.error(f"argument -hr_dir: {args.hr_dir} is not a folder")
