"""Convert generator networks into the weight files PULSE loads, without TensorFlow or their authors' code.

    python convert_weights.py karras2019stylegan-ffhq-1024x1024.pkl -cache_dir cache
    python convert_weights.py ffhq.pkl -cache_dir cache/sg2-ffhq
    python convert_weights.py stylegan3-t-ffhq-1024x1024.pkl -cache_dir cache/sg3-t-ffhq
    python convert_weights.py 550000.pt -cache_dir cache/my-rosinality-model

The format is told from the file's content. A StyleGAN-1 (TensorFlow) pickle gives `synthesis.pt`,
`mapping.pt` (the 2020 PyTorch layout); a stylegan2-ada-pytorch or stylegan3 pickle, or a
rosinality/stylegan2-pytorch checkpoint (training or converted layout), gives its family's files
(weights.family_files: its `G_ema` / `g_ema` under its authors' parameter names). All get
`gaussian_fit.pt`, after which run.py needs nothing else. `python convert_weights.py --download
ffhq` (or `celebahq`) first downloads NVIDIA's StyleGAN-1 pickle and checks its MD5 (see releases.py).

NVIDIA's pickles are read by nvidia_pickles.py's allowlist unpickler, rosinality's checkpoints by
rosinality_checkpoints.py (weights_only): nothing stored in either (NVIDIA's network source code
included) is ever executed.
"""
import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

import cli
import nvidia_pickles
import releases
import rosinality
import rosinality_checkpoints
import stylegan3
import weights
from download import fetch
from files import file_md5, folder_lock
from nvidia_pickles import NetworkStandIn
from stylegan import G_mapping, synthesis_from_state_dict

FFHQ_MD5 = "9f4c085b663ed283f5853cc662bd0883"
KNOWN_PICKLES = {  # MD5 of NVIDIA's released files
    FFHQ_MD5: "FFHQ 1024x1024 (karras2019stylegan-ffhq-1024x1024.pkl)",
    "6604978f22ef7caea1ef5ca723282b43": "CelebA-HQ 1024x1024 (karras2019stylegan-celebahq-1024x1024.pkl)",
}




def describe(obj):
    if isinstance(obj, (tuple, list, dict)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return f"a {type(obj).__name__}"


def find_gs(data, path):
    """The state of Gs, the averaged generator PULSE uses, from NVIDIA's (G, D, Gs) tuple."""
    if isinstance(data, (tuple, list)) and len(data) == 3:
        gs = data[2]
    elif isinstance(data, dict) and "Gs" in data:
        gs = data["Gs"]
    else:
        gs = data
    if not isinstance(gs, NetworkStandIn):
        raise weights.WeightsError(f"{path} is not a StyleGAN-1 network pickle: expected NVIDIA's "
                                   f"(G, D, Gs) tuple of networks, found {describe(data)}")
    return gs.state


def network_variables(state, what):
    """The variables of one pickled network as {name relative to the network: float array}."""
    try:
        pairs = list(state["variables"])
        arrays = {str(name): np.asarray(value) for name, value in pairs}
    except (KeyError, TypeError, ValueError) as e:
        raise weights.WeightsError(f"the {what} network in the pickle has no readable variable list ({e})") from e
    not_float = [name for name, value in arrays.items() if value.dtype.kind != "f"]
    if not_float:
        raise weights.WeightsError(f"the {what} network holds non-float variables: {', '.join(not_float[:5])}")
    return arrays


def component_variables(gs_state, name):
    components = gs_state.get("components") if isinstance(gs_state, dict) else None
    if not isinstance(components, dict) or not isinstance(components.get(name), NetworkStandIn):
        raise weights.WeightsError(f"Gs in the pickle has no '{name}' network; is this a StyleGAN-1 pickle?")
    return network_variables(components[name].state, name)


def tensor(array):
    """A float32 tensor owning a copy of `array` (pickled arrays may be read-only views)."""
    return torch.from_numpy(np.array(array, dtype=np.float32))


def conv_weight_from_tf(array):
    """TF conv weights are [k, k, in, out]; PyTorch wants [out, in, k, k] (the fused upscale conv too)."""
    return tensor(array).permute(3, 2, 0, 1).contiguous()


def dense_weight_from_tf(array):
    """TF dense weights are [in, out]; PyTorch's are [out, in]."""
    return tensor(array).t().contiguous()


TF_LAYERS = {  # TF scope inside a block -> (PyTorch conv module, epilogue after it)
    "Const": (None, "epi1"),
    "Conv": ("conv", "epi2"),
    "Conv0_up": ("conv0_up", "epi1"),
    "Conv1": ("conv1", "epi2"),
}
SYNTHESIS_VARIABLE = re.compile(r"(?P<block>\d+x\d+)/(?P<layer>\w+)/(?P<param>.+)")
SYNTHESIS_UNUSED = re.compile(r"lod|noise\d+|ToRGB_lod[1-9]\d*/(weight|bias)")  # PULSE only draws at full size


def synthesis_key(tf_name):
    """(PyTorch key, converter) for a synthesis variable PULSE uses, else None."""
    if tf_name == "ToRGB_lod0/weight":
        return "torgb.weight", conv_weight_from_tf
    if tf_name == "ToRGB_lod0/bias":
        return "torgb.bias", tensor
    match = SYNTHESIS_VARIABLE.fullmatch(tf_name)
    if not match or match["layer"] not in TF_LAYERS:
        return None
    conv, epilogue = TF_LAYERS[match["layer"]]
    block, param = f"blocks.{match['block']}", match["param"]
    if param == "Noise/weight":
        return f"{block}.{epilogue}.noise.weight", tensor
    if param == "StyleMod/weight":
        return f"{block}.{epilogue}.style_mod.lin.weight", dense_weight_from_tf
    if param == "StyleMod/bias":
        return f"{block}.{epilogue}.style_mod.lin.bias", tensor
    if conv is None:  # the Const scope: the learned input and the bias added to it
        return (f"{block}.{param}", tensor) if param in ("const", "bias") else None
    if param == "weight":
        return f"{block}.{conv}.weight", conv_weight_from_tf
    return (f"{block}.{conv}.bias", tensor) if param == "bias" else None


def check_all_used(leftover, what):
    if leftover:
        raise weights.WeightsError(f"unexpected variables in the {what} network (not the StyleGAN-1 "
                                   f"architecture PULSE uses): {', '.join(sorted(leftover)[:8])}")


def convert_synthesis(variables):
    """The 2020 synthesis state dict (in the module's own key order) from the TF variables."""
    converted, leftover = {}, []
    for tf_name, array in variables.items():
        target = synthesis_key(tf_name)
        if target:
            key, to_torch = target
            converted[key] = to_torch(array)
        elif not SYNTHESIS_UNUSED.fullmatch(tf_name):
            leftover.append(tf_name)
    check_all_used(leftover, "synthesis")
    try:
        model = synthesis_from_state_dict(converted)
        # The blur kernels are fixed buffers, not variables, so they come from the fresh module.
        converted.update({key: value for key, value in model.state_dict().items() if key.endswith(".kernel")})
        model.load_state_dict(converted, strict=True)
    except (KeyError, ValueError, RuntimeError) as e:
        raise weights.WeightsError(f"the synthesis network in the pickle does not fit StyleGAN-1: "
                                   f"{str(e).strip().splitlines()[0]}") from e
    return {key: converted[key] for key in model.state_dict()}


def convert_mapping(variables):
    converted, leftover = {}, []
    for tf_name, array in variables.items():
        match = re.fullmatch(r"Dense(\d+)/(weight|bias)", tf_name)
        if match is None:
            leftover.append(tf_name)
            continue
        key = f"dense{match[1]}.{match[2]}"
        converted[key] = dense_weight_from_tf(array) if match[2] == "weight" else tensor(array)
    check_all_used(leftover, "mapping")
    model = G_mapping()
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as e:
        raise weights.WeightsError(f"the mapping network in the pickle does not fit StyleGAN-1: "
                                   f"{str(e).strip().splitlines()[0]}") from e
    return {key: converted[key] for key in model.state_dict()}, model.eval().requires_grad_(False)


def report_model(path, log):
    md5 = file_md5(path)
    if md5 in KNOWN_PICKLES:
        log(f"recognised NVIDIA's {KNOWN_PICKLES[md5]}")
    else:
        print(f"warning: {path} (MD5 {md5}) is not one of NVIDIA's released pickles that this port knows; "
              f"converting it anyway", file=sys.stderr)
    return md5


def write_gaussian_fit(mapping, md5, cache_dir, gaussian_draws, log):
    destination = cache_dir / "gaussian_fit.pt"
    if md5 == FFHQ_MD5:
        # The bundled file is the 2020 fit of exactly this network: keep its bits, so runs
        # reproduce the 2020 results instead of a fit that differs in the last digits.
        weights.save_tensors(weights.load_gaussian_fit(weights.SCRIPT_DIR / "gaussian_fit.pt"), destination)
        log(f"copied the bundled 2020 gaussian_fit.pt of the FFHQ model to {destination}")
        return
    weights.fit_and_save_gaussian(mapping, destination, gaussian_draws, log)


def convert_stylegan1(data, pickle_path, cache_dir, log):
    """Write synthesis.pt and mapping.pt; returns the mapping network (for the gaussian fit)."""
    gs = find_gs(data, pickle_path)
    synthesis = convert_synthesis(component_variables(gs, "synthesis"))
    mapping_state, mapping = convert_mapping(component_variables(gs, "mapping"))
    resolution = synthesis_from_state_dict(synthesis).resolution
    log(f"converted a {resolution}x{resolution} generator (StyleGAN-1)")
    weights.save_tensors(synthesis, cache_dir / "synthesis.pt")
    weights.save_tensors(mapping_state, cache_dir / "mapping.pt")
    log(f"saved {cache_dir / 'synthesis.pt'} and {cache_dir / 'mapping.pt'}")
    return mapping


def fetch_and_convert(source, cache_dir, keep_pickle=False, gaussian_draws=weights.GAUSSIAN_FIT_DRAWS, log=print):
    """Download `source`'s pickle into `cache_dir` (verified before it is unpickled), convert it there
    and delete it unless `keep_pickle`; returns its MD5. A pickle kept earlier is reused."""
    pickle_path = Path(cache_dir) / source.file
    if not (pickle_path.is_file() and source.md5 in (None, file_md5(pickle_path))):
        fetch(source.url, pickle_path, source.md5, source.size)
    md5 = convert(pickle_path, cache_dir, gaussian_draws, log)
    if not keep_pickle:
        pickle_path.unlink()
    return md5


def download_release(name, cache_dir, keep_pickle=False, gaussian_draws=weights.GAUSSIAN_FIT_DRAWS, log=print):
    """NVIDIA's `name` pickle from the first of its sources that works, converted into `cache_dir`."""
    def attempt(source):
        return fetch_and_convert(source, cache_dir, keep_pickle, gaussian_draws, log)
    with folder_lock(cache_dir, log):
        return releases.fetch_first(releases.sources(name), attempt, cache_dir, log)


# ---- StyleGAN2: G_ema of a stylegan2-ada-pytorch pickle -------------------------------------

ACTIVATIONS = {"FullyConnectedLayer": "lrelu", "SynthesisLayer": "lrelu", "Conv2dLayer": "linear"}


def stylegan2_attribute(g_ema, path, name):
    module = nvidia_pickles.submodule(g_ema, path)
    if module is None or name not in module.state:
        raise weights.WeightsError(f"G_ema in the pickle has no {path}.{name}; is this a StyleGAN2 or StyleGAN3 "
                                   f"generator?")
    return module.state[name]


def check_stylegan2_layers(g_ema, activations=ACTIVATIONS):
    """Refuse what this port does not compute: labels, other activations or layer types."""
    if int(g_ema.state.get("c_dim", 0) or 0):
        raise weights.WeightsError("G_ema is a conditional generator (c_dim > 0); PULSE needs an unconditional one")
    for path, module in nvidia_pickles.named_modules(g_ema):
        expected = "linear" if path.endswith("affine") else activations.get(module.class_name)
        if expected and module.state.get("activation") != expected:
            raise weights.WeightsError(f"G_ema.{path} uses activation {module.state.get('activation')!r}, "
                                       f"this port computes {expected!r}")


def generator_states(g_ema):
    """{"synthesis": state, "mapping": state} of a PyTorch G_ema (NVIDIA's names, float32 tensors)."""
    tensors = nvidia_pickles.module_tensors(g_ema)
    states = {part: {key[len(part) + 1:]: value.float().contiguous() for key, value in tensors.items()
                     if key.startswith(part + ".")} for part in ("synthesis", "mapping")}
    leftover = [key for key in tensors if key.split(".")[0] not in states]
    check_all_used(leftover, "G_ema")
    return states


def mapping_lr_multiplier(g_ema):
    return float(stylegan2_attribute(g_ema, "mapping.fc0", "bias_gain"))


def stylegan2_states(g_ema):
    """(synthesis state, mapping state, attributes) of G_ema: NVIDIA's names, float32 tensors, and
    the two numbers the state dicts do not hold (conv_clamp, the mapping's lr_multiplier)."""
    check_stylegan2_layers(g_ema)
    states = generator_states(g_ema)
    conv_clamp = stylegan2_attribute(g_ema, "synthesis.b4.conv1", "conv_clamp")
    attributes = {"conv_clamp": None if conv_clamp is None else float(conv_clamp),
                  "mapping_lr_multiplier": mapping_lr_multiplier(g_ema)}
    return states["synthesis"], states["mapping"], attributes


def stylegan3_states(g_ema):
    """(synthesis state, mapping state, attributes) of a StyleGAN3 G_ema: the attributes are
    stylegan3.attributes_of_pickle's and the mapping's lr_multiplier."""
    # A StyleGAN3 SynthesisLayer names no activation: it is always filtered_lrelu's leaky ReLU.
    check_stylegan2_layers(g_ema, {"FullyConnectedLayer": "lrelu"})
    states = generator_states(g_ema)
    try:
        synthesis = stylegan3.attributes_of_pickle(nvidia_pickles.submodule(g_ema, "synthesis").state)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise weights.WeightsError(f"G_ema.synthesis in the pickle is not a StyleGAN3 synthesis network "
                                   f"({type(e).__name__}: {e})") from e
    return states["synthesis"], states["mapping"], {"synthesis": synthesis,
                                                    "mapping_lr_multiplier": mapping_lr_multiplier(g_ema)}


def read_network(path):
    """(family, what convert needs of it) of the network file at `path`, told apart by content:
    ("stylegan1", the unpickled data), or for a PyTorch network (family, (synthesis state,
    mapping state, attributes)) with a family of weights.CONVERTED_FAMILIES."""
    if rosinality_checkpoints.is_torch_save_file(path):
        synthesis_state, mapping_state = rosinality.split_state(rosinality_checkpoints.read_checkpoint(path))
        return "rosinality", (synthesis_state, mapping_state, {})
    data = nvidia_pickles.read(path)
    if not nvidia_pickles.is_stylegan2_pickle(data):
        return "stylegan1", data
    if nvidia_pickles.is_stylegan3_generator(data["G_ema"]):
        return "stylegan3", stylegan3_states(data["G_ema"])
    return "stylegan2", stylegan2_states(data["G_ema"])


def convert_pytorch(family, states, path, cache_dir, log):
    """Write the files of a converted `family`; returns the mapping network (for the gaussian fit)."""
    synthesis, mapping = weights.converted_networks(family, *states, source=f"the generator in {path}")
    log(f"converted a {synthesis.resolution}x{synthesis.resolution} generator ({weights.CONVERTED_FAMILIES[family].title}: "
        f"{synthesis.num_ws} ws, {len(synthesis.noise_sizes)} noise layers)")
    saved = weights.save_converted(cache_dir, family, *states)
    log(f"saved {', '.join(map(str, saved))}")
    return mapping


def check_cache_family(cache_dir, family):
    """Refuse to mix families in one cache folder (they would share, and overwrite, gaussian_fit.pt)."""
    existing = "stylegan1" if (cache_dir / "synthesis.pt").is_file() else weights.converted_family(cache_dir)
    if existing is None or existing == family:
        return
    other = ("a StyleGAN-1 generator (synthesis.pt)" if existing == "stylegan1" else
             f"a {weights.CONVERTED_FAMILIES[existing].title} generator ({weights.family_files(existing)['synthesis']})")
    raise weights.WeightsError(f"{cache_dir} already holds {other}; convert into another -cache_dir")


def convert(pickle_path, cache_dir, gaussian_draws=weights.GAUSSIAN_FIT_DRAWS, log=print):
    """Write the weight files of the network at `pickle_path` into `cache_dir`: for a StyleGAN-1
    (TensorFlow) pickle synthesis.pt and mapping.pt, for a PyTorch network (an NVIDIA StyleGAN2 or
    StyleGAN3 pickle, a rosinality checkpoint) its family's files (weights.family_files);
    gaussian_fit.pt for all. Returns the file's MD5."""
    md5 = report_model(pickle_path, log)
    family, network = read_network(pickle_path)
    cache_dir = Path(cache_dir)
    check_cache_family(cache_dir, family)
    if family == "stylegan1":
        mapping = convert_stylegan1(network, pickle_path, cache_dir, log)
    else:
        mapping = convert_pytorch(family, network, pickle_path, cache_dir, log)
    write_gaussian_fit(mapping, md5, cache_dir, gaussian_draws, log)
    return md5


def at_least_two(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("needs at least 2 draws to estimate a standard deviation")
    return value


def build_parser():
    parser = cli.parser(
        "Convert NVIDIA's StyleGAN-1 pickle (e.g. karras2019stylegan-ffhq-1024x1024.pkl), stylegan2-ada-pytorch "
        "or stylegan3 pickle (e.g. ffhq.pkl, stylegan3-t-ffhq-1024x1024.pkl), or a rosinality/stylegan2-pytorch "
        "checkpoint (e.g. 550000.pt) into the weight files and gaussian_fit.pt for PULSE. Neither TensorFlow nor "
        "their authors' code is needed, and the file is read without running any code from it.")
    parser.add_argument("pickle", type=Path, nargs="?", metavar="PICKLE",
                        help="the network file, its format told from its content: NVIDIA's .pkl (StyleGAN-1's "
                             "(G, D, Gs), or a dict with G_ema from stylegan2-ada-pytorch or stylegan3) or "
                             "rosinality's .pt (with g_ema)")
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
    except (weights.WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
