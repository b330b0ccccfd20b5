"""The paper's claims, each judged by a rule fixed here (never tuned to make it pass).

Each ``judge_*`` function reads runs (through :mod:`landscape.series`) and returns a
:class:`Claim`: what was measured, its value (with the spread over seeds where there are
seeds), the rule that decides, and the verdict ``holds``, ``does not hold`` or
``inconclusive``. Missing data gives ``inconclusive`` with the reason, never a pass.

Thresholds (all module constants, chosen before any run was looked at):

* a *gap* between two accuracies counts when it exceeds ``GAP`` = 2 points on every seed;
* a model *stalls* when its accuracy rises by less than ``STALL`` = 1 point over the
  second half of training; it *masters* a split within ``MASTER`` = 2 points of its
  Bayes ceiling;
* SHIFT is *comparable* to Looped-Attn within ``COMPARABLE`` = 1 point (Markov) or
  ``COMPARABLE_ALGO`` = 2 points (algorithmic tasks);
* early W_Q/W_K gradients of Single and Looped are *aligned* above a cosine of
  ``QK_ALIGNED`` (reported beside claim 4, not a verdict);
* length generalization differs when the mean extrapolation accuracy differs by more than
  ``LENGTH_GAP`` = 5 points.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from landscape import series
from landscape.archs import LOOPED, SHIFT, SINGLE
from landscape.errors import LandscapeError
from landscape.phases import Phases
from landscape.run import Run
from landscape.series import Grouped, markov_runs
from landscape.simulator import compare

GAP = 0.02
STALL = 0.01
MASTER = 0.02
COMPARABLE = 0.01
COMPARABLE_ALGO = 0.02
LENGTH_GAP = 0.05
QK_ALIGNED = 0.5  # cosine above which the W_Q/W_K gradients of both models "align"

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass(frozen=True)
class Claim:
    """One claim of the paper as measured here."""

    id: str  # e.g. "1"
    title: str  # the claim in a few words
    measured: str  # the quantity
    value: str  # its value(s), with seeds' spread
    rule: str  # what decides
    verdict: str  # holds | does not hold | inconclusive
    details: dict  # numbers behind the value (JSON-serialisable)


def _spread(xs, unit: str = "seeds") -> str:
    xs = np.asarray(xs, dtype=float)
    if xs.size == 1:
        return f"{xs[0]:.3f}"
    return f"{xs.mean():.3f} (min {xs.min():.3f}, max {xs.max():.3f}, {xs.size} {unit})"


def _missing(cid: str, title: str, measured: str, rule: str, why: str) -> Claim:
    return Claim(cid, title, measured, "not measured", rule, INCONCLUSIVE, {"missing": why})


def _second_half_rise(run: Run, key: str) -> float:
    m = run.metrics
    half = np.searchsorted(m["epoch"], m["epoch"][-1] / 2)
    return float(np.max(m[key][half:]) - m[key][half])


# --- claim 1 ----------------------------------------------------------------------------


def judge_sample_level(groups: Grouped) -> Claim:
    """Claim 1: Single-Attn stalls on complex samples; Looped-Attn keeps improving."""
    title = "Sample level: Single stalls on complex samples, Looped keeps learning them"
    rule = (f"holds if both master 'simple' (within {MASTER:.0%} of the Bayes ceiling), "
            f"Single's complex accuracy rises < {STALL:.0%} over the second half of "
            f"training, and Looped ends > {GAP:.0%} above Single on complex on every seed; "
            "does not hold if Looped ends at or below Single on complex on any seed")
    measured = "final complex accuracy, Looped - Single (Bayes ceiling beside)"
    runs = markov_runs(groups, (SINGLE, LOOPED))
    if runs is None:
        return _missing("1", title, measured, rule, "needs Markov Single and Looped runs")
    try:
        pairs = _paired(runs[SINGLE], runs[LOOPED])
        single = [series.final(si, "complex.acc") for si, _ in pairs]
        looped = [series.final(lo, "complex.acc") for _, lo in pairs]
        master = all(series.final(r, "simple.acc") >= r.ceilings["simple"]["acc"] - MASTER
                     for pair in pairs for r in pair)
    except LandscapeError as e:
        return _missing("1", title, measured, rule, str(e))
    gaps = [lo - si for si, lo in zip(single, looped)]
    stall = [_second_half_rise(si, "complex.acc") for si, _ in pairs]
    ceiling = pairs[0][0].ceilings["complex"]["acc"]
    details = {"gap": gaps, "single_second_half_rise": stall, "both_master_simple": master,
               "single_complex": single, "looped_complex": looped,
               "complex_ceiling": ceiling}
    if min(gaps) <= 0:
        verdict = FAILS
    elif master and max(stall) < STALL and min(gaps) > GAP:
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    value = (f"Single {_spread(details['single_complex'])}, Looped "
             f"{_spread(details['looped_complex'])}, gap {_spread(gaps)}; Bayes ceiling "
             f"{ceiling:.3f}; Single's second-half rise {_spread(stall)}")
    return Claim("1", title, measured, value, rule, verdict, details)


def _paired(single: list[Run], looped: list[Run]) -> list[tuple[Run, Run]]:
    by_seed = {r.recipe.train.seed: r for r in looped}
    pairs = [(s, by_seed[s.recipe.train.seed]) for s in single if s.recipe.train.seed in by_seed]
    if not pairs:
        raise LandscapeError("no Single and Looped runs share a seed")
    return pairs


# --- claim 2 ----------------------------------------------------------------------------


def judge_hessian_phases(groups: Grouped) -> Claim:
    """Claim 2: Looped-Attn's spectrum goes through Collapse, Diversification, Stabilization."""
    title = "Hessian level: Looped's spectrum collapses, diversifies, stabilizes; Single's not"
    rule = ("phases of the matrix-entropy series by landscape.phases.detect_phases (fixed "
            "thresholds); holds if Looped shows all three phases and Single does not; does "
            "not hold if Looped does not; inconclusive if both do")
    measured = "three-phase verdict of detect_phases on the spectra over training"
    runs = markov_runs(groups, (SINGLE, LOOPED))
    if runs is None:
        return _missing("2", title, measured, rule, "needs Markov Single and Looped runs")
    try:
        ent = {a: series.entropy_series(rs[0]) for a, rs in runs.items()}
        ph: dict[str, Phases] = {a: series.phases_of(rs[0], ent[a]) for a, rs in runs.items()}
        src = ent[LOOPED]["source"]
    except LandscapeError as e:
        return _missing("2", title, measured, rule, str(e))
    s, lo = ph[SINGLE].three_phases, ph[LOOPED].three_phases
    verdict = HOLDS if lo and not s else FAILS if not lo else INCONCLUSIVE
    details = {a: {"three_phases": p.three_phases, "labels": list(p.labels),
                   "drop": p.drop, "rise": p.rise, "epochs": p.epochs.tolist()}
               for a, p in ph.items()}
    value = (f"Looped: {'three phases' if lo else 'not three phases'} (drop {ph[LOOPED].drop:.2f}"
             f", rise {ph[LOOPED].rise:.2f}); Single: "
             f"{'three phases' if s else 'not three phases'}; spectra from {src}")
    return Claim("2", title, measured, value, rule, verdict, details)


# --- claim 3 ----------------------------------------------------------------------------


def judge_landscape(groups: Grouped) -> Claim:
    """Claim 3: Single induces a River-U valley, Looped a River-V valley (+ Assumption 1)."""
    title = "Landscape: Single's valley is U-shaped, Looped's V-shaped (Assumption 1 beside)"
    rule = ("at the last probed checkpoint, the U/V label of landscape.valley.uv_label "
            "(kappa(H_valley) <= 2: U, >= 10: V); holds if Single is U and Looped is V; does "
            "not hold if both get the same label; Assumption 1 (more and smaller small valley "
            "eigenvalues for Looped) is reported beside, as the counts and 1/lambda sums in "
            "(eps, tau]")
    measured = ("kappa(H_valley), its U/V label, and small-eigenvalue count/force, last "
                "checkpoint; beside, valley width over its parabola prediction")
    runs = markov_runs(groups, (SINGLE, LOOPED))
    if runs is None:
        return _missing("3", title, measured, rule, "needs Markov Single and Looped runs")
    try:
        vs = {a: series.valley_series(rs[0]) for a, rs in runs.items()}
    except LandscapeError as e:
        return _missing("3", title, measured, rule, str(e))
    last = {a: {k: v[k][-1].item()
                for k in ("epoch", "kappa", "small_count", "small_force", "label")}
            for a, v in vs.items()}
    s, lo = last[SINGLE]["label"], last[LOOPED]["label"]
    verdict = HOLDS if (s == "U" and lo == "V") else FAILS if s == lo else INCONCLUSIVE
    a1 = (last[LOOPED]["small_count"] > last[SINGLE]["small_count"]
          and last[LOOPED]["small_force"] > last[SINGLE]["small_force"])
    value = "; ".join(f"{a}: kappa {d['kappa']:.3g} ({d['label']}), small count "
                      f"{d['small_count']:.0f}, force {d['small_force']:.3g}"
                      for a, d in last.items())
    value += f"; Assumption 1 {'holds' if a1 else 'does not hold'} by these numbers"
    ratios = _width_ratios(runs)
    if ratios:
        value += ("; beside, valley width / its parabola prediction along the top valley "
                  "direction (1: a parabola): " + ", ".join(f"{a} {r:.2f}"
                                                          for a, r in ratios.items()))
    return Claim("3", title, measured, value, rule, verdict,
                 {"last": last, "assumption_1": a1, "width_ratio": ratios})


def _width_ratios(runs: dict[str, list[Run]]) -> dict[str, float]:
    """Measured width over the quadratic prediction, top valley direction, last checkpoint."""
    out = {}
    for arch, rs in runs.items():
        try:
            w = series.width_series(rs[0])
        except LandscapeError:
            continue
        out[arch] = float(w["width"][-1][0] / w["quadratic"][-1][0])
    return out


# --- claim 4 ----------------------------------------------------------------------------


def judge_theory(groups: Grouped) -> Claim:
    """Claim 4: on quadratics, V moves further along the river; upstream Q/K gradients align."""
    title = "Theory: valley hopping moves a V-valley further along the river"
    rule = ("simulator (landscape.simulator.compare, defaults): holds if V's river progress "
            "and final loss beat U's and the no-feedback closed form matches the simulation "
            "(relative error < 1e-8); the early W_Q/W_K gradient alignment of Single and Looped "
            f"(cosine > {QK_ALIGNED}) at the first checkpoints after step 0 is reported beside")
    measured = "river progress and final loss, U vs V; closed-form error; Q/K gradient cosine"
    cmp = compare(feedback=False)
    closed, sim = cmp.v.closed_form, cmp.v.descent.push[:, 0]
    err = float(np.max(np.abs(sim - closed)) / max(np.max(np.abs(closed)), 1e-300))
    fb = compare()
    ok = fb.v_further and fb.v_lower and err < 1e-8
    details = {"u_progress": fb.u.progress, "v_progress": fb.v.progress,
               "u_loss": fb.u.final_loss, "v_loss": fb.v.final_loss,
               "closed_form_rel_error": err}
    qk = _qk_alignment(groups)
    details["qk_cosine"] = qk
    value = (f"progress V {fb.v.progress:.3f} vs U {fb.u.progress:.3f}; final loss V "
             f"{fb.v.final_loss:.3g} vs U {fb.u.final_loss:.3g}; closed form error {err:.1e}")
    if qk:
        value += f"; early Q/K gradient cosine Single vs Looped {_spread(qk, 'checkpoints')}"
    return Claim("4", title, measured, value, rule, HOLDS if ok else FAILS, details)


def _qk_alignment(groups: Grouped) -> list[float]:
    """The stored Q/K gradient cosines of the (first, probed) Single-Attn run, if any."""
    runs = markov_runs(groups, (SINGLE,))
    if runs is None:
        return []
    qk = series.part(runs[SINGLE][0], "qk_alignment", required=False)
    return [] if qk is None else [float(c) for c in qk.cosine]


# --- claim 5 ----------------------------------------------------------------------------


def judge_shift(groups: Grouped) -> Claim:
    """Claim 5: SHIFT reaches Looped-Attn's accuracy in less wall-clock time."""
    title = "SHIFT: Looped's accuracy at less wall-clock time"
    rule = (f"Markov: holds if SHIFT's final complex accuracy is within {COMPARABLE:.0%} of "
            f"Looped's (or above) and its training wall-clock is lower, on every seed; "
            f"algorithmic tasks: the same with in-distribution sequence accuracy within "
            f"{COMPARABLE_ALGO:.0%}; does not hold if SHIFT is slower or falls short on every "
            "seed and task")
    measured = "final accuracy and training seconds, SHIFT vs Looped"
    try:
        rows = _shift_rows(groups)
    except LandscapeError as e:
        return _missing("5", title, measured, rule, str(e))
    if not rows:
        return _missing("5", title, measured, rule, "needs SHIFT and Looped runs with a seed "
                        "in common")
    good = [r["acc_shift"] >= r["acc_looped"] - r["tol"] and r["wall_shift"] < r["wall_looped"]
            for r in rows]
    verdict = HOLDS if all(good) else FAILS if not any(good) else INCONCLUSIVE
    value = "; ".join(f"{r['task']} seed {r['seed']}: acc {r['acc_shift']:.3f} vs "
                      f"{r['acc_looped']:.3f}, {r['wall_shift']:.1f} s vs {r['wall_looped']:.1f} s"
                      for r in rows)
    return Claim("5", title, measured, value, rule, verdict, {"rows": rows})


def _shift_rows(groups: Grouped) -> list[dict]:
    """SHIFT against Looped, per task and shared seed: final accuracy and training seconds."""
    rows = []
    for task, g in groups.items():
        if SHIFT not in g or LOOPED not in g:
            continue
        key, tol = ("complex.acc", COMPARABLE) if task == "markov" else ("iid.seq_acc",
                                                                        COMPARABLE_ALGO)
        for sh in g[SHIFT]:
            lo = next((r for r in g[LOOPED] if r.recipe.train.seed == sh.recipe.train.seed),
                      None)
            if lo is None:
                continue
            rows.append({"task": task, "seed": sh.recipe.train.seed,
                         "acc_shift": series.final(sh, key), "acc_looped": series.final(lo, key),
                         "wall_shift": series.final(sh, "wall"),
                         "wall_looped": series.final(lo, "wall"), "tol": tol,
                         "switch_step": sh.shift_step})
    return rows


# --- claim 6 ----------------------------------------------------------------------------


def judge_length(groups: Grouped) -> Claim:
    """Claim 6: Looped-Attn extrapolates to longer sequences better than Single-Attn."""
    title = "Length generalization: Looped extrapolates better than Single"
    rule = (f"mean sequence accuracy over test lengths beyond the training range; holds if "
            f"Looped exceeds Single by > {LENGTH_GAP:.0%} on most tasks, does not hold if "
            f"Single matches or beats it (within {LENGTH_GAP:.0%}) on most tasks")
    measured = "extrapolation accuracy (lengths > train_max_len), Looped - Single, per task"
    rows = []
    for task, g in groups.items():
        if task == "markov" or SINGLE not in g or LOOPED not in g:
            continue
        t = g[SINGLE][0].recipe.task
        acc = {}
        for arch in (SINGLE, LOOPED):
            s = series.length_series(g[arch][0])
            beyond = s["length"] > t.train_max_len
            acc[arch] = float(s["acc"][beyond].mean()) if beyond.any() else float("nan")
        rows.append({"task": task, **acc, "diff": acc[LOOPED] - acc[SINGLE]})
    if not rows:
        return _missing("6", title, measured, rule, "needs algorithmic Single and Looped runs")
    better = sum(r["diff"] > LENGTH_GAP for r in rows)
    verdict = (HOLDS if better > len(rows) / 2 else
               FAILS if sum(r["diff"] <= LENGTH_GAP for r in rows) > len(rows) / 2
               else INCONCLUSIVE)
    value = "; ".join(f"{r['task']}: Looped {r[LOOPED]:.3f} vs Single {r[SINGLE]:.3f}"
                      for r in rows)
    return Claim("6", title, measured, value, rule, verdict, {"rows": rows})


JUDGES: tuple[Callable[[Grouped], Claim], ...] = (
    judge_sample_level, judge_hessian_phases, judge_landscape, judge_theory, judge_shift,
    judge_length)


def judge_all(runs: list[Run]) -> list[Claim]:
    """Every claim, in the paper's order."""
    groups = series.group_runs(runs)
    return [judge(groups) for judge in JUDGES]


def to_json(claims: list[Claim]) -> str:
    """``claims.json``: every claim with its numbers."""
    return json.dumps([asdict(c) for c in claims], indent=2, default=_jsonable)


def _jsonable(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def to_markdown(claims: list[Claim]) -> str:
    """The claims table and, per claim, its measurement and rule."""
    lines = ["| # | claim | verdict | measured |", "|---|---|---|---|"]
    lines += [f"| {c.id} | {c.title} | **{c.verdict}** | {c.value} |" for c in claims]
    lines.append("")
    for c in claims:
        lines += [f"### Claim {c.id}: {c.title}", "", f"- Measured: {c.measured}",
                  f"- Value: {c.value}", f"- Rule: {c.rule}", f"- Verdict: **{c.verdict}**",
                  ""]
    return "\n".join(lines)
