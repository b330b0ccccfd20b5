"""Spectral phases of training: matrix entropy of a Hessian spectrum and a phase rule.

Pure numpy; arrays in, numbers and small frozen dataclasses out (claim 2; the definitions
are gathered in docs/paper.md).

**Matrix entropy.** For eigenvalues ``l_1..l_P`` let ``p_i = |l_i| / sum_j |l_j|``. The
matrix entropy is the Shannon entropy ``H = -sum_i p_i log p_i`` (natural log, nats;
``0 log 0 = 0``) and the effective rank is ``exp(H)``. ``H = log P`` when every
``|l_i|`` is equal, ``H = 0`` when one eigenvalue carries everything. Absolute values
because a Hessian away from a minimum has negative eigenvalues, whose magnitude is
curvature all the same. The paper names a "matrix entropy" without defining it; this is
ours (the von Neumann entropy of ``|H| / tr|H|``, as in Roy & Vetterli's effective rank).

**Power.** :func:`phase_power` estimates by simulation how often :func:`phase_rule` finds
three phases in a :func:`three_phase_curve` of a given size plus noise on a given checkpoint
schedule, so that "not found" can be told from "could not have been found".

**Phases.** :func:`phase_rule` cuts an entropy series into Collapse (the entropy falls),
Diversification (it rises again) and Stabilization (it stays put) by continuous
piecewise-linear fits with 1, 2 and 3 pieces chosen by an information criterion, with
thresholds relative to the noise (the spread across seeds and the estimator's standard
error), so that denser checkpoints resolve phases better, never worse; the figures shade
what it finds (:meth:`PhaseFit.as_phases`). :func:`spectral_stats` gives the
entropy and effective rank of the positive part and of ``|H|`` separately, and the share
of negative curvature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from landscape.errors import LandscapeError

COLLAPSE = "collapse"
DIVERSIFICATION = "diversification"
STABILIZATION = "stabilization"
UNASSIGNED = "unassigned"
PHASES = (COLLAPSE, DIVERSIFICATION, STABILIZATION)



# ------------------------------------------------------------------------------- entropy


def _finite_vector(x: object, name: str) -> np.ndarray:
    """A finite, non-empty float64 vector from ``x`` (flattened), or a LandscapeError."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise LandscapeError(f"{name} must be a non-empty array of finite numbers")
    return a


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of a probability vector, with ``0 log 0 = 0``."""
    nz = p[p > 0]
    return max(0.0, float(-np.sum(nz * np.log(nz))))  # never -0.0


def matrix_entropy(eigvals: object) -> float:
    """Shannon entropy of the normalised absolute spectrum, ``p_i = |l_i| / sum_j |l_j|``.

    Args:
        eigvals: ``[P]`` eigenvalues (any sign; at least one non-zero).

    Returns:
        ``-sum_i p_i log p_i`` in nats, in ``[0, log P]``.

    Raises:
        LandscapeError: empty, non-finite, or all-zero eigenvalues.

    Example:
        >>> round(matrix_entropy([1.0, -1.0, 1.0, 1.0]), 12) == round(float(np.log(4)), 12)
        True
        >>> matrix_entropy([0.0, 3.0, 0.0])
        0.0
    """
    a = np.abs(_finite_vector(eigvals, "eigvals"))
    total = a.sum()
    if not total > 0:
        raise LandscapeError("matrix_entropy: every eigenvalue is zero, the entropy is undefined")
    return _entropy(a / total)


def effective_rank(eigvals: object) -> float:
    """``exp(matrix_entropy(eigvals))``: between 1 (one direction) and P (all equal).

    Args:
        eigvals: ``[P]`` eigenvalues.

    Returns:
        The effective rank.
    """
    return float(np.exp(matrix_entropy(eigvals)))


def density_entropy(nodes: object, weights: object, dim: int) -> float:
    """Matrix entropy estimated from stochastic Lanczos quadrature (SLQ).

    The approximation. SLQ represents the spectrum of a ``dim x dim`` matrix by a
    quadrature measure: node ``t_rj`` of run ``r`` (of ``R``) stands for
    ``dim * w_rj / R`` eigenvalues, all equal to ``t_rj``. Put that discrete spectrum
    into :func:`matrix_entropy`: with ``m = (1/R) sum_rj w_rj |t_rj|`` (the estimate of
    ``tr|H| / dim``) and ``q_rj = w_rj |t_rj| / (R m)``::

        H ~= log(dim) + log(m) - sum_rj q_rj log|t_rj|

    Exact when the measure is exact (one run, ``dim`` steps, weights ``1/dim``, e.g. a
    Rademacher start on a diagonal matrix); otherwise an estimate that converges as the
    number of runs grows if the runs are complete (``dim`` Lanczos steps). With fewer
    steps the nodes are Ritz values, which resolve the spectrum's edges and outliers
    well and its bulk coarsely; the bulk's many equal eigenvalues then look like few,
    so the estimate errs low where the bulk carries much of ``sum |l|``. No Gaussian
    smoothing is involved: the smoothed density of the plots is for the eye only.

    Args:
        nodes: ``[R, m]`` (or ``[m]``) quadrature nodes.
        weights: same shape; each run's weights sum to 1.
        dim: the matrix dimension P (>= 1).

    Returns:
        The estimated entropy in nats.

    Raises:
        LandscapeError: shapes disagree, weights negative or not summing to 1 per run,
            ``dim < 1``, or every node is zero.
    """
    t = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if t.shape != w.shape or t.size == 0:
        raise LandscapeError(f"density_entropy: nodes {t.shape} and weights {w.shape} must "
                             "have the same non-empty shape [runs, steps]")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise LandscapeError("density_entropy: nodes and weights must be finite, weights >= 0")
    if not np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-6):
        raise LandscapeError("density_entropy: each run's weights must sum to 1")
    if int(dim) != dim or dim < 1:
        raise LandscapeError(f"density_entropy: dim must be a positive integer, got {dim}")
    mass = w * np.abs(t) / t.shape[0]  # [R, m], sums to m
    m = mass.sum()
    if not m > 0:
        raise LandscapeError("density_entropy: every node is zero, the entropy is undefined")
    q = mass[mass > 0] / m
    return float(np.log(dim) + np.log(m) - np.sum(q * np.log(np.abs(t)[mass > 0])))


# -------------------------------------------------------------------------------- phases


@dataclass(frozen=True)
class Phases:
    """Phases of an entropy series as the figures draw them (:meth:`PhaseFit.as_phases`).

    Attributes:
        epochs: ``[n]`` the checkpoints' epochs.
        entropy: ``[n]`` the series as given.
        smoothed: ``[n]`` the fitted curve of the chosen fit.
        labels: ``[n]`` one of ``"collapse"``, ``"diversification"``,
            ``"stabilization"`` or ``"unassigned"`` per checkpoint.
        collapse_end: the 3-piece fit's first breakpoint (NaN without one).
        stabilization_start: its second breakpoint (NaN without one).
        drop: the 3-piece fit's first slope (NaN without one).
        rise: its second slope (NaN without one).
        tail_len: number of checkpoints labelled Stabilization.
        scale: ``max |entropy|``.
        three_phases: :func:`phase_rule`'s verdict.
        params: the rule and the number of pieces chosen.
    """

    epochs: np.ndarray
    entropy: np.ndarray
    smoothed: np.ndarray
    labels: tuple[str, ...]
    collapse_end: float
    stabilization_start: float
    drop: float
    rise: float
    tail_len: int
    scale: float
    three_phases: bool
    params: dict

    def label_at(self, epoch: float) -> str:
        """The label of the checkpoint nearest to ``epoch``."""
        return self.labels[int(np.argmin(np.abs(self.epochs - epoch)))]

    def boundaries(self) -> dict[str, float]:
        """Epochs where each phase begins (NaN for a phase that did not pass)."""
        out = {}
        for name in PHASES:
            idx = [i for i, lab in enumerate(self.labels) if lab == name]
            out[name] = float(self.epochs[idx[0]]) if idx else float("nan")
        return out


def _check_series(epochs: object, entropy_series: object) -> tuple[np.ndarray, np.ndarray]:
    """Finite, same-length, strictly increasing epochs with at least 3 checkpoints."""
    e = _finite_vector(epochs, "epochs")
    h = _finite_vector(entropy_series, "entropy_series")
    if e.shape != h.shape or e.size < 3:
        raise LandscapeError(f"phases: need >= 3 checkpoints with one entropy each, "
                             f"got {e.size} epochs and {h.size} values")
    if not np.all(np.diff(e) > 0):
        raise LandscapeError("phases: epochs must be strictly increasing")
    return e, h


# ------------------------------------------------------------------ spectral statistics


def spectral_stats(eigvals: object, eps: float) -> dict[str, float]:
    """Entropy and effective rank of the positive part and of ``|H|``; negative share.

    Args:
        eigvals: ``[P]`` eigenvalues of an exact spectrum.
        eps: the round-off floor (absolute, >= 0): an eigenvalue counts as negative
            curvature only below ``-eps``, and the positive part is the eigenvalues
            above ``eps``.

    Returns:
        ``entropy_abs`` and ``erank_abs`` (of ``|l_i| / sum |l|``, :func:`matrix_entropy`),
        ``entropy_pos`` and ``erank_pos`` (of the eigenvalues above eps, normalised among
        themselves; NaN if there are none), ``negative_fraction`` (the share of
        eigenvalues below ``-eps``) and ``negative_mass`` (their share of ``sum |l|``).
    """
    lam = _finite_vector(eigvals, "eigvals")
    if not (eps >= 0 and np.isfinite(eps)):
        raise LandscapeError(f"eps must be finite and >= 0, got {eps}")
    pos = lam[lam > eps]
    neg = lam[lam < -eps]
    ent_abs = matrix_entropy(lam)
    ent_pos = _entropy(pos / pos.sum()) if pos.size else float("nan")
    total = float(np.abs(lam).sum())
    return {"entropy_abs": ent_abs, "erank_abs": float(np.exp(ent_abs)),
            "entropy_pos": ent_pos, "erank_pos": float(np.exp(ent_pos)),
            "negative_fraction": float(neg.size / lam.size),
            "negative_mass": float(np.abs(neg).sum() / total) if total > 0 else 0.0}


# ---------------------------------------------------------- phases by segmented fits

SIGNIFICANT = 2.0  # a slope counts when |slope| > SIGNIFICANT * its standard error
FLAT_SHARE = 0.25  # Stabilization: |last slope| < FLAT_SHARE * the rising slope, or n.s.
BIC_MARGIN = 6.0  # three pieces must beat fewer by this much BIC ("strong evidence")


@dataclass(frozen=True)
class SegmentFit:
    """A continuous piecewise-linear fit with fixed breakpoints.

    Attributes:
        segments: number of linear pieces (1, 2 or 3).
        breaks: ``[segments - 1]`` breakpoint epochs.
        slopes: ``[segments]`` slope of each piece.
        slope_se: ``[segments]`` their standard errors.
        fitted: ``[n]`` the fitted values.
        rss: residual sum of squares.
        bic: Bayesian information criterion (see :func:`phase_rule`).
    """

    segments: int
    breaks: np.ndarray
    slopes: np.ndarray
    slope_se: np.ndarray
    fitted: np.ndarray
    rss: float
    bic: float


def _design(t: np.ndarray, breaks: tuple) -> np.ndarray:
    return np.column_stack([np.ones_like(t), t] + [np.maximum(t - b, 0.0) for b in breaks])


def _best_hinge(t: np.ndarray, y: np.ndarray, trials: list[tuple]):
    """The least-squares hinge fit with the smallest residual over breakpoint trials.

    All trials are solved at once (batched normal equations on the centred and scaled
    time axis, then the winner refitted by ``lstsq``).
    """
    u = (t - t.mean()) / (np.ptp(t) or 1.0)
    tr = np.asarray(trials, dtype=np.float64).reshape(len(trials), -1)
    br_u = (tr - t.mean()) / (np.ptp(t) or 1.0)
    x = np.concatenate([np.broadcast_to(np.column_stack([np.ones_like(u), u]),
                                        (len(trials), u.size, 2)),
                        np.maximum(u[None, :, None] - br_u[:, None, :], 0.0)], axis=2)
    xtx = np.einsum("tni,tnj->tij", x, x) + 1e-12 * np.eye(x.shape[2])
    beta = np.linalg.solve(xtx, np.einsum("tni,n->ti", x, y)[..., None])[..., 0]
    rss = np.sum((y[None, :] - np.einsum("tni,ti->tn", x, beta)) ** 2, axis=1)
    best = tuple(trials[int(np.argmin(rss))])
    xb = _design(t, best)
    b, *_ = np.linalg.lstsq(xb, y, rcond=None)
    fitted = xb @ b
    return best, xb, b, float(np.sum((y - fitted) ** 2)), fitted


def _bic(rss: float, n: int, p: int, sigma: float | None, scale: float) -> float:
    if sigma is not None:
        return rss / sigma**2 + p * math.log(n)
    floor = (1e-12 * scale) ** 2 * n  # an exact fit must not give log(0)
    return n * math.log(max(rss, floor) / n) + p * math.log(n)


def _candidates(t: np.ndarray) -> np.ndarray:
    """Breakpoint candidates: interior checkpoints, and midpoints while n <= 24."""
    if t.size > 24:  # dense enough: checkpoints alone resolve the breaks
        return t[1:-1].copy()
    mids = (t[:-1] + t[1:]) / 2
    return np.unique(np.concatenate([t[1:-1], mids[1:-1]]))


def segment_fit(epochs: object, series: object, segments: int,
                sigma: float | None = None) -> SegmentFit:
    """The best continuous ``segments``-piece linear fit (breakpoints by exhaustive search).

    Breakpoints are searched over the interior checkpoints and (up to 24 checkpoints)
    the midpoints between them, except the first and last gaps (so the outer pieces hold
    at least two checkpoints); the middle piece of three must hold at least two.
    Parameters counted by the information criterion: 2 for the line, 2 per breakpoint
    (its position and the change of slope).

    Args:
        epochs: ``[n]`` strictly increasing epochs.
        series: ``[n]`` values.
        segments: 1, 2 or 3.
        sigma: the noise standard deviation of each value (known, e.g. from the spread
            across seeds and the estimator's standard error); None: estimated from the
            residuals.

    Returns:
        The fit with the smallest residual, see :class:`SegmentFit`.
    """
    t, y = _check_series(epochs, series)
    if segments not in (1, 2, 3):
        raise LandscapeError(f"segments must be 1, 2 or 3, got {segments}")
    if sigma is not None and not (sigma > 0 and np.isfinite(sigma)):
        raise LandscapeError(f"sigma must be finite and > 0, got {sigma}")
    n, p = t.size, 2 * segments
    if n <= p:
        raise LandscapeError(f"a {segments}-segment fit needs more than {p} checkpoints, "
                             f"got {n}")
    cand = _candidates(t)
    if segments == 1:
        trials = [()]
    elif segments == 2:
        trials = [(b,) for b in cand]
    else:
        # the middle piece must hold at least two checkpoints (else its slope is a jump)
        trials = [(b1, b2) for i, b1 in enumerate(cand) for b2 in cand[i + 1:]
                  if np.count_nonzero((t >= b1) & (t <= b2)) >= 2]
    br, x, beta, rss, fitted = _best_hinge(t, y, trials)
    s2 = sigma**2 if sigma is not None else rss / max(n - p, 1)
    cov = s2 * np.linalg.pinv(x.T @ x)
    comb = np.tril(np.ones((segments, segments)))  # slope j = beta_t + sum of changes < j
    a = np.zeros((segments, x.shape[1]))
    a[:, 1:] = comb
    slopes = a @ beta
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", a, cov, a), 0.0))
    scale = float(np.max(np.abs(y))) or 1.0
    return SegmentFit(segments=segments, breaks=np.asarray(br, dtype=np.float64),
                      slopes=slopes, slope_se=se, fitted=fitted, rss=rss,
                      bic=_bic(rss, n, p, sigma, scale))


@dataclass(frozen=True)
class PhaseFit:
    """The outcome of :func:`phase_rule` on one series.

    Attributes:
        fits: the 1-, 2- and 3-segment fits (those with enough checkpoints).
        chosen: number of segments of the fit with the smallest BIC.
        three_phases: the chosen fit has three segments whose slopes read Collapse
            (significantly negative), Diversification (significantly positive) and
            Stabilization (not significant, or below ``FLAT_SHARE`` of the rise).
        collapse_end: first breakpoint of the 3-segment fit (NaN if none).
        stabilization_start: second breakpoint (NaN if none).
        sigma: the noise level used (NaN when estimated from residuals).
    """

    fits: tuple[SegmentFit, ...]
    chosen: int
    three_phases: bool
    collapse_end: float
    stabilization_start: float
    sigma: float

    def as_phases(self, epochs: object, series: object) -> Phases:
        """The fit as :class:`Phases` for the figures (the same verdict as the claim).

        Labels follow the 3-piece fit's breakpoints when it reads three phases, else every
        checkpoint is unassigned; ``smoothed`` is the chosen fit's curve; ``drop`` and
        ``rise`` are the first two pieces' slopes (NaN without a 3-piece fit).
        """
        t, y = _check_series(epochs, series)
        chosen = next(f for f in self.fits if f.segments == self.chosen)
        three = next((f for f in self.fits if f.segments == 3), None)
        if self.three_phases:
            labels = tuple(COLLAPSE if e <= self.collapse_end else DIVERSIFICATION
                           if e < self.stabilization_start else STABILIZATION for e in t)
        else:
            labels = (UNASSIGNED,) * t.size
        nan = float("nan")
        return Phases(epochs=t, entropy=y, smoothed=chosen.fitted, labels=labels,
                      collapse_end=self.collapse_end,
                      stabilization_start=self.stabilization_start,
                      drop=float(three.slopes[0]) if three is not None else nan,
                      rise=float(three.slopes[1]) if three is not None else nan,
                      tail_len=sum(lab == STABILIZATION for lab in labels),
                      scale=float(np.max(np.abs(y))), three_phases=self.three_phases,
                      params={"rule": "phase_rule", "chosen_segments": self.chosen})

    def as_dict(self) -> dict:
        """JSON-friendly summary."""
        three = next((f for f in self.fits if f.segments == 3), None)
        return {"chosen_segments": self.chosen, "three_phases": self.three_phases,
                "bic": {str(f.segments): f.bic for f in self.fits},
                "slopes": three.slopes.tolist() if three else [],
                "slope_se": three.slope_se.tolist() if three else [],
                "collapse_end": self.collapse_end,
                "stabilization_start": self.stabilization_start, "sigma": self.sigma}


def phase_rule(epochs: object, series: object, sigma: float | None = None) -> PhaseFit:
    """Collapse / Diversification / Stabilization by segmented fits chosen by BIC.

    The rule (fixed before any run was looked at):

    1. Fit continuous piecewise-linear curves with 1, 2 and 3 pieces
       (:func:`segment_fit`).
    2. Choose the one with the smallest Bayesian information criterion: with a known
       noise level sigma, ``RSS / sigma^2 + p log n``; otherwise ``n log(RSS / n) +
       p log n``; three pieces only when they beat the best of fewer by ``BIC_MARGIN``
       (strong evidence on Kass and Raftery's scale). sigma is the caller's: the
       spread across seeds at each checkpoint combined with the estimator's own
       standard error. Every threshold is therefore
       relative to the noise, not to the series' level.
    3. Three phases when the 3-piece fit is chosen and its slopes are: the first
       negative and the second positive, each beyond ``SIGNIFICANT`` standard errors, and
       the third either within ``SIGNIFICANT`` standard errors of 0 or smaller than
       ``FLAT_SHARE`` of the second in magnitude.

    A monotone series, a flat one, or one falling then levelling off are explained as
    well by fewer pieces and do not pass; a dip, a rise and a plateau do, at 8 to 60
    checkpoints (tested on synthetic series both ways).

    Args:
        epochs: ``[n]`` strictly increasing epochs (n >= 3).
        series: ``[n]`` values (e.g. the matrix entropy).
        sigma: known noise level of each value, or None.

    Returns:
        The fits and the verdict, see :class:`PhaseFit`.
    """
    t, y = _check_series(epochs, series)
    fits = tuple(segment_fit(t, y, k, sigma) for k in (1, 2, 3) if t.size > 2 * k)
    three = next((f for f in fits if f.segments == 3), None)
    fewer = min((f.bic for f in fits if f.segments < 3), default=math.inf)
    best = min(fits, key=lambda f: f.bic)
    if best.segments == 3 and three is not None and three.bic > fewer - BIC_MARGIN:
        best = min((f for f in fits if f.segments < 3), key=lambda f: f.bic)
    ok = False
    if best.segments == 3 and three is not None:
        s, se = three.slopes, np.maximum(three.slope_se, 1e-300)
        ok = bool(s[0] < -SIGNIFICANT * se[0] and s[1] > SIGNIFICANT * se[1]
                  and (abs(s[2]) <= SIGNIFICANT * se[2] or abs(s[2]) < FLAT_SHARE * s[1]))
    nan = float("nan")
    return PhaseFit(fits=fits, chosen=best.segments, three_phases=ok,
                    collapse_end=float(three.breaks[0]) if three is not None else nan,
                    stabilization_start=float(three.breaks[1]) if three is not None else nan,
                    sigma=nan if sigma is None else float(sigma))


# ------------------------------------------------------------- the rule's power by simulation

POWER_TRIALS = 200  # simulated series per power estimate (binomial se <= 0.035)


def three_phase_curve(epochs: object, drop: float, rise: float, collapse_end: float,
                      stable_from: float) -> np.ndarray:
    """A noiseless Collapse / Diversification / Stabilization curve on given epochs.

    Continuous and piecewise linear, relative to its start: 0 at the first epoch, falling
    linearly by ``drop`` until ``collapse_end``, rising linearly by ``rise`` until
    ``stable_from``, then flat at ``rise - drop`` to the last epoch.

    Args:
        epochs: ``[n]`` strictly increasing epochs.
        drop: the collapse's depth (> 0).
        rise: the diversification's height (> 0).
        collapse_end: epoch where the collapse ends, after the first epoch.
        stable_from: epoch where the stabilization begins, after ``collapse_end`` and
            before the last epoch.

    Returns:
        ``[n]`` the curve at ``epochs``.

    >>> three_phase_curve([0, 1, 2, 3, 4], 1.0, 2.0, 1.0, 3.0).tolist()
    [0.0, -1.0, 0.0, 1.0, 1.0]
    """
    t = _finite_vector(epochs, "epochs")
    if t.size < 2 or not np.all(np.diff(t) > 0):
        raise LandscapeError("three_phase_curve: epochs must be >= 2 strictly increasing values")
    if not (drop > 0 and rise > 0):
        raise LandscapeError(f"three_phase_curve: drop {drop} and rise {rise} must be > 0")
    if not t[0] < collapse_end < stable_from < t[-1]:
        raise LandscapeError(f"three_phase_curve: need first epoch {t[0]} < collapse end "
                             f"{collapse_end} < stabilization {stable_from} < last {t[-1]}")
    return np.interp(t, [t[0], collapse_end, stable_from, t[-1]],
                     [0.0, -drop, rise - drop, rise - drop])


@dataclass(frozen=True)
class PhasePower:
    """How often :func:`phase_rule` finds three phases in simulated three-phase series.

    Attributes:
        power: the share of ``trials`` simulated series where it did.
        trials: the number of simulated series.
        drop, rise, collapse_end, stable_from: the simulated curve
            (:func:`three_phase_curve`).
        sigma: the noise standard deviation added to every checkpoint.
        known_sigma: the rule was given ``sigma`` (as the claim gives it the seed noise);
            False: it estimated the noise from its residuals.
        checkpoints: the number of epochs (the schedule's length).
    """

    power: float
    trials: int
    drop: float
    rise: float
    collapse_end: float
    stable_from: float
    sigma: float
    known_sigma: bool
    checkpoints: int

    def as_dict(self) -> dict:
        """JSON form."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def phase_power(epochs: object, drop: float, rise: float, collapse_end: float,
                stable_from: float, sigma: float, known_sigma: bool = True,
                trials: int = POWER_TRIALS, seed: int = 0) -> PhasePower:
    """The power of :func:`phase_rule` on a checkpoint schedule: a Monte Carlo estimate.

    Each trial adds independent Gaussian noise of standard deviation ``sigma`` to
    :func:`three_phase_curve` at ``epochs`` and runs :func:`phase_rule` on it (with
    ``sigma`` known, or estimated from the residuals when ``known_sigma`` is False); the
    power is the share of trials that read three phases. Deterministic for a ``seed``.

    Args:
        epochs: ``[n]`` the schedule (strictly increasing, n >= 3).
        drop: the collapse's depth (:func:`three_phase_curve`).
        rise: the diversification's height.
        collapse_end: epoch where the collapse ends.
        stable_from: epoch where the stabilization begins.
        sigma: the noise (> 0).
        known_sigma: whether the rule is told ``sigma``.
        trials: the number of simulated series (>= 1).
        seed: the noise's random seed.

    Returns:
        :class:`PhasePower`.
    """
    t = _finite_vector(epochs, "epochs")
    if not (sigma > 0 and np.isfinite(sigma)):
        raise LandscapeError(f"phase_power: sigma must be finite and > 0, got {sigma}")
    if trials < 1:
        raise LandscapeError(f"phase_power: trials must be >= 1, got {trials}")
    curve = three_phase_curve(t, drop, rise, collapse_end, stable_from)
    _check_series(t, curve)
    rng = np.random.default_rng(seed)
    hits = sum(phase_rule(t, curve + rng.normal(0.0, sigma, t.size),
                          sigma if known_sigma else None).three_phases for _ in range(trials))
    return PhasePower(hits / trials, trials, float(drop), float(rise), float(collapse_end),
                      float(stable_from), float(sigma), bool(known_sigma), int(t.size))
