"""Recipes: what to train, as frozen dataclasses loaded from TOML with strict validation.

A recipe file has four tables, each optional::

    name = "looped_attn"          # defaults to the file's stem
    extends = "markov.toml"       # optional: a recipe this one overrides (path relative to it)
    [task]   name = "markov" ...  # tasks.markov.MarkovConfig or tasks.algorithmic.AlgorithmicConfig
                                  # (Markov: language = "hybrid" | "fixed1" | ... names one)
    [model]  loops = 3 ...        # landscape.train.model.ModelConfig
    [train]  lr = 1e-3 ...        # TrainConfig below
    [shift]  enabled = true ...   # ShiftConfig below
    [presets.quick.train]         # overrides applied by `--preset quick`
    epochs = 30

Unknown keys, wrong types and impossible values raise :class:`LandscapeError` naming the
key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from landscape.errors import LandscapeError
from landscape.runfile.validate import damaged
from landscape.train import archs
from landscape.train.model import ModelConfig
from landscape.train.tasks import TaskConfig, task_config_class

SCHEDULES = ("constant", "cosine")
SEED_MAX = 2**63 - 1
"""The largest seed (``--seed``, ``train.seed``, ``--language-seed``): seeds are 0..2**63-1."""
INT_MAX = 2**63 - 1
"""The largest integer a recipe may hold (run files store them as 64-bit integers)."""
COUNT_MAX = 2**31 - 1
"""The largest step count, batch or probe size of ``[train]`` and ``[shift]``."""
THREADS_MAX = 1024
"""The most torch CPU threads (``train.threads``, ``landscape probe --threads``)."""
LOOPS_MAX = 1024
"""The most loops of a model (``model.loops``, ``shift.loops_after``)."""
DEVICES = ("cpu", "cuda")
GRID_MAX = 1001
"""The most points per axis of a probe's 2-D slice (``--grid``; a million losses)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, budget and bookkeeping. Recipe table ``[train]``."""

    lr: float = 1e-3  # peak AdamW learning rate
    warmup_steps: int = 0  # linear warm-up from 0 to lr over this many steps
    schedule: str = "constant"  # after warm-up: "constant" or "cosine" (to final_lr_ratio * lr)
    final_lr_ratio: float = 0.0  # cosine only: the learning rate at the last step, relative to lr
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.999  # AdamW second-moment decay
    batch_size: int = 64  # sequences per step; an epoch is n_train // batch_size steps
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    epochs: int = 100  # training length in epochs (ignored when steps > 0)
    steps: int = 0  # training length in optimiser steps; overrides epochs when > 0
    seed: int = 0  # model initialisation and batch order
    eval_every: int = 0  # steps between evaluations; 0 means once per epoch
    checkpoint_every: int = 0  # steps between trajectory checkpoints; 0 means once per epoch
    probe_size: int = 256  # training sequences in the fixed probe set used by every probe
    device: str = "cpu"  # "cpu" or "cuda"
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    stop_acc: float = 0.0  # end the run at the first evaluation where stop_split's token
    #                        accuracy reaches this (after any curriculum); 0: never
    stop_split: str = "iid"  # the held-out split stop_acc reads
    monitor_splits: tuple[str, ...] = ()  # if given, only these splits are evaluated every
    #                      eval_every steps; all of them at checkpoints and at the end (NaN between)
    window_steps: int = 0  # per-step dynamics windows: optimiser steps per window (0: none;
    #                        64 is a good length); see TrainConfig._check_windows
    window_at: tuple[int, ...] = ()  # the optimiser steps where windows start (increasing,
    #                                  windows may not overlap)
    intervene_at: tuple[int, ...] = ()  # optimiser steps where the full training state
    #     (model, both AdamW moments and its step, batch order) is stored so that an
    #     intervention can continue from there exactly (landscape.runfile.interventions)

    def __post_init__(self):
        _check_finite(self, "train")
        _check(self.lr > 0, "train.lr must be > 0")
        _check(self.schedule in SCHEDULES, f"train.schedule must be one of {SCHEDULES}")
        _check(0 <= self.final_lr_ratio <= 1, "train.final_lr_ratio must be in [0, 1]")
        _check(self.weight_decay >= 0, "train.weight_decay must be >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2 must be in [0, 1)")
        _check(self.batch_size >= 1, "train.batch_size must be >= 1")
        _check(self.grad_clip >= 0, "train.grad_clip must be >= 0 (0 disables clipping)")
        _check(self.epochs >= 1 or self.steps >= 1, "train: give epochs >= 1 or steps >= 1")
        _check(min(self.steps, self.warmup_steps, self.eval_every, self.checkpoint_every,
                   self.threads) >= 0, "train: step counts and threads must be >= 0")
        _check(self.probe_size >= 1, "train.probe_size must be >= 1")
        _check(0 <= self.stop_acc <= 1, "train.stop_acc must be in [0, 1] (0: never stop early)")
        _check(max(self.steps, self.epochs, self.warmup_steps, self.eval_every,
                   self.checkpoint_every, self.batch_size, self.probe_size) <= COUNT_MAX,
               f"train: step counts, epochs, batch_size and probe_size must be <= {COUNT_MAX}")
        _check(self.threads <= THREADS_MAX, f"train.threads must be <= {THREADS_MAX}")
        _check(0 <= self.seed <= SEED_MAX, f"train.seed must be in 0..{SEED_MAX} (2**63-1)")
        check_device(self.device, "train.device")
        self._check_windows()
        _check(all(0 <= s <= COUNT_MAX for s in self.intervene_at)
               and all(b > a for a, b in zip(self.intervene_at, self.intervene_at[1:])),
               f"train.intervene_at must be increasing steps in 0..{COUNT_MAX}")

    def _check_windows(self) -> None:
        """Per-step windows: ``window_at`` increasing, non-overlapping, with a length.

        A window starting at step ``s`` records optimiser steps ``s, s+1, ...,
        s + window_steps - 1`` (0-based, as :meth:`Recipe.lr_at` counts them): for each, the
        parameter update (parameters after the step minus before it), the training loss of
        the step's batch before its update and the learning rate. The parameters before its
        first update are the checkpoint at step ``s`` when ``s`` is a checkpoint step (a
        multiple of ``checkpoint_every``, or 0), so starting windows there lets the
        checkpoint plus the cumulative sum of the updates give every parameter vector of the
        window. Whether a window fits the budget is checked by the trainer, which knows the
        steps per epoch: one that starts at or after the last step is refused, one that
        runs past it is cut there (its stored ``planned`` length says so).
        """
        at, n = self.window_at, self.window_steps
        _check(0 <= n <= COUNT_MAX, f"train.window_steps must be in 0..{COUNT_MAX}")
        _check(all(0 <= s <= COUNT_MAX for s in at),
               f"train.window_at: steps must be in 0..{COUNT_MAX}")
        _check(all(b > a for a, b in zip(at, at[1:])),
               "train.window_at must be increasing (each start step once)")
        _check(not at or n >= 1, "train.window_at needs train.window_steps >= 1 (e.g. 64)")
        _check(not n or bool(at), "train.window_steps needs train.window_at: the steps where "
               "windows start, e.g. [0]")
        for a, b in zip(at, at[1:]):
            _check(b >= a + n, f"train.window_at: the window at {a} ({n} steps) overlaps the "
                   f"one at {b}")


@dataclass(frozen=True)
class WindowPlan:
    """One per-step window the trainer records: its start and its planned length."""

    start: int
    steps: int  # planned: min(window_steps, total - start)
    requested: int  # train.window_steps


def windows_of(tc: TrainConfig, total: int) -> list[WindowPlan]:
    """The windows of ``tc`` in a run of ``total`` optimiser steps, cut to fit.

    >>> windows_of(TrainConfig(window_steps=4, window_at=(0, 8)), 10)
    [WindowPlan(start=0, steps=4, requested=4), WindowPlan(start=8, steps=2, requested=4)]

    Raises:
        LandscapeError: a window starts at or after the last step (it would hold nothing).
    """
    out = []
    for s in tc.window_at:
        _check(s < total, f"train.window_at: a window at step {s} starts after the run's "
               f"last step ({total} steps: 0..{total - 1}); start windows below {total}")
        out.append(WindowPlan(s, min(tc.window_steps, total - s), tc.window_steps))
    return out


CRITERIA = ("training", "oracle")


@dataclass(frozen=True)
class ShiftConfig:
    """SHIFT: train Single-Attn, then switch to Looped-Attn. Recipe table ``[shift]``.

    The default ``criterion = "training"`` reads only what a practitioner has while
    training: the running means, between two evaluations, of the training loss and the
    training token accuracy of the batches just trained on. The switch fires at the first
    evaluation where, for ``patience`` evaluations in a row,

    (a) the training loss, averaged over the last ``window`` evaluations, improved by less
        than ``delta_1`` (relative) on the average over the ``window`` before, and
    (b) the training accuracy, averaged the same way, rose by less than ``delta_2``
        (absolute).

    Why the training accuracy as the second signal (rather than the gradient norm): it is
    what "the cheap model has learnt what it can" means, it is logged by every training
    loop at no cost, and it lives in [0, 1], so an absolute ``delta_2`` means the same on
    every task; the gradient norm under AdamW with clipping is noisy and often *rises* at a
    plateau, so a plateau of it is not a sign of convergence. The loss alone can plateau on
    a slow tail while the accuracy still climbs (or the reverse); requiring both avoids
    switching on either one's noise.

    ``criterion = "oracle"`` is the earlier rule, kept only to compare against: (a) and,
    instead of (b), the accuracy on the *evaluation* split ``split`` within ``delta_2`` of
    its Bayes ceiling. It reads held-out data and a ceiling no real training has, so it is
    off by default and never used by the presets' SHIFT runs.

    Either way the switch fires at ``at_step`` instead when that is > 0, and at the latest
    at the hard cap ``max_fraction`` of the training budget.
    """

    enabled: bool = False  # train with SHIFT (starts at loops=1 whatever model.loops says)
    loops_after: int = 3  # loops after the switch
    at_step: int = 0  # > 0: switch at exactly this step, no criterion
    criterion: str = "training"  # "training" (signals of training only) or "oracle" (see above)
    window: int = 5  # W: evaluations in the smoothing window and the improvement horizon
    delta_1: float = 0.01  # plateau: relative improvement of the smoothed training loss below this
    delta_2: float = 0.01  # training: smoothed training-accuracy rise below this (absolute);
    #                        oracle: eval accuracy on `split` within this of its ceiling
    split: str = "simple"  # oracle only: the evaluation split of its condition (b)
    patience: int = 3  # evaluations in a row both conditions must hold
    max_fraction: float = 0.5  # hard cap: switch by this fraction of the training steps
    keep_optimizer: bool = True  # keep AdamW moments across the switch (False: reset them)

    def __post_init__(self):
        _check_finite(self, "shift")
        _check(2 <= self.loops_after <= LOOPS_MAX, f"shift.loops_after must be in 2..{LOOPS_MAX}")
        _check(0 <= self.at_step <= COUNT_MAX, f"shift.at_step must be in 0..{COUNT_MAX}")
        _check(self.criterion in CRITERIA, f"shift.criterion must be one of {CRITERIA}")
        _check(1 <= min(self.window, self.patience) and max(self.window, self.patience)
               <= COUNT_MAX, f"shift.window/patience must be in 1..{COUNT_MAX}")
        _check(self.delta_1 >= 0 and self.delta_2 >= 0, "shift.delta_1/delta_2 must be >= 0")
        _check(0 < self.max_fraction <= 1, "shift.max_fraction must be in (0, 1]")


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run."""

    name: str = "run"
    task: TaskConfig = field(default_factory=lambda: task_config_class("markov")())
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)

    def __post_init__(self):
        _check(self.model.loops <= LOOPS_MAX, f"model.loops must be <= {LOOPS_MAX}")

    @property
    def arch(self) -> str:
        """The kind of run, one of :data:`landscape.train.archs.ALL` (see :func:`archs.of`)."""
        return archs.of(self.model, self.shift.enabled)

    def to_dict(self) -> dict:
        """A plain, TOML/JSON-ready dict that :func:`recipe_from_dict` maps back."""
        return dataclasses.asdict(self)

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate used for optimiser step ``step`` (0-based) of ``total``."""
        tc = self.train
        if step < tc.warmup_steps:
            return tc.lr * (step + 1) / tc.warmup_steps
        if tc.schedule == "constant":
            return tc.lr
        span = max(1, total - tc.warmup_steps - 1)
        progress = min(1.0, (step - tc.warmup_steps) / span)
        r = tc.final_lr_ratio
        return tc.lr * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress)))

    def to_json(self) -> str:
        """The recipe as JSON (stored in every run file)."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LandscapeError(message)


def _check_finite(config: Any, table: str) -> None:
    """Refuse NaN and infinities in the float fields of the dataclass ``config``."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise LandscapeError(f"{table}.{f.name} must be a finite number, got {value!r}")


def check_device(text: str, what: str = "--device", *, available: bool = False) -> str:
    """``text`` as a device name (``cpu``, ``cuda`` or ``cuda:N``), checked.

    Args:
        text: the device as given.
        what: the option or key named in the message.
        available: also require the device to exist here (a recipe stored in a run file
            names the device it was trained on, which need not exist where it is read).

    Raises:
        LandscapeError: not a device name of :data:`DEVICES`, or (``available``) no such
            device on this machine.
    """
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in DEVICES:
        raise LandscapeError(f"{what} {text!r}: use cpu, cuda or cuda:N")
    if available and dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise LandscapeError(f"{what} {text}: no CUDA device is available")
        if (dev.index or 0) >= count:
            raise LandscapeError(f"{what} {text}: there are {count} CUDA device(s) "
                                 f"(cuda:0..cuda:{count - 1})")
    return str(dev)


# --- building dataclasses from dicts, strictly ------------------------------------------


def build(cls: type, data: dict, where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise LandscapeError(f"{where} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise LandscapeError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise LandscapeError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None and len(args) != len(value):
            raise LandscapeError(f"{where} must have {len(args)} entries, got {len(value)}")
        return tuple(
            _coerce(v, item or args[i], f"{where}[{i}]") for i, v in enumerate(value)
        )
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _coerce(value, arg, where)
            except LandscapeError:
                continue
        raise LandscapeError(f"{where}: {value!r} has the wrong type")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) <= INT_MAX else math.inf
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise LandscapeError(f"{where} must be {hint.__name__}, got {value!r}")
    if hint is float and not math.isfinite(value):
        raise LandscapeError(f"{where} must be a finite number, got {value!r}")
    if hint is int and not -INT_MAX - 1 <= value <= INT_MAX:
        raise LandscapeError(f"{where}={value} is out of range (a 64-bit integer)")
    return value


def recipe_from_dict(data: dict, name: str = "run") -> Recipe:
    """A validated :class:`Recipe` from a plain dict (the tables of a recipe file)."""
    data = dict(data)
    data.pop("extends", None)
    data.pop("presets", None)
    known = {"name", "task", "model", "train", "shift"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LandscapeError(
            f"recipe: unknown table or key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    task = _expand_language(dict(data.get("task", {})))
    task_cls = task_config_class(task.get("name", "markov"))
    return Recipe(
        name=_coerce(data.get("name", name), str, "name"),
        task=build(task_cls, task, "task"),
        model=build(ModelConfig, data.get("model", {}), "model"),
        train=build(TrainConfig, data.get("train", {}), "train"),
        shift=build(ShiftConfig, data.get("shift", {}), "shift"),
    )


def _expand_language(task: dict) -> dict:
    """``[task] language = "fixed1"``: a named Markov language, explicit keys overriding it."""
    if "language" not in task:
        return task
    from landscape.train.tasks.markov import LANGUAGES

    name = task.pop("language")
    if task.get("name", "markov") != "markov" or name not in LANGUAGES:
        raise LandscapeError(f"task.language={name!r}: a Markov language is one of "
                             f"{', '.join(LANGUAGES)}")
    return {**LANGUAGES[name], **task}


def merge(base: dict, over: dict) -> dict:
    """Deep-merge ``over`` into a copy of ``base`` (tables merge, values replace)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
"""The recipes shipped with the package (the repository's ``models/`` is a copy of them)."""


def shipped_recipes() -> list[str]:
    """Names of the shipped recipes, e.g. ``looped_attn`` or ``controls/fixed1``.

    >>> "looped_attn" in shipped_recipes() and "controls/fixed1" in shipped_recipes()
    True
    """
    return sorted(p.relative_to(RECIPE_DIR).with_suffix("").as_posix()
                  for p in RECIPE_DIR.rglob("*.toml"))


def find_recipe(recipe: str | Path) -> Path:
    """The recipe file ``recipe`` names: a path to a file, or a shipped recipe's name.

    A path that exists wins; otherwise a relative name (``looped_attn``,
    ``looped_attn.toml``, ``controls/fixed1``) is looked up among the shipped recipes.

    >>> find_recipe("looped_attn").name
    'looped_attn.toml'

    Raises:
        LandscapeError: neither a file nor a shipped recipe.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPE_DIR / (path if path.suffix == ".toml" else Path(f"{path}.toml"))
    if not path.is_absolute() and ".." not in path.parts and shipped.is_file():
        return shipped
    raise LandscapeError(f"recipe {recipe} does not exist and is not a shipped recipe "
                         f"(shipped: {', '.join(shipped_recipes())})")


def read_recipe_tables(path: str | Path, _seen: tuple = ()) -> dict:
    """The tables of a recipe file with its ``extends`` chain resolved (presets kept)."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"recipe {path} does not exist")
    if path.resolve() in _seen:
        raise LandscapeError(f"recipe {path}: 'extends' forms a cycle")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise LandscapeError(f"recipe {path} is not valid TOML: {e}") from None
    data.setdefault("name", path.stem)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = read_recipe_tables(path.parent / parent, _seen + (path.resolve(),))
    base.pop("name", None)
    return merge(base, data)


def parse_override(text: str) -> dict:
    """``"train.lr=3e-4"`` -> ``{"train": {"lr": 0.0003}}`` (the value is read as TOML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise LandscapeError(f"override {text!r} must look like table.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: take it as a string
    out: dict = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def load_recipe(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: list[dict] | tuple = (),
) -> Recipe:
    """Load a recipe file (or the defaults), apply a preset and overrides, validate.

    Args:
        path: a TOML recipe file, or the name of a shipped one (see :func:`find_recipe`);
            ``None`` starts from the defaults (hybrid Markov, Single-Attn).
        preset: name of a ``[presets.NAME]`` table in the recipe to apply.
        overrides: dicts deep-merged last (see :func:`parse_override`).

    >>> load_recipe("looped_attn", preset="quick").train.epochs
    60
    """
    data = read_recipe_tables(find_recipe(path)) if path is not None else {}
    presets = data.pop("presets", {})
    if preset is not None:
        if preset not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise LandscapeError(f"recipe has no preset {preset!r} (presets: {known})")
        data = merge(data, presets[preset])
    for over in overrides:
        data = merge(data, over)
    return recipe_from_dict(data, name=data.get("name", "run"))


def with_arch(recipe: Recipe, arch: str, name: str | None = None) -> Recipe:
    """``recipe`` trained as ``arch`` (see :func:`landscape.train.archs.overrides`).

    Args:
        recipe: any recipe.
        arch: one of :data:`landscape.train.archs.ARCHS`.
        name: the new recipe's name (default: ``recipe``'s).
    """
    data = recipe.to_dict()
    data = merge(data, archs.overrides(arch, data))
    if name is not None:
        data["name"] = name
    return recipe_from_dict(data)


def recipe_from_json(text: str) -> Recipe:
    """Inverse of :meth:`Recipe.to_json`."""
    return recipe_from_dict(json.loads(text))


def stored_recipe(path: Path, attrs: dict) -> Recipe:
    """The recipe a run file names (``attrs``: its decoded attributes), checked.

    Raises:
        LandscapeError: ``RUN.h5 is damaged: recipe: ...`` where it is no valid recipe.
    """
    try:
        return recipe_from_dict(attrs["recipe"])
    except (LandscapeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise damaged(path, f"recipe: {e}") from None
