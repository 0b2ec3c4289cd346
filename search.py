"""The PULSE search: from a low-resolution face and a seed to the best image of the generator.

Read top to bottom, one job (an input and duplicate, see inputs.Job) goes:
  search_jobs   the jobs, one input size at a time, as a line of attempts (a job's try 1, 2, ...)
  BatchSearch   `batch_size` Searches side by side as the rows of one batch; after each step a
                Search that ended frees its row for the next attempt: its job's next try (NOT
                CONVERGED, and tries left), else the next job's first
  Search        one try: its start drawn from its seed (draw_start), optimizer, schedule, budget
  step          in the 2020 order: generate, losses, best so far, backward, optimizer step with
                the projection onto the sphere, scheduler step
  kept          a job's Result from its tries': the first that converged, else the lowest L2

The model (PULSE.PULSE) supplies the generator: `generate`, the sizes of its noise maps and its prior.
"""
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, replace
from functools import cache, partial

import torch

from loss import LossBuilder
from runkit import cpu_threads, inputs, runlog
from runkit.image_tensors import to_pil
from settings import SCHEDULES
from SphericalOptimizer import SphericalOptimizer

logger = logging.getLogger("pulse")

OPTIMIZERS = {  # settings.OPTIMIZERS names them
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "sgdm": partial(torch.optim.SGD, momentum=0.9),
    "adamax": torch.optim.Adamax,
}


def search_jobs(model, jobs, config, on_result, batch_size=1, on_step=None):
    """Search every job (see inputs.Job) on `model`, `batch_size` searches at a time, handing each
    job's Result to `on_result(job, result)` as soon as it is final (not always in job order).

    A job's search that ends NOT CONVERGED is run again from its next seed, up to `config.tries`
    searches; its Result is the first that converged, else the one with the lowest L2. When a
    search ends its row of the batch goes to the next one (another try, or the next job), so a
    batch never computes finished searches. `on_step(Step)` is called after each step's losses.
    Ctrl-C, or a KeyboardInterrupt raised by `on_step` or `on_result`, ends the searches under
    way: every job with a step done gets the best of its tries so far, marked interrupted, and
    then the KeyboardInterrupt goes on up. NoiseLayerError, before any search, when `config` names
    noise layers this model does not have.
    """
    model.check_noise_layers(config)
    if config.stop_at_eps and config.eps == 0:
        note_once("note: with eps 0, stop_at_eps never stops a search early (its L2 would have to be exactly 0)")
    for group in inputs.batches(jobs, len(jobs)):  # one input size at a time
        attempts = deque(Attempt(i, job) for i, job in enumerate(group))
        BatchSearch(model, config, on_result).run(attempts, batch_size, on_step)


@cache
def note_once(message):
    """Tell the pulse logger `message` the first time this process meets it: a note on settings is
    said once, however many searches take them (evaluate.py's faces, the page's searches)."""
    logger.info(message)


@dataclass
class Attempt:
    """Try `number` (1-based) of a job: a search from the try's own seed (see inputs.Job.seed_of_try)."""
    index: int                  # the job's place in the jobs searched
    job: inputs.Job
    number: int = 1

    @property
    def seed(self):
        return self.job.seed_of_try(self.number)


class BatchSearch:
    """Runs attempts of jobs whose inputs share one size, `batch_size` searches at a time, each ending
    when its budget says (SearchConfig.ending: after config.steps steps in 2020); a search that ends
    frees its row for the next attempt: its own next try first, else the next job's first."""

    def __init__(self, model, config, finish):
        self.model, self.config, self.finish = model, config, finish
        self.tries = {}             # job index -> (the job, the Results of its tries so far) until it is final
        self.searches = []          # the rows of the batch
        self.loss_builder = None    # for the inputs of the rows; None when the rows changed

    def run(self, attempts, batch_size, on_step):
        try:
            while attempts or self.searches:
                self.fill(attempts, batch_size)
                self.step(on_step)
                for search in [s for s in self.searches if s.ended]:
                    self.end(search, attempts)
        except KeyboardInterrupt:
            self.keep_best_so_far()
            raise

    def fill(self, attempts, batch_size):
        while len(self.searches) < batch_size and attempts:
            self.searches.append(Search(self.model, attempts.popleft(), self.config))
            self.loss_builder = None
        if self.loss_builder is not None:
            return
        cpu_threads.follow_free_cores()  # a search runs with the thread count it starts with
        ref_im = torch.stack([search.attempt.job.image for search in self.searches])
        ref_im = ref_im.to(self.model.anchor.device, self.model.anchor.dtype)
        self.loss_builder = LossBuilder(ref_im, self.config.loss_str.terms, self.config.eps, self.model.resolution)

    def step(self, on_step):
        """One step of every row, in the 2020 order: generate, losses, best so far, backward, optimizer
        step with the spherical projection, scheduler step."""
        searches = self.searches
        for search in searches:
            search.opt.zero_grad()
        latent = torch.cat([search.latent for search in searches])
        noise = [torch.cat(layers) for layers in zip(*(search.noise for search in searches))]
        latent_in, gen_im = self.model.generate(latent, noise)
        total, losses = self.loss_builder(latent_in, gen_im)
        losses["TOTAL"] = total
        reached, l2 = self.reached_eps(losses["L2"]), self.l2_for_budget(losses["L2"])
        for b, search in enumerate(searches):
            search.count_step(self.config, l2[b], reached[b])
            search.tracker.update(search.step, {name: value[b:b + 1] for name, value in losses.items()},
                                  gen_im[b:b + 1], keep=reached[b])
        if on_step is not None:
            on_step(Step(losses, [search.row() for search in searches], [search.tracker for search in searches],
                         self.loss_builder.downscale))
        total.sum().backward()
        for search in searches:
            search.opt.step()
            search.scheduler.step()

    def reached_eps(self, l2):
        """Per row, whether stop_at_eps ends its search at this step (one read from the device a step,
        only with stop_at_eps)."""
        if not (self.config.stop_at_eps and targets_l2(self.config.loss_str.terms)):
            return [False] * len(l2)
        return (l2 <= self.config.eps).tolist()

    def l2_for_budget(self, l2):
        """Per row, the step's L2 as a float where patience needs it (one more read a step), else None."""
        return l2.tolist() if self.config.patience else [None] * len(l2)

    def end(self, search, attempts):
        """A search ran to its end: its job is final, or its next try waits first in line."""
        _, tries = self.tries.setdefault(search.attempt.index, (search.attempt.job, []))
        tries.append(search.result(self.config, interrupted=False))
        self.searches.remove(search)
        self.loss_builder = None
        if tries[-1].converged or len(tries) == self.config.tries:
            del self.tries[search.attempt.index]
            self.finish(search.attempt.job, kept(tries))
        else:
            attempt = search.attempt
            attempts.appendleft(Attempt(attempt.index, attempt.job, attempt.number + 1))

    def keep_best_so_far(self):
        """After a stop: each job with a step done gets the best of its tries so far, marked interrupted."""
        for search in self.searches:
            if search.step > 0:
                self.tries.setdefault(search.attempt.index, (search.attempt.job, []))[1].append(
                    search.result(self.config, interrupted=True))
        self.searches = []
        for index in sorted(self.tries):
            job, tries = self.tries.pop(index)
            self.finish(job, kept(tries, interrupted=True))


class Search:
    """One try under way in a row of a batch, with its own search variables, optimizer, learning-rate
    schedule, best so far and budget (its step count, best L2 and that step, why it ended): it can end,
    and leave its row to another search, while the other rows go on. The rows are stacked for the
    generator, which runs on the whole batch."""

    def __init__(self, model, attempt, config):
        self.attempt = attempt
        self.latent, self.noise, noise_vars = start_point(model, [attempt.seed], config)
        self.opt = SphericalOptimizer(OPTIMIZERS[config.opt_name], [self.latent] + noise_vars, lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.opt.opt, partial(SCHEDULES[config.lr_schedule], steps=config.last_step))
        self.tracker = BestTracker(config.loss_str.terms, [self.latent] + self.noise)
        self.step = 0               # steps done
        self.best_l2, self.best_l2_step = math.inf, 0  # with patience: its lowest L2 so far, and that step
        self.ended = None           # why it ended (SearchConfig.ending), once it has
        self.start = time.time()

    def count_step(self, config, l2, reached_eps):
        """After a step: count it, and end the search if the budget says so (`l2`: the step's L2 as a
        float, None when nothing needs it)."""
        self.step += 1
        if l2 is not None and l2 < self.best_l2:
            self.best_l2, self.best_l2_step = l2, self.step
        self.ended = config.ending(self.step, self.step - self.best_l2_step, reached_eps)

    def row(self):
        job = self.attempt.job
        return Row(job.source, job.name, job.duplicate, self.attempt.number, self.attempt.seed, self.step)

    def result(self, config, interrupted):
        """This try as a Result (its `tries` are filled in by `kept`)."""
        job = self.attempt.job
        return Result(input=job.source, name=job.name, seed=self.attempt.seed,
                      **self.tracker.result_fields(config.eps),
                      interrupted=interrupted, seconds=time.time() - self.start,
                      stopped_at=self.step if self.ended == "converged" else None,
                      ended="interrupted" if interrupted else self.ended,
                      threads=torch.get_num_threads(), thread_rule=cpu_threads.rule())


def start_point(model, seeds, config):
    """Batched latent and noise of `model` (each sample from its own seed) as search variables, in
    the model's device and dtype: (latent, every noise map, the trainable ones)."""
    dtype, device = model.anchor.dtype, model.anchor.device
    zeroed = model.zeroed_noise_layers(config)
    latent_shape = (model.prior.rows(config.tile_latent), model.prior.width)
    starts = [draw_start(seed, latent_shape, model.noise_sizes, zeroed, config) for seed in seeds]
    latent = torch.cat([lat for lat, _ in starts]).to(device, dtype).requires_grad_(True)
    noise, noise_vars = [], []
    for i in range(len(model.noise_sizes)):
        layer = torch.cat([maps[i] for _, maps in starts]).to(device, dtype)
        trainable = (config.noise_type == "trainable" and i < config.num_trainable_noise_layers
                     and i not in zeroed)
        if trainable:
            noise_vars.append(layer.requires_grad_(True))
        noise.append(layer)
    return latent, noise, noise_vars


def draw_start(seed, latent_shape, noise_sizes, zeroed, config):
    """Latent [1, rows, width] (`latent_shape`, the prior's) and noise maps of one sample, drawn in
    float32 on the CPU from `seed`.

    Same draws in the same order as 2020: the latent first, then one map per noise layer that is
    not zeroed (`zeroed`: indices of the layers held at zero). Drawing on the CPU makes a seed
    give the same search on every device.
    """
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn((1, *latent_shape), generator=generator)
    noise = []
    for i, size in enumerate(noise_sizes):
        if config.noise_type == "zero" or i in zeroed:
            noise.append(torch.zeros((1, 1, size, size)))
        else:
            noise.append(torch.randn((1, 1, size, size), generator=generator))
    return latent, noise


def kept(tries, interrupted=False):
    """The Result of a job from its tries' Results: the first that converged, else the lowest L2
    (the first on ties), with every try's summary."""
    best = next((r for r in tries if r.converged), None) or min(tries, key=lambda r: r.losses["L2"])
    return replace(best, interrupted=interrupted or best.interrupted, seconds=sum(r.seconds for r in tries),
                   tries=[{"seed": r.seed, "L2": r.losses["L2"], "converged": r.converged, "steps": r.steps,
                           "ended": r.ended} for r in tries])


def targets_l2(loss_terms):
    """As in 2020 (and in the reference runs), only a search that optimises L2 can converge: with a
    loss string without L2, L2 is still reported but never counts as reaching eps."""
    return any(name == "L2" for _, name in loss_terms)


class BestTracker:
    """Keeps a search's lowest-TOTAL image on the device and its per-step loss history."""

    def __init__(self, loss_terms, variables):
        self.loss_terms = loss_terms
        self.variables = variables  # the latent and every noise map; the trainable ones change in place
        self.best_variables = None
        self.best_im = None
        self.best_losses = None  # {name: [B]}: every loss at each sample's best step so far
        self.best_step = None
        self.history = []

    @torch.no_grad()
    def update(self, step, losses, gen_im, keep=False):
        """Remember this step's image where its TOTAL is the lowest so far, or wherever `keep`."""
        losses = {name: value.detach() for name, value in losses.items()}
        if self.best_im is None:
            self.best_im = gen_im.detach().clone()
            self.best_losses = {name: value.clone() for name, value in losses.items()}
            self.best_step = torch.full_like(losses["TOTAL"], step, dtype=torch.long)
            self.best_variables = [v.detach().clone() if v.requires_grad else v for v in self.variables]
        else:
            improved = (losses["TOTAL"] < self.best_losses["TOTAL"]) | keep
            self.best_im = torch.where(improved.view(-1, 1, 1, 1), gen_im.detach(), self.best_im)
            self.best_losses = {name: torch.where(improved, value, self.best_losses[name])
                                for name, value in losses.items()}
            self.best_step = torch.where(improved, torch.full_like(self.best_step, step), self.best_step)
            self.best_variables = [torch.where(improved.view(-1, *[1] * (v.dim() - 1)), v.detach(), best)
                                   if v.requires_grad else best for v, best in zip(self.variables, self.best_variables)]
        self.history.append(losses)

    def result_fields(self, eps):
        """The fields of the Result of its search (a search of one sample) that the tracker knows: best
        image, step, losses, convergence, trajectory, latent and noise, and the steps done."""
        # One transfer for the whole history: no per-step host synchronisation in the loop.
        names = list(self.history[0])
        table = {name: torch.stack([h[name][0] for h in self.history]).cpu() for name in names}
        eps_t = torch.tensor(eps, dtype=table["L2"].dtype)
        return dict(
            tensor=self.best_im[0].clamp(0, 1).cpu(),
            best_step=int(self.best_step[0]),
            losses={name: value[0].item() for name, value in self.best_losses.items()},
            converged=targets_l2(self.loss_terms) and bool((table["L2"] <= eps_t).any()),
            trajectory=[{"step": k + 1, **{name: table[name][k].item() for name in names}}
                        for k in range(len(self.history))],
            latent=self.best_variables[0][0].cpu(),
            noise=[v[0].cpu() for v in self.best_variables[1:]],
            steps=len(self.history),
        )


# ---- what a search hands out ---------------------------------------------------------------

@dataclass(kw_only=True)
class Result(runlog.Outcome):
    """The result of one input and duplicate: its kept search (the first of its tries that converged,
    else the one whose best image has the lowest L2), that search's best image (lowest TOTAL, first
    on ties; with -stop_at_eps, the image of the step that reached eps) and how it went: the fields
    and properties of runlog.Outcome, which the run log keeps field for field (runlog.Record.of)."""
    name: str                   # the result's name: the input's name (a path's stem), with _k for duplicate k
    tensor: torch.Tensor        # the best image, [3, R, R] in [0, 1], on the CPU
    latent: torch.Tensor        # the search latent at the best step, [rows, width] (see generator.Prior), on the CPU
    noise: list                 # the noise maps at the best step, [1, r, r] each, on the CPU

    @property
    def image(self):
        """The best image as a PIL image (what run.py writes as the result PNG)."""
        return to_pil(self.tensor)


@dataclass(frozen=True)
class Row:
    """Whose search a row of a step's batch is: which input, duplicate and try (Step.rows)."""
    input: str                  # the input's path, or its label ("image 2", or an Input's)
    name: str                   # the name of the result it searches for: the input's, with _k for duplicate k
    duplicate: int              # k, from 1
    attempt: int                # which try of that duplicate, from 1 (see -tries)
    seed: int                   # the seed of this try
    step: int                   # steps this search has done (the rows of a batch may have started apart)


class Step:
    """What a step hook (`on_step`) is handed after a step's losses are computed. Row b of the batch
    is `rows[b]`'s search; `losses[name][b]`, `best_im[b]` and `best_l2[b]` are that row's."""

    def __init__(self, losses, rows, trackers, downscale):
        self.losses = losses        # {loss name: device tensor [B]}, TOTAL included
        self.rows = rows            # a Row per row of the batch
        self._trackers = trackers   # each row's best so far
        self._downscale = downscale  # the search's bicubic operator (what L2 compares with the input)

    @property
    def number(self):
        """1-based step of the first row's search: every row's, unless some rows started later."""
        return self.rows[0].step

    @property
    def best_im(self):
        """[B, 3, R, R]: each row's best image so far."""
        return torch.cat([tracker.best_im for tracker in self._trackers])

    @property
    def best_l2(self):
        """Each row's L2 at its best image so far, as floats."""
        return torch.cat([tracker.best_losses["L2"] for tracker in self._trackers]).tolist()

    def best_downscaled(self):
        """[B, 3, r, r]: each row's best image so far, downscaled as L2 compares it with the input."""
        return self._downscale(self.best_im)
