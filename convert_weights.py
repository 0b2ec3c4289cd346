"""Convert generator networks into a cache folder PULSE loads, without TensorFlow or their authors' code.

    python convert_weights.py karras2019stylegan-ffhq-1024x1024.pkl -cache_dir cache
    python convert_weights.py ffhq.pkl -cache_dir cache/sg2-ffhq
    python convert_weights.py stylegan3-t-ffhq-1024x1024.pkl -cache_dir cache/sg3-t-ffhq
    python convert_weights.py checkpoint/550000.pt -cache_dir cache/mine
    python convert_weights.py netG.pth -cache_dir cache/my-dcgan

The network file (of any family in weightfiles/families.py: its format told from its content,
nothing in it ever run) becomes a cache folder (weights.py), after which run.py needs nothing
else. `python convert_weights.py --download ffhq` (or `celebahq`) first downloads NVIDIA's
StyleGAN-1 pickle and checks its MD5 (releases.py). The work is weightfiles/conversion.py's; this is its command line.
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import sys
from pathlib import Path

from runkit import exits, flags, messages
from weightfiles import conversion, families, releases
from errors import PulseError


def build_parser():
    parser = flags.parser(
        f"Convert a generator network ({', '.join(f.title for f in families.FAMILIES.values())}) into the weight "
        "files (and gaussian_fit.pt) for PULSE. Neither TensorFlow nor their authors' code is needed, and the file "
        "is read without running any code from it.")
    parser.add_argument("pickle", type=Path, nargs="?", metavar="PICKLE",
                        help=f"the network file, its format told from its content: {families.files_in_words()}")
    parser.add_argument("-download", "--download", choices=releases.DOWNLOADABLE,
                        help="instead of PICKLE: download NVIDIA's pickle of this model, check its MD5 and convert it")
    parser.add_argument("-keep_pickle", "--keep_pickle", action="store_true",
                        help="with -download: keep the downloaded pickle in the cache folder (about 300 MB)")
    parser.add_argument("-cache_dir", "--cache_dir", type=Path, default=Path("cache"), metavar="DIR",
                        help="folder to write the weight files to, the one run.py reads")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.pickle is None) == (args.download is None):
        parser.error("give either a PICKLE to convert or -download MODEL")
    return args


def main(argv=None):
    args = parse_args(argv)
    messages.show_messages()
    try:
        if args.download:
            conversion.download_release(args.download, args.cache_dir, args.keep_pickle)
        else:
            conversion.convert(args.pickle, args.cache_dir)
    except (PulseError, OSError) as e:
        return exits.report_failure(e, "convert_weights.py")
    return exits.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
