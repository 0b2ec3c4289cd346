"""Score images with NIQE (lower is better), compare a PULSE run with plain upscaling as the paper
does, or measure PULSE on held-out faces drawn from a generator, against their truth.

    python evaluate.py runs/a runs/b -json scores.json
    python evaluate.py -paper input runs/a
    python evaluate.py -generated 64 -network dcgan-digiface
    python evaluate.py -generated 32 -rows steps=200 learning_rate=0.8 tries=4,stop_at_eps=on recipe=converge

Each job is a module of evaluation/; this file is their command line: the flags, which job runs, the JSON
report and the exit status.
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import json
import sys
from pathlib import Path

from runkit import exits, flags, messages
from errors import PulseError
from evaluation.row_settings import search_settings, settings_row
from runkit.files import atomic_path
from settings import ModelOptions, recipe_config


def build_parser():
    parser = flags.parser(
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
    held_out.add_argument("-generated", "--generated", type=flags.positive_int, metavar="N",
                          help="measure PULSE on N faces drawn from the generator")
    held_out.add_argument("-network", "--network", default="dcgan-digiface", metavar="NAME_PATH_OR_URL",
                          help="the generator, as run.py's -network (default: the DCGAN trained on DigiFace-1M)")
    held_out.add_argument("-cache_dir", "--cache_dir", default=ModelOptions.cache_dir,
                          help="as run.py's -cache_dir: where -network is converted")
    held_out.add_argument("-faces_seed", "--faces_seed", type=flags.non_negative_int, default=1000,
                          help="seed of the faces drawn (apart from the searches' seeds)")
    held_out.add_argument("-seed", "--seed", type=flags.non_negative_int, default=0,
                          help="search seed of the first face (face i: seed + i)")
    held_out.add_argument("-factors", "--factors", type=flags.positive_int, nargs="+", default=[4, 8],
                          help="downscaling factors (powers of two)")
    held_out.add_argument("-rows", "--rows", type=settings_row, nargs="+", default=[], metavar="NAME=VALUE[,...]",
                          help="more rows: the defaults with these settings changed, e.g. steps=200, "
                               "tries=4,stop_at_eps=on or recipe=converge (names: upsample's recipe and search "
                               "settings, and precision)")
    held_out.add_argument("-write", "--write", type=Path, metavar="DIR",
                          help="also write the faces as PNGs: DIR/truth/, and DIR/x<factor>/input/ and pulse/")
    flags.add_threads_flag(held_out)
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if sum(map(bool, (args.folders, args.paper, args.generated))) != 1:
        parser.error("give either one or more folders, -paper INPUT_DIR RESULT_DIR, or -generated N")
    most_tries = max([recipe_config(**search_settings(row)).tries for row in args.rows], default=1)
    if args.generated and args.faces_seed in range(args.seed, args.seed + args.generated + most_tries - 1):
        parser.error("-faces_seed must not be one of the searches' seeds (-seed .. -seed + N - 1, and the seeds of "
                     "more -tries): a face drawn from a search's seed would be its starting point")
    return args


def main(argv=None):
    args = parse_args(argv)
    # torch and the jobs' code: after the flags, so --help needs neither
    from evaluation import folder_scores, held_out_table, paper_comparison, shared
    from runkit import cpu_threads
    messages.show_messages()
    cpu_threads.set_threads(args.threads)
    try:
        # results are looked up per input: -paper needs images in its input folder only
        shared.check_folders(args.paper or args.folders, args.paper[:1] if args.paper else args.folders)
        if args.generated:
            report, failures = held_out_table.evaluate_held_out(args)
        else:
            report, failures = (paper_comparison.evaluate_paper(*args.paper) if args.paper
                                else folder_scores.evaluate_folders(args.folders))
    except PulseError as e:
        return exits.report_failure(e, "evaluate.py")
    if args.json:
        try:
            with atomic_path(args.json) as tmp:
                tmp.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as e:
            print(f"error: cannot write {args.json}: {e}", file=sys.stderr)
            return exits.EXIT_SETUP_FAILED
    return exits.EXIT_INPUTS_FAILED if failures else exits.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
