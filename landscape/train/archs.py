"""The kinds of run, named once: Single-Attn, Looped-Attn and SHIFT, and the controls.

The controls separate recursion from depth and from the attention kind: the untied model
(several distinct blocks applied once: Looped-Attn's compute without shared weights) and
Single-/Looped-Attn with linear attention (the model of the paper's theory).

Every module that names an architecture uses these constants (``Recipe.arch`` returns
one, runs are grouped by them, figures colour by them), and :func:`overrides` is the one
place that says which recipe keys turn a recipe into each of them (``landscape train
--model``, and the algorithmic jobs of ``landscape reproduce``).

>>> LABELS[LOOPED]
'Looped-Attn'
>>> overrides(SHIFT, {"model": {"loops": 1}})
{'model': {'loops': 1}, 'shift': {'enabled': True, 'loops_after': 3}}
"""

from __future__ import annotations

from landscape.errors import LandscapeError

SINGLE = "single"  # one attention layer applied once (model.loops = 1)
LOOPED = "looped"  # the same layer applied model.loops > 1 times, shared weights
SHIFT = "shift"  # Single-Attn until a switch, Looped-Attn after (shift.enabled)
ARCHS = (SINGLE, LOOPED, SHIFT)
UNTIED = "untied"  # model.layers > 1 distinct blocks applied once (depth, no recursion)
LINEAR_SINGLE = "linear_single"  # Single-Attn with linear attention
LINEAR_LOOPED = "linear_looped"  # Looped-Attn with linear attention
CONTROLS = (UNTIED, LINEAR_SINGLE, LINEAR_LOOPED)
ALL = ARCHS + CONTROLS
LABELS = {SINGLE: "Single-Attn", LOOPED: "Looped-Attn", SHIFT: "SHIFT",
          UNTIED: "untied layers", LINEAR_SINGLE: "Single-Attn (linear)",
          LINEAR_LOOPED: "Looped-Attn (linear)"}
RECIPES = {SINGLE: "single_attn", LOOPED: "looped_attn", SHIFT: "shift"}
"""The shipped Markov recipe of each architecture."""


def overrides(arch: str, recipe: dict) -> dict:
    """Recipe overrides that train ``recipe`` (a recipe as a dict) as ``arch``.

    Looped-Attn keeps the recipe's loops if it loops already, else takes SHIFT's
    ``loops_after`` (default 3); SHIFT switches to that same count. A recipe whose passes
    follow the input size (``model.loop_rule = "size"``) stays so as Looped-Attn; Single-Attn
    and the untied model run a fixed count. The untied model has Looped-Attn's depth: its
    loops, or ``T(train_max_len)`` passes under the size rule, as distinct blocks.

    Raises:
        LandscapeError: ``arch`` is not one of :data:`ALL`.
    """
    if arch not in ALL:
        raise LandscapeError(f"unknown architecture {arch!r} (architectures: "
                             f"{', '.join(ALL)})")
    model = recipe.get("model", {})
    loops = model.get("loops", 1)
    looped = loops if loops > 1 else recipe.get("shift", {}).get("loops_after", 3)
    single = {"loops": 1}
    if model.get("loop_rule", "fixed") != "fixed":  # keys only where they change something
        single["loop_rule"] = "fixed"
    if model.get("layers", 1) != 1:
        single["layers"] = 1
    off = {"enabled": False}
    return {
        SINGLE: {"model": single, "shift": off},
        LOOPED: {"model": {"loops": looped, **({"layers": 1} if "layers" in single else {})},
                 "shift": off},
        SHIFT: {"model": single, "shift": {"enabled": True, "loops_after": looped}},
        UNTIED: {"model": {"loops": 1, "loop_rule": "fixed", "layers": _depth(recipe, looped)},
                 "shift": off},
        LINEAR_SINGLE: {"model": {**single, "attention": "linear"}, "shift": off},
        LINEAR_LOOPED: {"model": {"loops": looped, "attention": "linear"}, "shift": off},
    }[arch]


def _depth(recipe: dict, looped: int) -> int:
    """Looped-Attn's passes at the longest training input (size rule) or its loops.

    An untied recipe already has its depth: its ``layers``.
    """
    model = recipe.get("model", {})
    if model.get("layers", 1) > 1:
        return model["layers"]
    if model.get("loop_rule", "fixed") == "size":
        n = recipe.get("task", {}).get("train_max_len", 8)
        return model.get("loop_scale", 1) * n + model.get("loop_offset", 0)
    return looped


def of(model, shift_enabled: bool) -> str:
    """The kind of a run from its model config and whether SHIFT is on (``Recipe.arch``)."""
    if shift_enabled:
        return SHIFT
    if model.layers > 1:
        return UNTIED
    looped = model.loops > 1 or model.loop_rule == "size"
    if model.attention == "linear":
        return LINEAR_LOOPED if looped else LINEAR_SINGLE
    return LOOPED if looped else SINGLE
