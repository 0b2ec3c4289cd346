"""run.py's flags and the options they make (RunOptions): what a folder run needs, which sweep.py
varies. Plain Python, no torch: `run.py --help` and a bad flag answer at once."""
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from runkit import exits, flags, visual_flags
from settings import JobSettings, ModelOptions, SearchConfig, recipe_config, result_settings

PROCESS_FLAGS = ("threads", "no_speedups")  # set process-wide as a process starts: the same in every folder it runs


def build_parser():
    p = flags.parser("PULSE: search a StyleGAN's latent space for high-resolution faces that "
                     "downscale to the low-resolution inputs (Menon et al., CVPR 2020).",
                     epilog=exits.EXIT_STATUSES)
    io = p.add_argument_group("input and output")
    io.add_argument("-input_dir", "--input_dir", default="input",
                    help="folder of square low-resolution faces (PNG, JPEG, WebP), e.g. from align_face.py")
    io.add_argument("-output_dir", "--output_dir", default="runs", help="where results and pulse_log.jsonl go")
    io.add_argument("-save_intermediate", "--save_intermediate", action="store_true",
                    help="write the best HR image and its LR downscale after every step under <output_dir>/<stem>/HR|LR/")
    io.add_argument("-resume", "--resume", action="store_true",
                    help="skip inputs whose output and log line already exist with the same flags and seed; "
                         "a search that was stopped runs again from its first step")
    flags.add_options(p.add_argument_group("results: how many of each input, from which seeds"), JobSettings)
    flags.add_options(p.add_argument_group("the generator and how it computes (see docs/weights.md, bench.py)"),
                      ModelOptions)
    flags.add_options(p.add_argument_group("search"), SearchConfig)
    speed = p.add_argument_group("speed", "-threads and -no_speedups hold for the whole process, a sweep included; "
                                          "on the CPU, -no_speedups also lets freed memory go back to the system")
    flags.add_threads_flag(speed)
    visual_flags.add_flags(p)
    return p


def parse_args(argv=None):
    """run.py's flags, with `given` (the destinations of those on the command line, which beat -recipe) and
    `options`, the RunOptions they make."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = flags.given_flags(parser, argv)
    visual_flags.check_flags(parser, args)
    try:
        args.options = RunOptions.from_args(args)
    except ValueError as e:  # settings that do not go together, e.g. -max_steps without -patience
        parser.error(str(e))
    return args


@dataclass
class FolderRun:
    """What run.py does around the searches: which folder, where to, which extras."""
    input_dir: Path
    output_dir: Path
    save_intermediate: bool = False
    resume: bool = False
    strip: bool = False
    gif: bool = False
    hr_dir: Path | None = None


@dataclass
class RunOptions:
    """Everything a folder run needs from the flags: the folder run, its results and seeds, the model,
    and the search: the recipe's settings with those given explicitly over them. ValueError for
    settings that cannot be."""
    folder: FolderRun
    jobs: JobSettings
    model: ModelOptions
    given: dict = field(default_factory=dict)   # {search setting: value} given explicitly, -recipe among them
    search: SearchConfig = field(init=False)

    def __post_init__(self):
        self.search = recipe_config(**self.given)
        self.jobs.check_seeds(self.search.tries)

    @classmethod
    def from_args(cls, args):
        """The options of parsed run.py flags (each option has its flag's name)."""
        folder = FolderRun(**{f.name: getattr(args, f.name) for f in fields(FolderRun)})
        return cls(folder, flags.options_from(JobSettings, args), flags.options_from(ModelOptions, args),
                   flags.option_values(SearchConfig, args, args.given))

    def result_settings(self):
        """What decides a result besides the weights and the seed (what -resume compares)."""
        return result_settings(self.search, self.model.precision, self.model.compile)

    def with_values(self, values):
        """These options with some replaced: {option name: value}, each in the part that has it (a search
        setting, the recipe among them, is then given explicitly)."""
        folder, jobs, model, search = ({name: value for name, value in values.items() if name in part.__dataclass_fields__}
                                       for part in (FolderRun, JobSettings, ModelOptions, SearchConfig))
        unknown = set(values) - set(folder) - set(jobs) - set(model) - set(search)
        if unknown:
            raise ValueError(f"no such option: {', '.join(sorted(unknown))}")
        return RunOptions(replace(self.folder, **folder), replace(self.jobs, **jobs), replace(self.model, **model),
                          {**self.given, **search})

    def flags(self):
        """Every option by name, as a log line keeps them in its args: the search settings as used."""
        return {**{name: str(value) if isinstance(value, Path) else value
                   for part in (self.folder, self.jobs, self.model) for name, value in asdict(part).items()},
                **self.result_settings()}
