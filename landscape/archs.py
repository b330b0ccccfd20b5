"""The three kinds of run, named once: Single-Attn, Looped-Attn and SHIFT.

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
LABELS = {SINGLE: "Single-Attn", LOOPED: "Looped-Attn", SHIFT: "SHIFT"}
RECIPES = {SINGLE: "single_attn", LOOPED: "looped_attn", SHIFT: "shift"}
"""The shipped Markov recipe of each architecture."""


def overrides(arch: str, recipe: dict) -> dict:
    """Recipe overrides that train ``recipe`` (a recipe as a dict) as ``arch``.

    Looped-Attn keeps the recipe's loops if it loops already, else takes SHIFT's
    ``loops_after`` (default 3); SHIFT switches to that same count.

    Raises:
        LandscapeError: ``arch`` is not one of :data:`ARCHS`.
    """
    if arch not in ARCHS:
        raise LandscapeError(f"unknown architecture {arch!r} (architectures: "
                             f"{', '.join(ARCHS)})")
    loops = recipe.get("model", {}).get("loops", 1)
    looped = loops if loops > 1 else recipe.get("shift", {}).get("loops_after", 3)
    return {
        SINGLE: {"model": {"loops": 1}, "shift": {"enabled": False}},
        LOOPED: {"model": {"loops": looped}, "shift": {"enabled": False}},
        SHIFT: {"model": {"loops": 1}, "shift": {"enabled": True, "loops_after": looped}},
    }[arch]
