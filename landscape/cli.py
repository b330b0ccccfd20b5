"""The ``landscape`` command line: thin click commands over the library.

Every command parses, calls the library and prints. A :class:`LandscapeError` (bad
input) or an OS error on a named file becomes a one-line message and exit status 2.
Under ``torchrun`` only rank 0 prints progress and results (errors print on every rank).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from landscape import __version__
from landscape.errors import LandscapeError
from landscape.probe.settings import EXACT_OPTIONS, GeometrySettings, HessianSettings, ProbeSettings
from landscape.train.archs import ALL
from landscape.train.recipe import (
    COUNT_MAX,
    GRID_MAX,
    SEED_MAX,
    THREADS_MAX,
    check_device,
    load_recipe,
    parse_override,
    with_arch,
)

_PROBE, _HS, _GS = ProbeSettings(), HessianSettings(), GeometrySettings()
"""The probe's defaults, read from its settings (the one source) for the flags below."""


def printable(text: object) -> str:
    """``text`` with every non-printable character escaped (ESC as ``\\x1b``, CR as ``\\r``).

    Everything the CLI prints goes through here: names, attributes and messages read from
    a run file must not move the cursor, recolour or retitle the terminal.

    >>> printable("run\\x1b[31m\\r")
    'run\\\\x1b[31m\\\\r'
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def say(text: object, err: bool = False) -> None:
    """Print one line, control characters escaped (see :func:`printable`)."""
    click.echo(printable(text), err=err)


class UserError(click.ClickException):
    """A one-line error with exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        """Print ``error: message`` on one line."""
        click.echo(f"error: {printable(self.format_message())}", err=True, file=file)


def _usage_error(e: click.UsageError) -> UserError:
    """Click's own usage error as one line that points to ``--help``."""
    message = " ".join(e.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    where = e.ctx.command_path if e.ctx is not None else "landscape"
    return UserError(f"{message} (see '{where} --help')")


_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
"""The usage error that shows the help (``landscape`` alone): kept as it is."""


class Group(click.Group):
    """Turns library errors into :class:`UserError` for every command.

    Click's usage errors (an unknown option, a missing argument, a bad value) become the
    same one line. A closed standard output (``landscape info RUN.h5 | head -2``) is not an
    error: it goes to click, which ends the command quietly.
    """

    def make_context(self, info_name, args, parent=None, **extra):
        """Parse the group's own options; a usage error is one line."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _HELP:
            raise
        except click.UsageError as e:
            raise _usage_error(e) from None

    def invoke(self, ctx):
        """Run the command, mapping bad input to exit status 2."""
        try:
            return super().invoke(ctx)
        except _HELP:
            raise
        except click.UsageError as e:
            raise _usage_error(e) from None
        except LandscapeError as e:
            raise UserError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        except BrokenPipeError:
            raise
        except MemoryError as e:
            raise UserError(f"out of memory: {e or 'an allocation failed'}") from None
        except OSError as e:
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            raise UserError(f"{e.strerror or e}{':' if where else ''}{where}") from None


DPI_MAX = 1200
"""The highest ``landscape plot --dpi`` (a figure stays under matplotlib's pixel limit)."""
WORKERS_MAX = 64
"""The most ``landscape reproduce --workers``."""


class Finite(click.FloatRange):
    """A float option in a range that is also finite (not nan, inf or -inf)."""

    def convert(self, value, param, ctx):
        """The number, or a usage error for NaN and infinities."""
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{rv} is not a finite number", param, ctx)
        return rv


def _check_steps(ctx, param, value: str) -> str:
    """``--steps`` read strictly before any work (see :func:`parse_steps`)."""
    from landscape.probe.driver import parse_steps

    parse_steps(value)
    return value


CURVATURE_NAMES = ("hessian", "ggn", "fisher")  # landscape.runfile.schema.CURVATURES


def _check_curvatures(ctx, param, value: str) -> tuple[str, ...]:
    """``--curvature hessian,ggn,...`` as a tuple of known names, in order, without repeats."""
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in CURVATURE_NAMES]
    if unknown or not names:
        raise click.BadParameter(f"{value!r}: name one or more of {', '.join(CURVATURE_NAMES)}, "
                                 "comma-separated")
    return names


class Device(click.ParamType):
    """A device option: cpu, cuda or cuda:N, and present on this machine."""

    name = "device"

    def convert(self, value, param, ctx):
        """The checked device name, or a one-line error naming the option."""
        try:
            return check_device(value, "--device", available=True)
        except LandscapeError as e:
            raise UserError(str(e)) from None


@click.group(name="landscape", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="landscape")
def main():
    """Loss-landscape analysis of looped transformers.

    Train Single-Attn, Looped-Attn and SHIFT (train), probe the River-U/V-Valley
    geometry of their checkpoints (probe), and draw the figures (plot, reproduce).

    Example: landscape train looped_attn --preset quick
    """


# --- train ------------------------------------------------------------------------------


@main.command()
@click.argument("recipe", required=False)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Run file to write [default: checkpoints/<recipe name>.h5].")
@click.option("--model", type=click.Choice(ALL), help="Override the architecture "
              "(single, looped, shift; the controls untied, linear_single, linear_looped).")
@click.option("--task", help="Override the task (markov, parity, copy, addition, ...).")
@click.option("--preset", help="Apply a [presets.NAME] table of the recipe, e.g. quick.")
@click.option("--epochs", type=click.IntRange(min=1), help="Training length in epochs.")
@click.option("--steps", type=click.IntRange(min=1), help="Training length in steps.")
@click.option("--seed", type=click.IntRange(0, SEED_MAX),
              help="Training seed (initialisation, batch order), 0..2**63-1.")
@click.option("--device", type=Device(), help="cpu, cuda or cuda:N.")
@click.option("--every", type=click.IntRange(min=1),
              help="Evaluate and checkpoint every K steps [default: once per epoch].")
@click.option("--set", "sets", multiple=True, metavar="TABLE.KEY=VALUE",
              help="Override any recipe key, e.g. --set train.lr=3e-4 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(recipe, out, model, task, preset, epochs, steps, seed, device, every, sets, resume,
          quiet):
    """Train a model into a run file (one HDF5 file per run).

    RECIPE is a TOML file or the name of a shipped recipe (single_attn, looped_attn,
    shift, parity, copy, addition, binary_sum, unique_set, controls/fixed1, ...).

    \b
    Examples:
      landscape train looped_attn --preset quick
      landscape train my_recipe.toml --set train.lr=3e-4
      landscape train --task parity --model shift --steps 2000 --out checkpoints/p.h5
      landscape train --resume --out checkpoints/looped_attn.h5
    """
    from landscape.train.trainer import train as run_training

    if resume:
        if out is None:
            raise UserError("--resume needs --out RUN.h5, the run file to continue")
        given = None
        if recipe is not None or any((model, task, preset, epochs, steps, seed, device, every,
                                      sets)):
            given = _build_recipe(recipe, model, task, preset, epochs, steps, seed, device,
                                  every, sets)
        path = run_training(given, out, resume=True, progress=_progress_bar(quiet))
    else:
        rec = _build_recipe(recipe, model, task, preset, epochs, steps, seed, device, every,
                            sets)
        out = out or Path("checkpoints") / f"{rec.name}.h5"
        path = run_training(rec, out, progress=_progress_bar(quiet))
    if _main_rank():
        say(f"wrote {path}")
        _print_summary(path)


def _build_recipe(recipe, model, task, preset, epochs, steps, seed, device, every, sets):
    overrides: list[dict] = [parse_override(s) for s in sets]
    if task:
        overrides.insert(0, {"task": {"name": task}})
    train_over = {k: v for k, v in (("epochs", epochs), ("steps", steps), ("seed", seed),
                                    ("device", device), ("eval_every", every),
                                    ("checkpoint_every", every)) if v is not None}
    if train_over:
        overrides.append({"train": train_over})
    rec = load_recipe(recipe, preset=preset, overrides=overrides)
    if model:
        rec = with_arch(rec, model, name=None if recipe is not None else
                        f"{rec.task.name}_{model}")
    return rec


class _Bar:
    """A click progress bar driven by the trainer's callback."""

    def __init__(self):
        self.bar, self.last = None, 0

    def __call__(self, step: int, total: int, info: dict) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="training", file=sys.stderr,
                                         show_pos=True, item_show_func=lambda s: s)
            self.bar.__enter__()
            self.bar.update(step - 1)
        self.bar.update(step - self.last if self.last else 1,
                        f"loss {info['loss']:.4f} loops {info['loops']} "
                        f"{info['tok/s']:,.0f} tok/s")
        self.last = step
        if step >= total:
            self.bar.__exit__(None, None, None)


def _progress_bar(quiet: bool):
    return None if quiet or not _main_rank() else _Bar()


def _main_rank() -> bool:
    """False on the ranks other than 0 of a torchrun job (they stay quiet)."""
    from landscape.train.distributed import is_main_process

    return is_main_process()


# --- probe ------------------------------------------------------------------------------


@main.command()
@click.argument("run_file", type=click.Path(path_type=Path))
@click.option("--steps", default=_PROBE.steps, show_default=True, callback=_check_steps,
              help="Checkpoints: all, last, spaced:K (K evenly spaced, plus a SHIFT switch and "
                   "the starts of per-step windows and interventions) or N,M,... "
                   "(optimiser steps).")
@click.option("--hessian/--no-hessian", default=True, show_default=True,
              help="Hessian spectra: top/bottom-k, trace, SLQ density, exact where small.")
@click.option("--curvature", "curvatures", default=",".join(_PROBE.curvatures), show_default=True,
              callback=_check_curvatures, metavar="hessian|ggn|fisher[,...]",
              help="Which curvature matrices the spectra parts measure, comma-separated: "
                   "the Hessian, the generalised Gauss-Newton matrix, the empirical Fisher "
                   "(read back with run.curvature(step, 'ggn')).")
@click.option("--valley-curvature", type=click.Choice(CURVATURE_NAMES),
              default=_PROBE.valley_curvature, show_default=True,
              help="Whose top eigenvectors the river/valley split and the slices use.")
@click.option("--geometry/--no-geometry", default=True, show_default=True,
              help="River/valley split, valley widths, river direction, 2-D slices, and "
                   "run-level river progress, PCA plane, loop curve, SHIFT switch.")
@click.option("--k", "k_top", type=click.IntRange(1, COUNT_MAX), default=_HS.k_top,
              show_default=True,
              help="Top eigenvalues (with eigenvectors).")
@click.option("--k-bottom", type=click.IntRange(0, COUNT_MAX), default=_HS.k_bottom,
              show_default=True,
              help="Bottom eigenvalues (negative curvature).")
@click.option("--slq-runs", type=click.IntRange(1, COUNT_MAX), default=_HS.slq_runs,
              show_default=True)
@click.option("--slq-steps", type=click.IntRange(2, COUNT_MAX), default=_HS.slq_steps,
              show_default=True)
@click.option("--trace-hvps", type=click.IntRange(2, COUNT_MAX), default=_HS.trace_hvps,
              show_default=True,
              help="Hutch++ products beyond the deflated top-k.")
@click.option("--exact", type=click.Choice(EXACT_OPTIONS), default=_HS.exact,
              show_default=True, help="Full spectrum (dense Hessian, P HVPs); auto: where P "
                                      "<= --exact-max-params and the plan (--plan) puts it "
                                      "under a minute per checkpoint.")
@click.option("--exact-max-params", type=click.IntRange(1, COUNT_MAX), default=_HS.exact_max_params,
              show_default=True)
@click.option("--blocks", "blocks", multiple=True, is_flag=False, flag_value="layers",
              metavar="[PATTERN]",
              help="Per-block spectra. Alone: one block per layer of the architecture (a "
                   "numbered layer such as transformer.h.3, else the module owning the "
                   "parameter). With a value (repeatable): one block per fnmatch pattern of "
                   "parameter names, e.g. --blocks 'transformer.h.0.attn.*'.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=_HS.dtype,
              show_default=True)
@click.option("--backend", type=click.Choice(["landscape", "pyhessian"]), default=_HS.backend,
              show_default=True, help="pyhessian: also store PyHessian 0.1's numbers.")
@click.option("--grid", type=click.IntRange(3, GRID_MAX), default=_GS.grid, show_default=True,
              help=f"Points per axis of 2-D slices (odd, at most {GRID_MAX}).")
@click.option("--delta", type=Finite(min=0, min_open=True), default=_GS.delta, show_default=True,
              help="Loss rise (nats) at which valley widths are read.")
@click.option("--valley-k", type=click.IntRange(1, COUNT_MAX), default=_GS.valley_k,
              show_default=True,
              help="Adam-preconditioned eigenpairs examined for the optimiser's valley "
                   "(those near its stability edge span it; at checkpoints with AdamW state).")
@click.option("--intervention-steps", type=click.IntRange(1, COUNT_MAX),
              default=_GS.intervention_steps, show_default=True,
              help="K: optimiser steps continued from each intervention start ([train] "
                   "intervene_at), unchanged and with the valley motion removed.")
@click.option("--shared-plane", default=_GS.shared_plane, metavar="init|REF.h5[:STEP]",
              help="Also slice a random plane normalised against a reference checkpoint, "
                   "the same for every run probed with it: init (the run's own first "
                   "checkpoint: runs from one initialisation share it) or another run "
                   "file's checkpoint (default its first).")
@click.option("--device", type=Device(), default=_PROBE.device, show_default=True,
              help="cpu, cuda or cuda:N: where the model, the products and the grids live.")
@click.option("--threads", type=click.IntRange(0, THREADS_MAX), default=0,
              help="torch CPU threads (0: torch's default).")
@click.option("--force", is_flag=True, help="Recompute parts already stored.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print each part's estimated HVPs, time and peak memory (from one timed "
                   "gradient and HVP) and the parts memory would refuse; compute nothing.")
@click.option("--ignore-memory", is_flag=True,
              help="Run parts whose estimated peak memory exceeds what the device has.")
@click.option("--trust-code", is_flag=True,
              help="Import the model factory and loss that a run of your own model names "
                   "(runs that code; only for files you trust).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def probe(run_file, steps, hessian, curvatures, valley_curvature, geometry, k_top, k_bottom,
          slq_runs, slq_steps, trace_hvps, exact, exact_max_params, blocks, dtype, backend,
          grid, delta, valley_k, intervention_steps, shared_plane, device, threads, force,
          plan_only, ignore_memory, trust_code, quiet):
    """Compute Hessian and River-Valley diagnostics on a run file's checkpoints.

    Results go into the run file; a second call skips what is done (--force
    recomputes) and a killed call resumes.

    \b
    Examples:
      landscape probe checkpoints/looped_attn.h5
      landscape probe run.h5 --steps last --no-geometry --k 20 --exact always
      landscape probe run.h5 --steps 0,640 --backend pyhessian --dtype float64
      landscape probe looped.h5 --shared-plane single.h5:0   # compare on one plane
      landscape probe mine.h5 --trust-code   # a run of your own model names its factory
      landscape probe gpt.h5 --trust-code --plan --exact always   # costs first
      landscape probe gpt.h5 --trust-code --blocks 'transformer.h.0.attn.*' --device cuda
      landscape probe run.h5 --curvature hessian,ggn --no-geometry   # and the GGN's
    """
    import torch

    from landscape.probe import plan as probe_plan
    from landscape.probe import probe as run_probe

    if not hessian and not geometry:
        raise UserError("nothing to do: give --hessian and/or --geometry")
    if geometry and grid % 2 == 0:
        raise UserError(f"--grid {grid} must be odd (the checkpoint is the grid's centre "
                        "point)")
    if shared_plane and not geometry:
        raise UserError("--shared-plane is a geometry probe: drop --no-geometry")
    if threads:
        torch.set_num_threads(threads)
    settings = ProbeSettings(
        steps=steps, force=force, device=device, ignore_memory=ignore_memory,
        curvatures=curvatures, valley_curvature=valley_curvature,
        hessian=HessianSettings(k_top=k_top, k_bottom=k_bottom, slq_runs=slq_runs,
                                slq_steps=slq_steps, trace_hvps=trace_hvps, exact=exact,
                                exact_max_params=exact_max_params, blocks=tuple(blocks),
                                dtype=dtype,
                                backend=backend) if hessian else None,
        geometry=GeometrySettings(grid=grid, delta=delta, shared_plane=shared_plane,
                                  valley_k=valley_k, fallback_k=min(_GS.fallback_k, valley_k),
                                  intervention_steps=intervention_steps)
        if geometry else None,
    )
    _buffer_note(run_file, trust_code)
    if plan_only:
        for line in probe_plan(run_file, settings, trust_code=trust_code):
            say(line)
        return
    t0 = time.perf_counter()
    report = None if quiet or not _main_rank() else (lambda msg: say(msg, err=True))
    bar = None if quiet or not _main_rank() or not _is_terminal() else _ProbeBar()
    if bar is not None:
        report = bar.say
    try:
        done = run_probe(run_file, settings, report, trust_code=trust_code, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if _main_rank():
        say(f"probed {len(done)} checkpoints of {run_file} in {_elapsed(t0)}")


def _is_terminal() -> bool:
    """Whether standard error is a terminal (a progress bar is drawn only there)."""
    return sys.stderr.isatty()


def probe_bar_text(ev, width: int = 20) -> str:
    """One line of the probe's progress bar: checkpoint, bar, part and the time left.

    Args:
        ev: a :class:`landscape.probe.driver.ProbeProgress`.
        width: characters of the bar.
    """
    from landscape.probe.costs import human_seconds

    filled = min(width, max(0, round(ev.fraction * width)))
    return (f"checkpoint {ev.checkpoint}/{ev.checkpoints} (step {ev.step}) "
            f"[{'#' * filled}{'-' * (width - filled)}] {100 * ev.fraction:3.0f}% "
            f"{ev.part}, about {human_seconds(ev.seconds_left)} left")


class _ProbeBar:
    """The probe's progress bar on standard error, redrawn in place as each part starts."""

    def __init__(self):
        self.line = ""

    def __call__(self, ev) -> None:
        self.line = printable(probe_bar_text(ev))
        click.echo("\r\x1b[2K" + self.line, err=True, nl=False)

    def say(self, msg: str) -> None:
        """A line of the report above the bar."""
        click.echo("\r\x1b[2K", err=True, nl=False)
        say(msg, err=True)
        if self.line:
            click.echo(self.line, err=True, nl=False)

    def close(self) -> None:
        if self.line:
            click.echo("\r\x1b[2K", err=True, nl=False)


def _buffer_note(run_file: Path, trust_code: bool) -> None:
    """Say once, before probing, where checkpoints carry no buffers (the factory's are used)."""
    from landscape.runs.run import Run

    if not _main_rank():
        return
    run = Run.open(run_file, trust_code=trust_code)
    if not run.custom:
        return
    run.require_code()
    note = run.buffer_note()
    if note:
        say(f"note: {note}", err=True)


# --- plot and reproduce -----------------------------------------------------------------


@main.command()
@click.argument("run_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--figure", "names", multiple=True, default=["supported"], show_default=True,
              help="Figure to draw (repeatable): supported (those the runs' stored parts "
                   "support; nothing synthetic for your own models), all, concept, "
                   "sample_dynamics, spectra, shift, algorithmic, valley, slices, "
                   "shared_plane, loops, switch, sharpness, blocks (per-block spectra).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("figures/out"), show_default=True, help="Folder for the files.")
@click.option("--format", "formats", default="pdf,png", show_default=True,
              help="Comma-separated: pdf, png, svg, and html (an interactive 3-D page per "
                   "2-D slice, self-contained; needs the html extra).")
@click.option("--dpi", type=click.IntRange(20, DPI_MAX), default=200, show_default=True)
@click.option("--width", default=None,
              help="Width of every figure: column (3.25 in), page (6.75 in) or inches; "
                   "default: each figure's own.")
def plot(run_files, names, out, formats, dpi, width):
    """Draw publication figures from run files (probe them first for the curvature ones).

    \b
    Examples:
      landscape plot checkpoints/*.h5 --out figures/out
      landscape plot reproduce/quick/runs/*.h5 --figure spectra --format png
      landscape plot mine.h5 --figure slices --format html   # open the .html in a browser
      landscape plot checkpoints/*.h5 --figure slices --width column
    """
    from landscape.draw.figures import render
    from landscape.draw.plot import FORMATS
    from landscape.runs.run import Run

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    known = (*FORMATS, "html")
    bad = [f for f in fmts if f not in known] or ([] if fmts else [formats])
    if bad:
        raise UserError(f"unknown format {bad[0]!r} (formats: {', '.join(known)})")
    if width is not None and width not in ("column", "page"):
        try:
            width = float(width)
        except ValueError:
            raise UserError(f"--width must be column, page or inches, got {width!r}") from None
        if not 0 < width < float("inf"):
            raise UserError(f"--width must be column, page or inches > 0, got {width:g}")
    runs = [Run.open(p) for p in run_files]
    done = render(runs, names, out, fmts, dpi=dpi,
                  report=lambda msg: say(msg, err=True), width=width)
    drawn = [n for n, v in done.items() if not isinstance(v, str)]
    if not done:
        raise UserError("these runs store nothing a figure draws; probe them first "
                        "(landscape probe RUN.h5)")
    if not drawn:
        raise UserError("no figure could be drawn: " + "; ".join(str(v) for v in done.values()))
    say(f"wrote {len(drawn)} figure(s) to {out}")


@main.command()
@click.argument("run_file", type=click.Path(path_type=Path))
@click.option("--tensorboard", "tb_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for TensorBoard's event files (needs the tensorboard extra).")
def export(run_file, tb_dir):
    """Write a run's metrics, probe numbers and Hessian spectra for TensorBoard.

    Scalars over the optimiser step (metrics, lambda_max and the optimiser's edge, trace,
    kappa, each block's top eigenvalue) and the spectra as histograms.

    \b
    Examples:
      landscape export checkpoints/looped.h5 --tensorboard tb/looped
      tensorboard --logdir tb
    """
    from landscape.draw.tensorboard import export_tensorboard
    from landscape.runs.run import Run

    done = export_tensorboard(Run.open(run_file), tb_dir)
    say(f"wrote {sum(done.scalars.values())} scalars ({len(done.scalars)} tags) and "
        f"{sum(done.histograms.values())} histograms to {done.folder}")


@main.command()
@click.option("--preset", type=click.Choice(["quick", "paper"]), default="quick",
              show_default=True,
              help="quick: 11 runs, about 4.5 min on 2 idle CPU cores; paper: 93 runs, "
                   "about 3 h on 2 cores, timed in parts (claims 1, 5, 6 alone: 1 h 45 min).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder [default: reproduce/<preset>].")
@click.option("--workers", type=click.IntRange(1, WORKERS_MAX), default=None,
              help="Runs trained and probed at once, one process and one torch thread "
                   "each [default: CPU cores, at most 4].")
@click.option("--device", type=Device(), default="cpu", show_default=True,
              help="cpu or cuda: where every run trains and is probed.")
@click.option("--language-seed", type=click.IntRange(0, SEED_MAX), default=None,
              help="Hold the Markov language fixed (task.seed) for every run [default: "
                   "each run's training seed also draws its language].")
@click.option("--claims", "claim_ids", default=None, metavar="1,5,6",
              help="Only the runs these claims read, and only their verdicts (probes only "
                   "with 2, 3 or 4 among them).")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
def reproduce(preset, out, workers, device, language_seed, claim_ids, quiet):
    """Train, probe, plot and judge the paper's claims; writes REPORT.md and claims.json.

    Resumable: finished runs and probes are reused, a killed call continues.

    \b
    Examples:
      landscape reproduce                      # the quick preset, into reproduce/quick
      landscape reproduce --preset paper --out reproduce/paper --device cuda
      landscape reproduce --preset paper --claims 1,5,6 --out ~/runs/paper
    """
    from landscape.reproduce import reproduce as run_reproduce
    from landscape.reproduce import select_claims

    claims = None
    if claim_ids is not None:
        claims = tuple(c.strip() for c in claim_ids.split(",") if c.strip())
        select_claims([], claims)  # a bad list ends here, before any work

    out = out or Path("reproduce") / preset
    t0 = time.perf_counter()
    tell = None if quiet else (lambda msg: say(msg, err=True))
    bar = None if quiet else _Bar
    workers = workers or min(4, os.cpu_count() or 1)
    result = run_reproduce(preset, out, report=tell, progress_factory=bar, workers=workers,
                           device=device, language_seed=language_seed, claims=claims)
    say(f"reproduce {preset}: {_elapsed(t0)}")
    for c in result.claims:
        say(f"  claim {c.id}: {c.verdict:<13} {c.title}")
    say(f"report: {out / 'REPORT.md'}")


# --- import -----------------------------------------------------------------------------


@main.command(name="import")
@click.argument("ckpt_dir", type=click.Path(path_type=Path))
@click.option("--model", "factory", required=True, metavar="PKG.MOD:BUILD",
              help="Importable function that builds the module (landscape.hf:causal_lm for "
                   "a HuggingFace causal LM).")
@click.option("--kwargs", "kwargs_json", default="{}", metavar="JSON",
              help='Keyword arguments of the factory, e.g. \'{"d_model": 64}\' or '
                   '\'{"config": "ckpts/config.json"}\'.')
@click.option("--probe", "data", required=True, type=click.Path(path_type=Path),
              help="The probe set: a .pt or .npz file with inputs and targets, or named "
                   "arrays passed to the model as keyword arguments (input_ids, "
                   "attention_mask, ...).")
@click.option("--loss", default="next_token", show_default=True,
              help="next_token, cross_entropy, mse, or PKG.MOD:FUNCTION(model, batch).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Run file to write (an existing one from an interrupted import continues).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def import_(ckpt_dir, factory, kwargs_json, data, loss, out, quiet):
    """Import a folder of state_dict files (.pt, .safetensors) into a run file.

    Checkpoints are ordered by the last number in their names (step_100.pt). .pt files
    are read with torch.load(weights_only=True). The factory you name is imported and
    called here.

    \b
    Examples:
      landscape import ckpts/ --model mypkg.models:build --kwargs '{"d_model": 64}' \\
          --probe probe.pt --loss next_token --out runs/mine.h5
      landscape import gpt2_ckpts/ --model landscape.hf:causal_lm \\
          --kwargs '{"config": "gpt2_ckpts/config.json"}' --probe probe.npz --out gpt2.h5
    """
    import json

    from landscape.runs.importer import import_checkpoints

    try:
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as e:
        raise UserError(f"--kwargs is not JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise UserError("--kwargs must be a JSON object of keyword arguments")
    tell = None if quiet else (lambda step, p: say(f"step {step}: {p.name}", err=True))
    t0 = time.perf_counter()
    done = import_checkpoints(ckpt_dir, out, factory=factory, kwargs=kwargs, probe=data,
                              loss=loss, progress=tell)
    say(f"imported {len(done)} checkpoints into {out} in {_elapsed(t0)}")
    _print_summary(out)


# --- info -------------------------------------------------------------------------------


@main.command()
@click.argument("run_file", type=click.Path(path_type=Path))
def info(run_file):
    """Summarise a run file: recipe, checkpoints, final metrics vs ceilings, events, probes.

    \b
    Example:
      landscape info checkpoints/looped_attn.h5
    """
    _print_summary(run_file)


def _print_summary(path: Path) -> None:
    from landscape.runfile import store
    from landscape.runs.run import Run

    run = Run.open(path)
    r = run.recipe
    writer = store.writer_holding(path)
    if r is None:
        _print_custom(run, writer)
        return
    say(f"{path}: {r.name} ({run.recipe.arch}), task {r.task.name}, status {run.status}"
               + (f", being written by {writer}" if writer else ""))
    m = r.model
    say(f"  model: d_model {m.d_model}, heads {m.n_heads}, {m.attention} attention, "
               f"norm {m.norm}, positions {m.positions}, mlp {m.mlp}, loops {m.loops}, "
               f"{run.layout.size:,} parameters")
    if len(run.steps):
        say(f"  checkpoints: {len(run.steps)} (steps {run.steps[0]}..{run.steps[-1]}, "
                   f"loops {'/'.join(str(x) for x in np.unique(run.loops))})")
    _print_metrics(run)
    for e in run.events:
        if e.get("kind") == "shift":
            say(f"  shift: step {e['step']} (epoch {e['epoch']:.1f}), {e['reason']}, "
                       f"loops {e['loops_before']} -> {e['loops_after']}")
    if run.probes:
        kinds = sorted({k for v in run.probes.values() for k in v})
        say(f"  probes: {', '.join(kinds)} at {len(run.probes)} checkpoints")


def _print_custom(run, writer: str | None) -> None:
    """The summary of a run of your own model (reads no code)."""
    spec = run.spec
    kwargs = spec.get("kwargs") or {}
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if not isinstance(v, dict))
    nested = [k for k, v in kwargs.items() if isinstance(v, dict)]
    shown = ", ".join(filter(None, [shown, *(f"{k}={{...}}" for k in nested)]))
    say(f"{run.path}: {run.name} (your own model, {run.attrs.get('source')}), status "
               f"{run.status}" + (f", being written by {writer}" if writer else ""))
    say(f"  model: {spec['factory']}({shown}), {run.layout.size:,} parameters; "
               f"loss {spec['loss']}")
    ps = run.probe_set()
    say("  probe set: " + ", ".join(f"{k} {list(v.shape)} {v.dtype}"
                                            for k, v in ps.items()))
    if len(run.steps):
        adam = run._summary.get("adam_step") is not None
        say(f"  checkpoints: {len(run.steps)} (steps {run.steps[0]}..{run.steps[-1]})"
                   + (", with Adam's second moment" if adam else ""))
    stored = run.stored_buffers
    if stored:
        say(f"  buffers stored per checkpoint: {len(stored)} ("
                   + ", ".join(stored[:4]) + (", ..." if len(stored) > 4 else "") + ")")
    note = run.buffer_note()
    if note:
        say(f"  note: {note}")
    met = {k: v for k, v in run.metrics.items() if k not in ("step", "wall") and len(v)}
    if met and "step" in run.metrics:
        last = ", ".join(f"{k} {v[-1]:.4g}" for k, v in sorted(met.items()))
        say(f"  last metrics (step {int(run.metrics['step'][-1])}): {last}")
    if run.probes:
        kinds = sorted({k for v in run.probes.values() for k in v})
        say(f"  probes: {', '.join(kinds)} at {len(run.probes)} checkpoints")


def _print_metrics(run) -> None:
    met = run.metrics
    if "step" not in met or len(met["step"]) == 0:
        return
    wall, tput = float(met["wall"][-1]), run.attrs.get("throughput")
    say(f"  last evaluation: step {int(met['step'][-1])}, epoch "
               f"{met['epoch'][-1]:.1f}, train wall {wall:.1f} s"
               + (f", {tput:,.0f} tokens/s" if isinstance(tput, float) else ""))
    for split in run.task_attrs.get("splits", []):
        if f"{split}.acc" not in met:
            continue
        ceil = run.ceilings.get(split, {})
        c = f" (Bayes {ceil['acc']:.3f} / {ceil['loss']:.3f})" if "acc" in ceil else ""
        say(f"    {split:>10}: acc {met[f'{split}.acc'][-1]:.3f}  loss "
                   f"{met[f'{split}.loss'][-1]:.3f}{c}")


def _elapsed(t0: float) -> str:
    return f"{time.perf_counter() - t0:.1f} s"


if __name__ == "__main__":  # pragma: no cover
    main()
