"""Convert generator networks into a cache folder PULSE loads, without TensorFlow or their authors' code.

    python convert_weights.py karras2019stylegan-ffhq-1024x1024.pkl -cache_dir cache
    python convert_weights.py ffhq.pkl -cache_dir cache/sg2-ffhq
    python convert_weights.py stylegan3-t-ffhq-1024x1024.pkl -cache_dir cache/sg3-t-ffhq
    python convert_weights.py checkpoint/550000.pt -cache_dir cache/mine
    python convert_weights.py netG.pth -cache_dir cache/my-dcgan

A StyleGAN-1 (TensorFlow) pickle, a stylegan2-ada-pytorch or stylegan3 pickle (its `G_ema`), a
rosinality/stylegan2-pytorch checkpoint (its `g_ema`; training or converted layout) or a state
dict of the PyTorch DCGAN tutorial's generator becomes the cache folder weights.py describes:
synthesis.pt, mapping.pt, gaussian_fit.pt (the last two where the family has a mapping network)
and generator.json, after which run.py needs nothing else. `python convert_weights.py --download ffhq` (or `celebahq`)
first downloads NVIDIA's StyleGAN-1 pickle and checks its MD5 (see releases.py).

The format is told from the file's content (read_network). NVIDIA's pickles are read by
nvidia_pickles.py's allowlist unpickler, torch.save files (rosinality's, the DCGAN's) by
torch_files.py (weights_only): nothing stored in either (NVIDIA's network source code included) is ever
executed. Which family a file is, and how its weights are read, is families.py's answer.
"""
if __name__ == "__main__":  # before the slow imports below: a stop while they load is one line too
    from runkit import quiet_stop
    quiet_stop.install()

import argparse
import sys
from pathlib import Path

from runkit import cli
from weightfiles import families, nvidia_pickles, releases, torch_files, weights
from runkit.files import file_md5, preparing
from weightfiles.download import fetch
from weightfiles.errors import WeightsError

FFHQ_MD5 = "9f4c085b663ed283f5853cc662bd0883"
KNOWN_PICKLES = {  # MD5 of NVIDIA's released files
    FFHQ_MD5: "FFHQ 1024x1024 (karras2019stylegan-ffhq-1024x1024.pkl)",
    "6604978f22ef7caea1ef5ca723282b43": "CelebA-HQ 1024x1024 (karras2019stylegan-celebahq-1024x1024.pkl)",
}


def report_model(path, log):
    """The file's MD5, telling NVIDIA's released pickles apart from other pickles (warned about)."""
    md5 = file_md5(path)
    if md5 in KNOWN_PICKLES:
        log(f"recognised NVIDIA's {KNOWN_PICKLES[md5]}")
    elif not torch_files.is_torch_save_file(path):
        print(f"warning: {path} (MD5 {md5}) is not one of NVIDIA's released pickles that this port knows; "
              f"converting it anyway", file=sys.stderr)
    return md5


def gaussian_fit_of(mapping, md5, gaussian_draws, log):
    if md5 == FFHQ_MD5:
        # The bundled file is the 2020 fit of exactly this network: keep its bits, so runs
        # reproduce the 2020 results instead of a fit that differs in the last digits.
        log("taking the bundled 2020 gaussian_fit.pt of the FFHQ model")
        return weights.load_gaussian_fit(weights.BUNDLED_FIT)
    return weights.fit_gaussian(mapping, draws=gaussian_draws, log=log)


def check_cache_family(cache_dir, family):
    """Refuse to write over a generator of another family (the user's 2020 files, say)."""
    there = weights.folder_family(cache_dir)
    if there not in (None, family):
        raise WeightsError(f"{cache_dir} already holds a {families.family(there).title} generator; "
                           f"convert into another -cache_dir")


def read_network(path):
    """The object in the network file at `path`, for families.family_of: a file torch.save wrote is
    read as a torch_files.TorchFile, any other as NVIDIA's pickle."""
    if torch_files.is_torch_save_file(path):
        return torch_files.read(path)
    return nvidia_pickles.read(path)


def convert(pickle_path, cache_dir, gaussian_draws=weights.GAUSSIAN_FIT_DRAWS, log=print, source=None):
    """Write the cache folder (weights.py) of the network file at `pickle_path` into `cache_dir`;
    `source` (default: the pickle's path) is recorded in generator.json. Returns the pickle's MD5."""
    md5 = report_model(pickle_path, log)
    network_file = read_network(pickle_path)
    cache_dir = Path(cache_dir)
    name = families.family_of(network_file)
    check_cache_family(cache_dir, name)
    family = families.FAMILIES[name]
    synthesis_state, mapping_state, attributes = family.read(network_file, str(pickle_path))
    where = f"the network in {pickle_path}"
    synthesis = families.build(name, "synthesis", synthesis_state, attributes, where)
    mapping = families.build(name, "mapping", mapping_state, attributes, where) if family.mapping else None
    log(f"converted a {synthesis.resolution}x{synthesis.resolution} generator ({family.title}: "
        f"{synthesis.num_ws} ws of {synthesis.dlatent_size}, {len(synthesis.noise_sizes)} noise layers)")
    fit = gaussian_fit_of(mapping, md5, gaussian_draws, log) if mapping else None
    record = {"family": name, "attributes": attributes, "source": source or str(Path(pickle_path).resolve()),
              "md5": md5}
    weights.save_generator(cache_dir, record, synthesis, mapping, fit)
    log(f"saved the generator to {cache_dir}/")
    return md5


def fetch_and_convert(source, cache_dir, keep_pickle=False, gaussian_draws=weights.GAUSSIAN_FIT_DRAWS, log=print):
    """Download `source`'s pickle into `cache_dir` (verified before it is unpickled), convert it there
    and delete it unless `keep_pickle`; returns its MD5. A pickle kept earlier is reused."""
    pickle_path = Path(cache_dir) / source.file
    if not (pickle_path.is_file() and source.md5 in (None, file_md5(pickle_path))):
        fetch(source.url, pickle_path, source.md5, source.size)
    md5 = convert(pickle_path, cache_dir, gaussian_draws, log, source=source.url)
    if not keep_pickle:
        pickle_path.unlink()
    return md5


def download_release(name, cache_dir, keep_pickle=False, gaussian_draws=weights.GAUSSIAN_FIT_DRAWS, log=print):
    """NVIDIA's `name` pickle from the first of its sources that works, converted into `cache_dir`."""
    def attempt(source):
        return fetch_and_convert(source, cache_dir, keep_pickle, gaussian_draws, log)
    with preparing(cache_dir, log):
        return releases.fetch_first(releases.sources(name), attempt, f"no {name} weights in {cache_dir}/",
                                    releases.ways_on(cache_dir), log)


def at_least_two(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("needs at least 2 draws to estimate a standard deviation")
    return value


def build_parser():
    parser = cli.parser(
        "Convert NVIDIA's StyleGAN-1 pickle (e.g. karras2019stylegan-ffhq-1024x1024.pkl), stylegan2-ada-pytorch "
        "or stylegan3 pickle (e.g. ffhq.pkl, stylegan3-t-ffhq-1024x1024.pkl), a rosinality/stylegan2-pytorch "
        "checkpoint (e.g. 550000.pt) or a PyTorch DCGAN tutorial generator (e.g. netG.pth) into the weight files "
        "(and gaussian_fit.pt) for PULSE. Neither TensorFlow nor their authors' code is needed, and the file is "
        "read without running any code from it.")
    parser.add_argument("pickle", type=Path, nargs="?", metavar="PICKLE",
                        help="the network file, its format told from its content: NVIDIA's .pkl (StyleGAN-1's "
                             "(G, D, Gs), or a dict with G_ema from stylegan2-ada-pytorch or stylegan3), "
                             "rosinality's .pt (with g_ema), or a torch.save file (.pt, .pth, .tar) of a DCGAN "
                             "state dict (main.N.*, bare or as netG_state_dict)")
    parser.add_argument("-download", "--download", choices=releases.DOWNLOADABLE,
                        help="instead of PICKLE: download NVIDIA's pickle of this model, check its MD5 and convert it")
    parser.add_argument("-keep_pickle", "--keep_pickle", action="store_true",
                        help="with -download: keep the downloaded pickle in the cache folder (about 300 MB)")
    parser.add_argument("-cache_dir", "--cache_dir", type=Path, default=Path("cache"), metavar="DIR",
                        help="folder to write the weight files to, the one run.py reads")
    parser.add_argument("-gaussian_draws", "--gaussian_draws", type=at_least_two, default=weights.GAUSSIAN_FIT_DRAWS,
                        metavar="N", help="latents drawn to fit gaussian_fit.pt (about a minute on a CPU)")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.pickle is None) == (args.download is None):
        parser.error("give either a PICKLE to convert or -download MODEL")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.download:
            download_release(args.download, args.cache_dir, args.keep_pickle, args.gaussian_draws)
        else:
            convert(args.pickle, args.cache_dir, args.gaussian_draws)
    except (WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.EXIT_SETUP_FAILED
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
