"""The page's setting boxes: which there are (BOXES), what they hold (Settings), and each box as
SearchConfig declares its setting."""
from dataclasses import asdict, dataclass, field, fields

from settings import JobSettings, RECIPES, SearchConfig, recipe_config

# The page's setting boxes by name, in the order on_search takes their values: the seed and duplicates
# of the page's loop (JobSettings's; a page searches one at a time), then every search setting as
# SearchConfig declares it.
BOXES = ("seed", "duplicates", *(f.name for f in fields(SearchConfig)))
# The boxes some recipe sets: choosing a recipe shows its values there (on_recipe), and leaves the others.
RECIPE_BOXES = tuple(name for name in BOXES if any(name in recipe for recipe in RECIPES.values()))
IN_VIEW = ("seed", "recipe", "steps", "duplicates", "tries", "eps", "learning_rate")  # the other boxes fold away
SEED_HELP = "duplicate k uses seed + k - 1, its try t seed + k - 1 + (t - 1) * duplicates"


@dataclass
class Settings:
    """What the page's boxes hold: the seed and duplicates of each face's searches (the seed box
    starts at 0), and the search settings (run.py's names and defaults)."""
    jobs: JobSettings = field(default_factory=lambda: JobSettings(seed=0))
    search: SearchConfig = field(default_factory=SearchConfig)

    @classmethod
    def of(cls, seed=0, duplicates=1, **search):
        """The settings of the boxes' values by name: the recipe's, with the settings given over them;
        ValueError naming the first one the search cannot take. An empty box is None; an empty text box
        of a setting whose default is None, that default."""
        jobs = JobSettings(seed=seed, duplicates=duplicates)
        defaults = {f.name: f.default for f in fields(SearchConfig)}
        search = {name: (value.strip() or None) if isinstance(value, str) and defaults.get(name) is None else value
                  for name, value in search.items()}
        return cls(jobs, recipe_config(**search))

    def boxes(self):
        """{box name: value}: what the page's boxes show for these settings."""
        return {"seed": self.jobs.seed, "duplicates": self.jobs.duplicates, **asdict(self.search)}


def on_recipe(recipe):
    """The values of the RECIPE_BOXES when a recipe is chosen: its settings (those it leaves, the defaults)."""
    shown = Settings.of(recipe=recipe).boxes()
    return [shown[name] for name in RECIPE_BOXES]


def setting_box(name, default):
    """The page's box of a setting (elem_id: its name), as SearchConfig declares it: a checkbox, a
    dropdown of its choices, a number box or a text box, with its help. No minimum on the numbers:
    Gradio would refuse a value with a message that names no setting (and a traceback in the
    terminal); Settings.of says which one is wrong."""
    import gradio as gr
    declared = {f.name: f for f in fields(SearchConfig)}.get(name)
    if declared is None:  # the page's own: the seed and duplicates of its loop
        return gr.Number(default, label=name, info=SEED_HELP if name == "seed" else None, precision=0, elem_id=name)
    kind, choices, info = declared.type, declared.metadata["choices"], declared.metadata["help"]
    if kind is bool:
        return gr.Checkbox(default, label=name, info=info, elem_id=name)
    if choices is not None:
        return gr.Dropdown(list(choices), value=default, label=name, info=info, elem_id=name)
    if kind in (int, float):
        return gr.Number(default, label=name, info=info, precision=0 if kind is int else None, elem_id=name)
    return gr.Textbox("" if default is None else str(default), label=name, info=info, elem_id=name,
                      placeholder="blank: the default")
