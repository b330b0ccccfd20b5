"""``landscape reproduce``: train, probe, plot and judge the paper's claims in one folder.

A preset is a list of :class:`Job` (a run to train and what to probe on it). For each
job the run file ``DIR/runs/<name>.h5`` is trained (skipped when complete, resumed when
interrupted), then probed (parts already stored are skipped), then every figure is drawn
into ``DIR/figures`` and the claims are judged into ``DIR/REPORT.md`` and
``DIR/claims.json``. A second call therefore redoes only what is missing, and a killed
call continues where it stopped.

Presets:

* ``quick`` (``make reproduce``): seed 0 only (fewer than 3 seeds never give a verdict,
  so every verdict is labelled underpowered): Markov Single-Attn, Looped-Attn and SHIFT
  (60 epochs, probed at 6 checkpoints with Lanczos, Hutch++ and SLQ on a 32-sequence
  probe set, no exact spectra, coarse slices); the untied control of claim 1; Single/Looped
  without positions scored at twice the length; parity in the length-generalization setup
  (Looped, untied, Single with each positional scheme; online, 600 steps).
* ``paper``: for the landscape claims (2-4), Single and Looped at d_model 24 and 60 epochs
  on fresh seeds (:data:`PAPER_SEEDS_2_4`, 10 and up) with exact spectra at 12 checkpoints
  in epochs 0-60 (:func:`_spectral_jobs`); for claims 1, 5 and 6, fresh seeds
  (:data:`FRESH_SEED` and up, as many as the power calculation asks within
  :data:`SEED_BUDGET`): the Markov recipes at 80 epochs (Looped, SHIFT, Single; the first
  seed probed at 8 checkpoints for the figures), the untied control and the no-gap
  languages ``fixed1`` and ``modes`` on every one of those seeds, parity, copy and
  addition online in the length setup (``models/length/``) with Looped, untied and
  Single x 3 positional schemes on 3 seeds, the Markov runs without positions, and the
  corners of SHIFT's ablation on the first seed. ``--claims 1,5,6`` or ``--claims 2,3,4``
  (:func:`select_claims`) runs only what those claims read. Expected time: see README
  ("Presets and time").

Every Markov run's seed draws its language too (``task.seed``); ``language_seed`` holds
it fixed.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from landscape.analysis import claims as claims_mod
from landscape.analysis import series
from landscape.draw import checks, figures
from landscape.errors import LandscapeError
from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe
from landscape.runs.run import Run
from landscape.train.archs import (
    CONTROLS,
    LOOPED,
    RECIPES,
    SHIFT,
    SINGLE,
    UNTIED,
)
from landscape.train.recipe import RECIPE_DIR, Recipe, load_recipe, with_arch
from landscape.train.trainer import train

Report = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """One run of a preset: its recipe and the probes to run on it."""

    name: str  # file stem in DIR/runs
    recipe: str  # a shipped recipe file (landscape/train/recipes/, copied to models/)
    preset: str | None = None  # the recipe's [presets.X] to apply
    overrides: tuple = ()  # dicts merged last (e.g. the seed)
    probe: ProbeSettings | None = None
    arch: str | None = None  # train the recipe as this architecture (landscape.train.archs)
    claims: tuple[str, ...] = ()  # the claims ("1".."6") it serves; () = every claim

    def load(self) -> Recipe:
        """The job's recipe, always the shipped one (never a same-named local file)."""
        recipe = load_recipe(RECIPE_DIR / self.recipe, preset=self.preset,
                             overrides=[*self.overrides, {"name": self.name}])
        return recipe if self.arch is None else with_arch(recipe, self.arch)


QUICK_PROBE = ProbeSettings(
    steps="spaced:6",
    hessian=HessianSettings(k_top=5, k_bottom=2, slq_runs=4, slq_steps=40, trace_hvps=20,
                            exact="never"),
    geometry=GeometrySettings(grid=11, width_points=15, width_dirs=2, shared_plane="init"),
)
# The Markov runs of one seed start from one initialisation, so shared_plane="init" puts
# Single-Attn, Looped-Attn and SHIFT on the same plane (the figure checks that it is one).
# Seed 0's main runs are probed for the figures only (claims 2-4 rest on the spectral runs
# below): 8 checkpoints, SLQ 5 x 60 and 15 x 15 slices on their 64-sequence probe set
# (PAPER_MARKOV), about 1/8 of the default probe's products and forwards.
PAPER_PROBE = ProbeSettings(
    steps="spaced:8",
    hessian=HessianSettings(k_top=10, k_bottom=5, slq_runs=5, slq_steps=60, trace_hvps=30,
                            exact="never"),
    geometry=GeometrySettings(grid=15, shared_plane="init"))
THREADS = {"train": {"threads": 1}}  # one torch thread per run: fastest for these sizes

# The landscape claims (2-4) of the paper preset rest on exact spectra of a smaller model,
# Single and Looped on the seeds of PAPER_SEEDS_2_4: d_model 24 (4,128 parameters) still
# separates them (the complex-accuracy gap at 60 epochs that REPORT.md states; d_model 16
# shows none: README, "Claims 2-4 in the paper preset"), and its dense Hessian costs 4,128
# columns. 12 checkpoints from initialisation through the last epoch trained (60), 4 of
# them in the last third, where a stabilization would show (claim 2); the collapse that
# the paper preset of 2026-11-30 saw ended by epoch 7-10, so 1-10 keeps 4 checkpoints.
# The fit starts at epoch 1: epoch 0 is drawn, not fitted.
SPECTRAL_EPOCHS = (0, 1, 3, 6, 10, 15, 22, 30, 42, 48, 54, 60)
# Claim 4 reads every optimiser step of a 64-step window (valley hopping is a step-to-step
# phenomenon) and an intervention (K steps with and without the valley component of each
# update) from probed checkpoints in the middle and the last third of training.
SPECTRAL_WINDOW_EPOCHS = (30, 48)
SPECTRAL_WINDOW_STEPS = 64
# 16 probe sequences: the products scale with the probe set (README, "Presets and time")
SPECTRAL_RECIPE = {"model": {"d_model": 24}, "train": {"epochs": 60, "probe_size": 16}}
SPECTRAL_HESSIAN = HessianSettings(k_top=10, k_bottom=2, slq_runs=2, slq_steps=20,
                                   trace_hvps=10, exact="always")
SPECTRAL_GEOMETRY = GeometrySettings(grid=5, width_points=7, width_dirs=1)


def _seeded(seed: int) -> dict:
    """A run's seed: its initialisation and batch order, and its Markov language."""
    return {"train": {"seed": seed}, "task": {"seed": seed}}


LANDSCAPE_CLAIMS = ("2", "3", "4")  # probes serve these claims (and their figures) only


def _markov_jobs(preset: str | None, seeds, probes, extra: tuple = ()) -> list[Job]:
    """Looped, SHIFT and Single per seed; the seed draws the language too (``task.seed``).

    A seed is a seed of everything random: the initialisation and batch order
    (``train.seed``) and the Markov language with its samples (``task.seed``), so the
    spread over seeds includes the spread over languages of the family. ``reproduce(...,
    language_seed=N)`` (``--language-seed N``) holds the language fixed instead. Looped and
    SHIFT of a seed come one after the other, so that two workers train claim 5's two arms
    side by side (the machine's load then affects both alike).
    """
    jobs = []
    for seed, pr in zip(seeds, probes):
        for arch, claims in ((LOOPED, ("1", "5")), (SHIFT, ("5",)), (SINGLE, ("1",))):
            jobs.append(Job(f"markov_{RECIPES[arch]}_s{seed}", f"{RECIPES[arch]}.toml", preset,
                            (THREADS, *extra, _seeded(seed)), pr, claims=claims))
    return jobs


# --- claims 1, 5 and 6: controls, SHIFT's ablation, length generalization --------------

# Claim 5's ablation (one seed): delta_1 x W at the default delta_2, then delta_2 at the
# default (delta_1, W); the default setting itself is the seed's main SHIFT run.
ABLATION = [{"delta_1": d1, "window": w} for d1 in (0.003, 0.01, 0.03) for w in (3, 5, 8)
            if (d1, w) != (0.01, 5)] + [{"delta_2": d2} for d2 in (0.003, 0.03)]
# The paper preset runs the grid's corners (the 2.5-hour budget goes to paired seeds first)
PAPER_ABLATION = [{"delta_1": d1, "window": w} for d1 in (0.003, 0.03) for w in (3, 8)]
LENGTH_TASKS = ("parity", "copy", "addition")
# twice seq_len 48, no positions; evaluated every 5 epochs (only the final accuracy is read,
# and the 96-token split costs twice the others)
MARKOV_LONG = {"task": {"long_len": 96}, "model": {"positions": "none"},
               "train": {"eval_every": 160}}
CONTROL_LANGUAGES = ("fixed1", "modes")  # claim 1's no-gap languages (models/controls/)


def _control_jobs(preset: str | None, seeds, extra: tuple = (),
                  archs: tuple = CONTROLS, languages: tuple = ()) -> list[Job]:
    """Claim 1's controls on the Markov runs' recipe and seeds.

    The untied three-layer model (Looped-Attn's compute, three times its parameters) and
    linear-attention Single and Looped (the model of the paper's theory); and Single and
    Looped on each no-gap language of ``languages`` (``markov_<language>_<arch>_s<seed>``).
    """
    jobs = [Job(f"markov_{arch}_s{seed}", "single_attn.toml", preset,
                (THREADS, *extra, _seeded(seed)), arch=arch, claims=("1",))
            for seed in seeds for arch in archs]
    jobs += [Job(f"markov_{lang}_{arch}_s{seed}", f"controls/{lang}.toml", preset,
                 (THREADS, *extra, _seeded(seed)), arch=arch, claims=("1",))
             for seed in seeds for lang in languages for arch in (LOOPED, SINGLE)]
    return jobs


def _ablation_jobs(preset: str | None, seed: int, extra: tuple = (),
                   settings: list[dict] = ABLATION) -> list[Job]:
    """SHIFT with other switch settings on one seed (claim 5's ablation grid)."""
    jobs = []
    for over in settings:
        tag = "_".join(f"{k.replace('delta_', 'd').replace('window', 'w')}{v:g}"
                       for k, v in over.items())
        jobs.append(Job(f"markov_shift_{tag}_s{seed}", "shift.toml", preset,
                        (THREADS, *extra, {"shift": over}, _seeded(seed)), claims=("5",)))
    return jobs


def _markov_long_jobs(preset: str | None, seeds, extra: tuple = ()) -> list[Job]:
    """Single and Looped without positions, tested at twice the training length."""
    return [Job(f"markov_long_{arch}_s{seed}", f"{arch}.toml", preset,
                (THREADS, *extra, MARKOV_LONG, _seeded(seed)), claims=("6",))
            for seed in seeds for arch in ("single_attn", "looped_attn")]


def _length_jobs(preset: str | None, seeds, tasks=LENGTH_TASKS) -> list[Job]:
    """Claim 6: each task as Looped-Attn, the untied depth-matched model and Single-Attn.

    Looped-Attn's passes follow n; the untied model has Looped-Attn's depth at the longest
    training length (see :func:`landscape.train.archs.overrides`). Single-Attn is trained
    with each positional scheme of :data:`landscape.analysis.series.POSITIONS_BY_VALIDATION`
    (``length_<task>_single_<positions>_s<seed>``); claim 6 keeps per seed the one that does
    best on held-out samples of the training lengths. The data seed follows the training
    seed.
    """
    jobs = []
    for task in tasks:
        for seed in seeds:
            over = (THREADS, _seeded(seed))
            for arch in (LOOPED, UNTIED):
                jobs.append(Job(f"length_{task}_{arch}_s{seed}", f"length/{task}.toml", preset,
                                over, arch=arch, claims=("6",)))
            for pos in series.POSITIONS_BY_VALIDATION:
                jobs.append(Job(f"length_{task}_{SINGLE}_{pos}_s{seed}", f"length/{task}.toml",
                                preset, (*over, {"model": {"positions": pos}}), arch=SINGLE,
                                claims=("6",)))
    return jobs


# Every Markov job of the paper preset: 80 epochs (Looped-Attn's rise ends by epoch ~40-60,
# so Single's second half is epochs 40-80); SHIFT and Looped must share the budget. The
# probe set (stored in the run file, read only by probes) is 64 sequences.
PAPER_MARKOV = ({"train": {"epochs": 80, "probe_size": 64}},)


def hold_language(jobs: list[Job], seed: int) -> list[Job]:
    """The jobs with every Markov run's language drawn from ``seed`` (``task.seed``)."""
    if int(seed) != seed or seed < 0:
        raise LandscapeError(f"the language seed must be an integer >= 0, got {seed}")
    return [replace(j, overrides=(*j.overrides, {"task": {"seed": int(seed)}}))
            if j.load().task.name == "markov" else j for j in jobs]


def _spectral_jobs(seeds) -> list[Job]:
    """Single and Looped at d_model 24, exact spectra at :data:`SPECTRAL_EPOCHS` (claims 2-4).

    Named ``markov_spectral_<arch>_s<seed>`` (:data:`landscape.analysis.series.SPECTRAL_PREFIX`), so
    the accuracy claims and figures keep to the main runs.
    """
    jobs = []
    for seed in seeds:
        for arch in (SINGLE, LOOPED):
            over = (THREADS, SPECTRAL_RECIPE, _seeded(seed))
            job = Job(f"{series.SPECTRAL_PREFIX}{RECIPES[arch]}_s{seed}", f"{RECIPES[arch]}.toml",
                      None, over, claims=LANDSCAPE_CLAIMS)
            r = job.load()
            per_epoch = r.task.n_train // r.train.batch_size
            starts = [e * per_epoch for e in SPECTRAL_WINDOW_EPOCHS]
            job = replace(job, overrides=(*over, {"train": {
                "window_steps": SPECTRAL_WINDOW_STEPS, "window_at": starts,
                "intervene_at": starts}}))
            steps = ",".join(str(e * per_epoch) for e in SPECTRAL_EPOCHS)
            jobs.append(replace(job, probe=ProbeSettings(steps=steps, hessian=SPECTRAL_HESSIAN,
                                                         geometry=SPECTRAL_GEOMETRY)))
    return jobs


# Claims 1, 5 and 6 are judged on seeds not seen when their paired rules were written
# (0-2 were): FRESH_SEED and up. How many: the power calculation of each claim
# (landscape.analysis.claims.planned_seeds, from the last paper preset's spread), within
# SEED_BUDGET, what about 2.5 hours on 2 cores buy beside claim 6's length study.
FRESH_SEED = 3
SEED_BUDGET = 4


def fresh_seeds(n: int) -> list[int]:
    """``n`` seeds from :data:`FRESH_SEED` on."""
    return list(range(FRESH_SEED, FRESH_SEED + n))


# Claims 2-4 likewise, on their own fresh seeds (spectral runs: SPECTRAL_SEED and up), as
# many as claim 3's power calculation asks within SPECTRAL_SEED_BUDGET (each seed costs
# about 38 CPU minutes of exact spectra: 12 checkpoints of Single and Looped).
SPECTRAL_SEED = 10
SPECTRAL_SEED_BUDGET = 3
PAPER_SEEDS_2_4 = list(range(SPECTRAL_SEED, SPECTRAL_SEED + claims_mod.planned_seeds(
    "3.kappa", SPECTRAL_SEED_BUDGET)))

PAPER_SEEDS_1_5 = fresh_seeds(max(claims_mod.planned_seeds("1", SEED_BUDGET),
                                  claims_mod.planned_seeds("5", SEED_BUDGET)))
PAPER_SEEDS_6 = fresh_seeds(claims_mod.planned_seeds("6", SEED_BUDGET))

PRESETS: dict[str, list[Job]] = {
    # one seed: every verdict is underpowered at any number below 3, so a second seed would
    # only cost time; the untied control (recursion against depth) but not the linear pair
    "quick": _markov_jobs("quick", [0], [QUICK_PROBE])
    + _control_jobs("quick", [0], archs=(UNTIED,))
    + _markov_long_jobs("quick", [0])
    + _length_jobs("quick", [0], ("parity",)),
    # the longest jobs first (the exact spectra, then the probed seed's main runs): the
    # workers then finish together, and a call stopped early has the landscape claims' runs
    "paper": _spectral_jobs(PAPER_SEEDS_2_4)
    + _markov_jobs(None, PAPER_SEEDS_1_5, [PAPER_PROBE] + [None] * 7, PAPER_MARKOV)
    + _control_jobs(None, PAPER_SEEDS_1_5, PAPER_MARKOV, archs=(UNTIED,),
                    languages=CONTROL_LANGUAGES)
    + _length_jobs(None, PAPER_SEEDS_6)
    + _markov_long_jobs(None, PAPER_SEEDS_6, PAPER_MARKOV)
    + _ablation_jobs(None, FRESH_SEED, PAPER_MARKOV, PAPER_ABLATION),
}


def select_claims(jobs: list[Job], claims: tuple[str, ...]) -> list[Job]:
    """The jobs that serve any of ``claims``, probed only where 2, 3 or 4 are among them.

    Claims 1, 5 and 6 read training curves: ``--claims 1,5,6`` trains what they read and
    probes nothing. Claims 2-4 read the spectral runs: ``--claims 2,3,4`` trains and
    probes those alone. The main runs' figure probes (the curvature figures of the
    gallery) run with the whole preset, or with ``--claims`` naming 1 or 5 and one of 2-4.
    """
    bad = sorted(set(claims) - {str(i) for i in range(1, 7)})
    if bad or not claims:
        raise LandscapeError(f"--claims takes claim numbers 1-6 (e.g. 1,5,6), got "
                             f"{','.join(claims) or 'nothing'}")
    keep = [j for j in jobs if not j.claims or set(j.claims) & set(claims)]
    if not set(claims) & set(LANDSCAPE_CLAIMS):
        keep = [replace(j, probe=None) for j in keep]
    return keep


@dataclass
class Outcome:
    """What a reproduce call did."""

    out: Path
    runs: list[Path] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    seconds: float = 0.0


def reproduce(preset: str, out: str | Path, *, report: Report | None = None,
              progress_factory: Callable[[], Callable] | None = None,
              jobs: list[Job] | None = None, workers: int = 1,
              device: str = "cpu", language_seed: int | None = None,
              claims: tuple[str, ...] | None = None) -> Outcome:
    """Train, probe, plot and judge a preset into ``out`` (resumable; see module doc).

    Args:
        preset: ``quick`` or ``paper`` (ignored when ``jobs`` is given).
        out: the output folder.
        report: receives one line per step taken.
        progress_factory: makes one trainer progress callback per run (a progress bar).
        jobs: run these instead of the preset's (tests use tiny jobs).
        workers: runs trained and probed at once, each in its own process with one torch
            thread (independent runs: on 2 cores, 2 workers halve the time). 1: in this
            process, in order, with progress bars.
        device: ``cpu`` or ``cuda``: where every run trains and is probed (a run file
            trained elsewhere is reused as it is).
        language_seed: hold the Markov language at this ``task.seed`` for every run
            (default: each run's training seed draws its own language).
        claims: only the runs these claims read (:func:`select_claims`), and only their
            verdicts in the report (default: all six).
    """
    if jobs is None:
        if preset not in PRESETS:
            raise LandscapeError(f"unknown preset {preset!r} (presets: {', '.join(PRESETS)})")
        jobs = PRESETS[preset]
    if claims is not None:
        jobs = select_claims(jobs, tuple(claims))
    if language_seed is not None:
        jobs = hold_language(jobs, language_seed)
    if device != "cpu":
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise LandscapeError(f"--device {device}: no CUDA device is available")
        jobs = [_on_device(job, device) for job in jobs]
    say = report or (lambda msg: None)
    t0 = time.perf_counter()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    result = Outcome(out)
    result.runs = [out / "runs" / f"{job.name}.h5" for job in jobs]
    if workers > 1 and len(jobs) > 1:
        _parallel(jobs, result, workers, say, quiet=report is None)
    else:
        for job, path in zip(jobs, result.runs):
            progress = progress_factory() if progress_factory else None
            if _run_job(job, path, say, progress):
                result.trained.append(job.name)
    runs = [Run.open(p) for p in result.runs]
    say("figures")

    def look(stem, fig):  # what a reader would find wrong, said (the files are still written)
        for check, what in checks.problems(fig).items():
            say(f"  {stem}: figure check failed, {check}: {what}")

    result.figures = figures.render(runs, figures.PAPER_FIGURES, out / "figures",
                                    formats=("pdf", "png"),
                                    report=lambda msg: say(f"  {msg}"), inspect=look)
    result.claims = [c for c in claims_mod.judge_all(runs)
                     if claims is None or c.id in claims]
    result.seconds = time.perf_counter() - t0
    (out / "claims.json").write_text(claims_mod.to_json(result.claims))
    (out / "per_seed.json").write_text(claims_mod.json_text(per_seed_results(result.claims),
                                                             indent=1) + "\n")
    (out / "REPORT.md").write_text(report_markdown(preset, runs, result))
    return result


# What per_seed.json keeps of each claim's details: the per-seed values a README number
# traces back to (the README gallery commits it; claims.json holds everything).
PER_SEED_KEYS = {
    "1": ("per_seed", "single_complex", "looped_complex", "gap", "paired", "power", "controls",
          "single_second_half_rise", "looped_simple_first"),
    "2": ("paired", "power", "checkpoints"),
    "3": ("paired", "power", "valley"),
    "4": ("paired", "power", "per_step", "intervention"),
    "5": ("paired", "power", "targets", "shift_missed", "final_accuracy_fixed_budget"),
    "6": ("gate", "paired", "per_length", "steps", "selection", "power", "per_task"),
}


def per_seed_results(claims: list) -> dict:
    """Each claim's verdict and the per-seed parts of its details (``per_seed.json``)."""
    return {c.id: {"title": c.title, "verdict": c.verdict,
                   **{k: c.details[k] for k in PER_SEED_KEYS.get(c.id, ()) if k in c.details}}
            for c in claims}


def _on_device(job: Job, device: str) -> Job:
    probe_settings = None if job.probe is None else replace(job.probe, device=device)
    return replace(job, overrides=(*job.overrides, {"train": {"device": device}}),
                   probe=probe_settings)


def _run_job(job: Job, path: Path, say: Report, progress=None) -> bool:
    """Train (or resume) and probe one job; True if it trained anything."""
    trained = _train_job(job, path, say, progress)
    if job.probe is not None:
        say(f"probe {job.name}")
        probe(path, job.probe, lambda msg: say(f"  {job.name}: {msg}"))
    return trained


def _job_in_worker(job: Job, path: Path, quiet: bool) -> bool:
    """A worker process's job: one torch thread, progress lines to its stderr."""
    import sys

    import torch

    torch.set_num_threads(1)
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    return _run_job(job, path, say)


def _parallel(jobs: list[Job], result: Outcome, workers: int, say: Report,
              quiet: bool = False) -> None:
    """Independent jobs in ``workers`` processes (spawned: no forked torch state).

    The first failure cancels the jobs not yet started and is raised once the running
    ones have finished (their run files stay complete or resumable).
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    say(f"{len(jobs)} runs on {workers} worker processes")
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    try:
        futures = [pool.submit(_job_in_worker, job, path, quiet)
                   for job, path in zip(jobs, result.runs)]
        wait(futures, return_when=FIRST_EXCEPTION)  # the first failure, whichever job it is
        failed = [f for f in futures if f.done() and f.exception() is not None]
        if failed:
            raise failed[0].exception()
        for job, fut in zip(jobs, futures):
            if fut.result():
                result.trained.append(job.name)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _train_job(job: Job, path: Path, say: Report, progress=None) -> bool:
    recipe = job.load()
    if path.exists():
        run = Run.open(path)
        if run.recipe != recipe:
            raise LandscapeError(f"{path} was trained with another recipe than preset job "
                                 f"{job.name}; move it away or use another --out")
        if run.status == "complete":
            say(f"train {job.name}: done")
            return False
        say(f"train {job.name}: resuming at step {run.steps[-1]}")
        train(None, path, resume=True, progress=progress)
    else:
        say(f"train {job.name}")
        train(recipe, path, progress=progress)
    return True


# --- the report -------------------------------------------------------------------------


def report_markdown(preset: str, runs: list[Run], result: Outcome) -> str:
    """REPORT.md: claims with their verdicts, the runs' numbers, the figures."""
    import landscape

    lines = [f"# Reproduction report: Gong, Liu & Teng (arXiv 2510.10089), preset `{preset}`",
             "",
             f"Written by landscape {landscape.__version__} on {time.strftime('%Y-%m-%d')} "
             f"({platform.machine()}, Python {platform.python_version()}); this call took "
             f"{result.seconds / 60:.1f} min. Every rule is fixed in "
             "`landscape/analysis/claims.py`.",
             "", "## Claims", "", claims_mod.to_markdown(result.claims, _claim_images(result)),
             "## Runs", ""]
    lines += (_markov_table(runs) + [""] + _spectral_gap(runs) + _algorithmic_table(runs)
              + ["", "## Figures", ""])
    for name, paths in result.figures.items():
        if isinstance(paths, str):
            lines.append(f"- {name}: {paths}")
        else:
            pngs = [p for p in paths if str(p).endswith(".png")]
            lines += [f"- {name}: " + "; ".join(_figure_entry(p) for p in pngs)]
    return "\n".join(lines) + "\n"


def _figure_entry(png: Path) -> str:
    """A figure's link followed by the caption its file carries."""
    text = figures.caption_of(png) if Path(png).exists() else ""
    return f"[{png.name}](figures/{png.name})" + (f" {text}" if text else "")


CLAIM_FIGURES = {
    "1": ("fig2_sample_dynamics",), "2": ("fig3_spectra",),
    "3": ("valley_sweep", "valley_sweep_adam", "valley_stats", "valley_width_vs_river",
          "shared_plane"), "4": ("fig1_concept",),
    "5": ("fig4_shift", "shift_ablation", "fig11_algorithmic_wallclock", "fig12_task_curves"),
    "6": ("length_parity", "length_copy", "length_addition", "length_generalization"),
}
"""The figures (file stems) that show what each claim's verdict rests on."""


def _claim_images(result: Outcome) -> dict[str, list[str]]:
    """Per claim id, the drawn PNGs among :data:`CLAIM_FIGURES`, relative to REPORT.md."""
    drawn = {Path(p).stem: Path(p) for paths in result.figures.values()
             if not isinstance(paths, str) for p in paths if str(p).endswith(".png")}
    return {cid: [f"figures/{drawn[s].name}" for s in stems if s in drawn]
            for cid, stems in CLAIM_FIGURES.items()}


def _markov_table(runs: list[Run]) -> list[str]:
    rows = [r for r in runs if r.recipe.task.name == "markov"]
    if not rows:
        return []
    out = ["Markov language (accuracy on the held-out test set, last evaluation; each seed "
           "draws its own language, hence a Bayes ceiling per run):", "",
           "| run | epochs | simple acc | complex acc | ceiling (simple / complex) "
           "| train wall (s) | switch |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        sw = f"epoch {series.epoch_of(r, r.shift_step):.0f}" if r.shift_step is not None else ""
        c = r.ceilings
        out.append(f"| {r.name} | {series.final(r, 'epoch'):.0f} | "
                   f"{series.final(r, 'simple.acc'):.3f} | {series.final(r, 'complex.acc'):.3f} "
                   f"| {c['simple']['acc']:.3f} / {c['complex']['acc']:.3f} "
                   f"| {series.final(r, 'wall'):.0f} | {sw} |")
    return out


def _spectral_gap(runs: list[Run]) -> list[str]:
    """Claim 1's gap at the spectral runs' size, per seed (do they still separate)."""
    from landscape.analysis.stats import interval

    spec = {(r.recipe.arch, r.recipe.train.seed): r for r in runs
            if r.name.startswith(series.SPECTRAL_PREFIX)}
    seeds = sorted(s for a, s in spec if a == SINGLE and (LOOPED, s) in spec)
    if not seeds:
        return []
    last = claims_mod.FINAL_LAST  # "final" as claim 1 reads it
    gaps = [series.final(spec[LOOPED, s], "complex.acc", last)
            - series.final(spec[SINGLE, s], "complex.acc", last) for s in seeds]
    per = ", ".join(f"seed {s}: {g:+.3f}" for s, g in zip(seeds, gaps))
    return [f"The spectral runs (claims 2-4, a smaller model) still separate: Looped - Single "
            f"on complex {interval(gaps).text('.3f')} ({per}).", ""]


def _algorithmic_table(runs: list[Run]) -> list[str]:
    rows = [r for r in runs if r.recipe.task.name != "markov"]
    if not rows:
        return []
    out = ["Algorithmic tasks (token accuracy at the last evaluation; in-distribution: "
           "held-out samples of the training lengths; steps: where the run stopped, at "
           "mastery or its cap):", "",
           "| run | steps | in-distribution | per test input size | train wall (s) | switch |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        ls = series.length_series(r)
        per = ", ".join(f"{int(n)}: {a:.2f}" for n, a in zip(ls.length, ls.acc))
        sw = f"step {r.shift_step}" if r.shift_step is not None else ""
        out.append(f"| {r.name} | {int(series.final(r, 'step'))} | "
                   f"{series.final(r, 'iid.acc'):.3f} | {per} | "
                   f"{series.final(r, 'wall'):.0f} | {sw} |")
    return out
