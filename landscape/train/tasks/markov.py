"""Markov languages: one generator family, per-sample Information Content, Bayes ceilings.

The family (docs/paper.md, "Markov language", says why these languages) mixes four kinds of
tokens. With ``V = n_det + n_ctx + n_fixed`` the *base* vocabulary has ids::

    [0, n_det)                    deterministic group
    [n_det, n_det + n_ctx)        in-context group
    [n_det + n_ctx, V)            fixed group
    [V, V + n_modes)              mode tokens (only when n_modes > 1)

and the next token after the current token ``i`` is drawn as follows.

* **deterministic** ``i``: with probability ``p_det`` it is ``succ(i)``, otherwise uniform
  over the base vocabulary (so ``p(succ(i)) = p_det + (1 - p_det) / V``). ``succ`` is a
  uniformly random derangement (a permutation without fixed points) of the group, drawn
  once per mode by rejection sampling.
* **in-context** ``i``: every sequence draws its own row ``theta_i ~ Dirichlet(alpha)``
  over the in-context group; with probability ``1 - leak`` the next token is drawn from
  ``theta_i``, with probability ``leak`` uniformly from all non-in-context base tokens
  (deterministic and fixed groups; with none, ``leak`` must be 0).
* **fixed** ``i``: a global row drawn once (per mode) from ``Dirichlet(alpha)`` over the
  base vocabulary, indexed by the last ``order`` tokens ``(x_{t-order+1}, ..., x_t)``.
  ``order`` affects only the fixed group; the other groups are always first order.
* **modes**: with ``n_modes > 1`` every sequence starts with a mode token drawn uniformly;
  it selects that sequence's successor map and fixed rows, both drawn separately per mode.

Warm-up: the first ``order`` chain tokens (after the mode token, if any) are uniform over
the base vocabulary, so every chain step has ``order`` tokens of context. A sequence is
``x_0 .. x_T`` with ``T = seq_len``; inputs are ``x_0 .. x_{T-1}``, targets ``x_1 .. x_T``,
every position scored. The mode token is never a target.

Information Content (IC) of a sample is its mean surprisal in nats,
``-1/T sum_t log p(x_{t+1} | x_{<=t})``, under the *true generating process*. For
in-context rows that is the hierarchical model: the row is unknown, so the predictive is
the Dirichlet posterior predictive given the transitions seen so far in the sequence,
``(1 - leak) (n_ic + alpha) / (n_i + K alpha)`` with ``K = n_ctx`` (only chain-generated
in-context -> in-context transitions count; leak transitions carry no information about
``theta``). The sum of these log predictives is the log marginal likelihood of the
sequence. Sampling draws from each sequence's own ``theta``; scoring uses the posterior
predictive. The two are the same joint law (de Finetti), and the tests check it.

Evaluation splits cut the test set at the ``simple_quantile`` quantile of the test ICs
(``np.quantile``, linear interpolation): ``simple`` holds IC <= cut, ``complex`` the rest,
``all`` the whole test set. Ties at the cut all go to ``simple``, so with the hybrid's spike
of purely deterministic samples the simple fraction can exceed the quantile; ``info``
records the actual sizes. An empty ``complex`` split raises :class:`LandscapeError`.
With ``long_len > 0`` a fourth split, ``long``, holds ``n_test`` fresh sequences of
``long_len`` tokens (drawn from a fourth child of the seed's ``SeedSequence``, so the other
splits do not change) scored only at the positions beyond ``seq_len``: how well a model
trained on ``seq_len`` tokens predicts beyond them, against that part's own ceiling.

Ceilings per split are exact under the true process. ``acc`` is the accuracy the
Bayes-optimal predictor (the argmax of the true predictive; a tie split evenly) achieves
on the split's own tokens, ``loss`` the mean of ``-log p(target | prefix)`` (the
token-weighted IC): the same quantities a model is scored by, on the same tokens.
``acc_expected`` is the mean of ``max_x p(x | prefix)``, the ceiling's expectation over
fresh draws. The two differ because the splits are selected by IC, i.e. by how the
sampled tokens turned out: simple samples are those whose tokens happened to be likely,
so a model can beat ``acc_expected`` on them (on the hybrid by ~1 point) but never ``acc``
in expectation.

Named languages (:data:`LANGUAGES`, :meth:`MarkovConfig.language`) are configurations of
this one family. The paper's generator is not known, so the controls were sized here
(seed 0, 1024 test sequences) for their role, languages on which one layer and the looped
layer should not differ, not to match any number: ``fixed1`` has 4 deterministic and 8
fixed tokens (a 6/6 split gave a complex ceiling of .93, barely "complex"); ``fixed2`` is
a pure second-order chain over 12 fixed tokens with peaked rows (alpha 0.05; with alpha
0.5 every row is near-uniform, ceiling .35); ``incontext`` has 8 in-context tokens
(ceilings near .35 / .25); ``modes`` is ``fixed1`` behind 4 mode tokens. In the hybrid a
deterministic token's non-successor mass is uniform over the whole base vocabulary.

Randomness: ``np.random.SeedSequence(seed)`` is spawned into three streams, each fed to
``np.random.default_rng``: the language structure (successors, fixed rows), the training
samples, the test samples. So one seed fixes everything, and the test set does not change
when ``n_train`` does. :func:`draw_language` reproduces the structure :func:`generate` used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.train.tasks.base import IGNORE, Split, TaskData

_INT_FIELDS = tuple("n_det n_ctx n_fixed order n_modes seq_len n_train n_test seed "
                    "long_len".split())
MAX_FIXED_ROWS = 10_000_000  # cap on n_modes * V**order * n_fixed table entries

LANGUAGES: dict[str, dict] = {
    # separates Single from Looped: simple = deterministic part, complex = in-context part
    "hybrid": {},
    # control: a fixed bigram table (1/3 near-deterministic, 2/3 Dirichlet rows); one layer
    "fixed1": {"n_det": 4, "n_ctx": 0, "n_fixed": 8, "leak": 0.0},
    # control: a fixed trigram table of peaked rows; a previous-token step, no induction
    "fixed2": {"n_det": 0, "n_ctx": 0, "n_fixed": 12, "order": 2, "alpha": 0.05, "leak": 0.0},
    # control: every row in context; both models struggle on both splits
    "incontext": {"n_det": 0, "n_ctx": 8, "n_fixed": 0, "leak": 0.0},
    # control: a readable mode token selects one of 4 fixed1 chains; one layer reads it
    "modes": {"n_det": 4, "n_ctx": 0, "n_fixed": 8, "leak": 0.0, "n_modes": 4},
}


@dataclass(frozen=True)
class MarkovConfig:
    """A Markov language and its data sizes. Defaults are the hybrid language."""

    name: str = "markov"  # task name reported in TaskData
    n_det: int = 8  # tokens with a global successor (0, or >= 2 so a derangement exists)
    p_det: float = 0.98  # probability a deterministic token is followed by its successor
    n_ctx: int = 4  # tokens whose Dirichlet rows are redrawn for every sequence
    leak: float = 0.02  # probability an in-context token jumps to a uniform non-ctx token
    n_fixed: int = 0  # tokens with global Dirichlet rows over the base vocabulary
    order: int = 1  # context length of the fixed rows (2: a second-order chain)
    alpha: float = 0.5  # Dirichlet concentration of in-context and fixed rows
    n_modes: int = 1  # > 1: a leading mode token selects successors and fixed rows
    seq_len: int = 48  # T: input length; targets are the T next tokens
    n_train: int = 2048  # training sequences
    n_test: int = 1024  # held-out sequences, cut into simple/complex by IC
    simple_quantile: float = 0.5  # test IC quantile at or below which a sample is "simple"
    long_len: int = 0  # > 0: also a "long" test split of n_test sequences this long (length
    #                    generalization; a model needs positions that cover it, e.g. none)
    seed: int = 0  # seeds language structure, train and test samples (three streams)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise LandscapeError("markov: name must be a non-empty string")
        for key in _INT_FIELDS:
            if not _is_int(getattr(self, key)):
                raise LandscapeError(f"markov: {key}={getattr(self, key)!r} must be an integer")
        for key in ("p_det", "leak", "alpha", "simple_quantile"):
            value = getattr(self, key)
            if not _is_real(value) or not math.isfinite(value):
                raise LandscapeError(f"markov: {key}={value!r} must be a finite number")
        for key in _INT_FIELDS:  # numpy scalars become plain Python numbers (JSON in info)
            object.__setattr__(self, key, int(getattr(self, key)))
        for key in ("p_det", "leak", "alpha", "simple_quantile"):
            object.__setattr__(self, key, float(getattr(self, key)))
        self._check_groups()
        self._check_sizes()

    def _check_groups(self):
        """Raise for an impossible vocabulary or transition law."""
        for key in ("n_det", "n_ctx", "n_fixed"):
            if getattr(self, key) < 0:
                raise LandscapeError(f"markov: {key}={getattr(self, key)} must be >= 0")
        if self.n_det == 1:
            raise LandscapeError(
                "markov: n_det=1 has no successor without a fixed point; use 0 or >= 2"
            )
        if self.n_base < 2:
            raise LandscapeError(
                f"markov: n_det + n_ctx + n_fixed = {self.n_base} must be at least 2 tokens"
            )
        for key in ("p_det", "leak"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise LandscapeError(f"markov: {key}={getattr(self, key)} must be in [0, 1]")
        if self.n_ctx and self.leak > 0 and self.n_det + self.n_fixed == 0:
            raise LandscapeError(
                f"markov: leak={self.leak} needs non-in-context tokens to leak to; set leak=0"
            )
        if self.alpha <= 0:
            raise LandscapeError(f"markov: alpha={self.alpha} must be > 0")
        if self.order < 1:
            raise LandscapeError(f"markov: order={self.order} must be >= 1")
        if self.n_modes < 1:
            raise LandscapeError(f"markov: n_modes={self.n_modes} must be >= 1")
        table = self.n_modes * self.n_base**self.order * self.n_fixed
        if table > MAX_FIXED_ROWS:
            raise LandscapeError(
                f"markov: order={self.order} needs {table} fixed-row entries (cap "
                f"{MAX_FIXED_ROWS}); lower order, n_fixed or n_modes"
            )

    def _check_sizes(self):
        """Raise for impossible data sizes."""
        if self.seq_len <= self.warmup:
            raise LandscapeError(
                f"markov: seq_len={self.seq_len} must exceed the {self.warmup} warm-up "
                "tokens (mode token + order uniform tokens)"
            )
        if self.n_train < 1:
            raise LandscapeError(f"markov: n_train={self.n_train} must be >= 1")
        if self.long_len and self.long_len <= self.seq_len:
            raise LandscapeError(f"markov: long_len={self.long_len} must exceed seq_len="
                                 f"{self.seq_len} (or be 0: no long split)")
        if self.n_test < 2:
            raise LandscapeError(f"markov: n_test={self.n_test} must be >= 2 (simple + complex)")
        if not 0.0 < self.simple_quantile < 1.0:
            raise LandscapeError(
                f"markov: simple_quantile={self.simple_quantile} must be in (0, 1)"
            )
        if self.seed < 0:
            raise LandscapeError(f"markov: seed={self.seed} must be >= 0")

    @property
    def n_base(self) -> int:
        """Base (non-mode) vocabulary size ``V``."""
        return self.n_det + self.n_ctx + self.n_fixed

    @property
    def vocab_size(self) -> int:
        """Token ids the model embeds: the base vocabulary plus the mode tokens."""
        return self.n_base + (self.n_modes if self.n_modes > 1 else 0)

    @property
    def warmup(self) -> int:
        """Index of the first chain-generated token: mode token (if any) + ``order`` uniform."""
        return (1 if self.n_modes > 1 else 0) + self.order

    @classmethod
    def language(cls, name: str, **overrides) -> MarkovConfig:
        """The named language of :data:`LANGUAGES`, with further field overrides.

        Example:
            >>> MarkovConfig.language("fixed2", seed=3).order
            2
        """
        if name not in LANGUAGES:
            raise LandscapeError(
                f"markov: unknown language {name!r}; choose one of {', '.join(LANGUAGES)}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise LandscapeError(
                f"markov: unknown field(s) {', '.join(unknown)}; "
                f"fields are {', '.join(sorted(fields))}"
            )
        return cls(**{**LANGUAGES[name], **overrides})


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


@dataclass(frozen=True)
class MarkovLanguage:
    """The global structure of a language, drawn once from the seed.

    Attributes:
        succ: ``[n_modes, n_det]`` int64, the successor id of each deterministic token.
        fixed_rows: ``[n_modes, V**(order-1), n_fixed, V]`` float64; row
            ``[m, c, f]`` is ``p(next | context c, current token n_det + n_ctx + f)`` where
            ``c`` is the base-``V`` number of the ``order - 1`` tokens before the current
            one (most recent = least significant digit).
    """

    succ: np.ndarray
    fixed_rows: np.ndarray


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for structure, train and test (one SeedSequence)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` without fixed points (n >= 2)."""
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


_STRUCTURE = ("n_det", "p_det", "n_ctx", "leak", "n_fixed", "order", "alpha", "n_modes")


def language_of(cfg: MarkovConfig) -> str | None:
    """The name in :data:`LANGUAGES` whose structure ``cfg`` has (None: a language of its own).

    >>> language_of(MarkovConfig.language("modes", seed=4))
    'modes'
    """
    if not isinstance(cfg, MarkovConfig):
        return None
    for name, over in LANGUAGES.items():
        ref = MarkovConfig(**over)
        if all(getattr(cfg, k) == getattr(ref, k) for k in _STRUCTURE):
            return name
    return None


def draw_language(cfg: MarkovConfig) -> MarkovLanguage:
    """The language structure :func:`generate` uses for ``cfg`` (deterministic in cfg)."""
    rng = _streams(cfg.seed)[0]
    v = cfg.n_base
    succ = np.zeros((cfg.n_modes, cfg.n_det), dtype=np.int64)
    if cfg.n_det:
        succ = np.stack([_derangement(cfg.n_det, rng) for _ in range(cfg.n_modes)])
    shape = (cfg.n_modes, v ** (cfg.order - 1), cfg.n_fixed)
    fixed = (
        rng.dirichlet(np.full(v, cfg.alpha), size=shape) if cfg.n_fixed else np.zeros((*shape, v))
    )
    return MarkovLanguage(succ=succ.astype(np.int64), fixed_rows=fixed)


class _Chain:
    """The true predictive of a batch of sequences, advanced one position at a time.

    Holds each sequence's mode and its in-context transition counts ``[N, K, K]``; the
    sampler and :func:`true_predictive` both call :meth:`predictive` then :meth:`observe`.
    """

    def __init__(self, cfg: MarkovConfig, lang: MarkovLanguage, modes: np.ndarray):
        self.cfg, self.lang, self.modes = cfg, lang, modes
        self.counts = np.zeros((len(modes), cfg.n_ctx, cfg.n_ctx), dtype=np.int64)
        self.ctx_lo, self.fix_lo = cfg.n_det, cfg.n_det + cfg.n_ctx
        self.nonctx = np.r_[0 : cfg.n_det, self.fix_lo : cfg.n_base]  # leak targets

    def predictive(self, x: np.ndarray, t: int) -> np.ndarray:
        """``p(x_{t+1} | x_{<=t})`` ``[N, V]`` given tokens ``x`` ``[N, >= t+1]``."""
        cfg, n = self.cfg, x.shape[0]
        if t + 1 < cfg.warmup:
            return np.full((n, cfg.n_base), 1.0 / cfg.n_base)
        p = np.zeros((n, cfg.n_base))
        cur = x[:, t]
        det = np.flatnonzero(cur < self.ctx_lo)
        p[det] = (1.0 - cfg.p_det) / cfg.n_base
        p[det, self.lang.succ[self.modes[det], cur[det]]] += cfg.p_det
        ctx = np.flatnonzero((cur >= self.ctx_lo) & (cur < self.fix_lo))
        if ctx.size:
            c = self.counts[ctx, cur[ctx] - self.ctx_lo]  # [m, K]
            post = (c + cfg.alpha) / (c.sum(1, keepdims=True) + cfg.n_ctx * cfg.alpha)
            p[ctx, self.ctx_lo : self.fix_lo] = (1.0 - cfg.leak) * post
            if self.nonctx.size:
                p[np.ix_(ctx, self.nonctx)] = cfg.leak / self.nonctx.size
        fix = np.flatnonzero(cur >= self.fix_lo)
        if fix.size:
            rows = self.lang.fixed_rows[self.modes[fix], self._context(x[fix], t)]  # [m, F, V]
            p[fix] = rows[np.arange(fix.size), cur[fix] - self.fix_lo]
        return p

    def _context(self, x: np.ndarray, t: int) -> np.ndarray:
        """Base-V index of ``x_{t-order+1} .. x_{t-1}`` ``[m]`` (most recent least significant)."""
        idx = np.zeros(x.shape[0], dtype=np.int64)
        for j in range(self.cfg.order - 1, 0, -1):  # oldest first
            idx = idx * self.cfg.n_base + x[:, t - j]
        return idx

    def observe(self, x: np.ndarray, t: int) -> None:
        """Count the transition ``x_t -> x_{t+1}`` if the chain drew it from an in-context row."""
        if t + 1 < self.cfg.warmup or not self.cfg.n_ctx:
            return
        r, c = x[:, t] - self.ctx_lo, x[:, t + 1] - self.ctx_lo
        hit = np.flatnonzero((r >= 0) & (r < self.cfg.n_ctx) & (c >= 0) & (c < self.cfg.n_ctx))
        self.counts[hit, r[hit], c[hit]] += 1


def _modes_of(cfg: MarkovConfig, inputs: np.ndarray) -> np.ndarray:
    """Mode index of every sequence ``[N]`` (all 0 without mode tokens)."""
    if cfg.n_modes == 1:
        return np.zeros(inputs.shape[0], dtype=np.int64)
    modes = inputs[:, 0] - cfg.n_base
    if np.any((modes < 0) | (modes >= cfg.n_modes)):
        raise LandscapeError("markov: every sequence must start with a mode token")
    return modes


def true_predictive(cfg: MarkovConfig, lang: MarkovLanguage, inputs) -> np.ndarray:
    """The true ``p(x_{t+1} | x_{<=t})`` at every input position.

    Args:
        cfg: the language.
        lang: its structure (:func:`draw_language`).
        inputs: ``[N, T]`` token ids ``x_0 .. x_{T-1}`` (numpy or torch), T <= seq_len.

    Returns:
        ``[N, T, V]`` float64 over the base vocabulary (mode tokens are never next).
    """
    x = np.asarray(inputs, dtype=np.int64)
    chain = _Chain(cfg, lang, _modes_of(cfg, x))
    out = np.empty((*x.shape, cfg.n_base))
    for t in range(x.shape[1]):
        out[:, t] = chain.predictive(x, t)
        if t + 1 < x.shape[1]:
            chain.observe(x, t)
    return out


def _first_tokens(cfg: MarkovConfig, n: int, rng: np.random.Generator):
    """Tokens ``[N, T+1]`` with ``x_0`` filled, and each sequence's mode ``[N]``."""
    x = np.zeros((n, cfg.seq_len + 1), dtype=np.int64)
    if cfg.n_modes > 1:
        modes = rng.integers(cfg.n_modes, size=n)
        x[:, 0] = cfg.n_base + modes
    else:
        modes = np.zeros(n, dtype=np.int64)
        x[:, 0] = rng.integers(cfg.n_base, size=n)
    return x, modes


def sample(cfg: MarkovConfig, lang: MarkovLanguage, n: int, rng: np.random.Generator):
    """Draw ``n`` sequences and score every position under the true process.

    In-context tokens are drawn from each sequence's own rows ``theta``; scores use the
    posterior predictive (:func:`true_predictive` gives the same numbers by replay).

    Args:
        cfg: the language.
        lang: its structure (:func:`draw_language`).
        n: number of sequences.
        rng: the generator to draw from (advanced in place).

    Returns:
        ``(x, logp, pmax, hit)``: tokens ``[n, T+1]`` int64 (``x_0 .. x_T``), ``log p(x_{t+1} |
        x_{<=t})`` ``[n, T]``, ``max_x p(x | x_{<=t})`` ``[n, T]`` and the Bayes argmax
        predictor's hit ``[n, T]`` (1 if ``x_{t+1}`` is the argmax, ``1/m`` on an m-way tie),
        all float64.
    """
    x, modes = _first_tokens(cfg, n, rng)
    theta = rng.dirichlet(np.full(cfg.n_ctx, cfg.alpha), size=(n, cfg.n_ctx)) if cfg.n_ctx else None
    chain, rows = _Chain(cfg, lang, modes), np.arange(n)
    logp, pmax, hit = (np.empty((n, cfg.seq_len)) for _ in range(3))
    for t in range(cfg.seq_len):
        p = chain.predictive(x, t)
        x[:, t + 1] = _draw(_sampling_law(cfg, chain, p, theta, x[:, t], t), rng)
        p_next, top = p[rows, x[:, t + 1]], p.max(1)
        logp[:, t], pmax[:, t] = np.log(p_next), top
        hit[:, t] = (p_next == top) / (p == top[:, None]).sum(1)
        chain.observe(x, t)
    return x, logp, pmax, hit


def _sampling_law(cfg, chain: _Chain, p: np.ndarray, theta, cur: np.ndarray, t: int):
    """``p`` with in-context rows replaced by each sequence's own ``theta`` (a copy)."""
    if theta is None or t + 1 < cfg.warmup:
        return p
    ctx = np.flatnonzero((cur >= chain.ctx_lo) & (cur < chain.fix_lo))
    law = p.copy()
    law[ctx, chain.ctx_lo : chain.fix_lo] = (1.0 - cfg.leak) * theta[ctx, cur[ctx] - chain.ctx_lo]
    return law


def _draw(law: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per row of ``law`` ``[N, V]`` by inverse CDF (zero-mass ids never drawn)."""
    cum = np.cumsum(law, axis=1)
    u = rng.random(law.shape[0]) * cum[:, -1]
    return np.minimum((cum <= u[:, None]).sum(1), law.shape[1] - 1)


def _split(x: np.ndarray) -> Split:
    """Inputs ``x_0 .. x_{T-1}`` and targets ``x_1 .. x_T`` as a torch Split."""
    return Split(torch.from_numpy(x[:, :-1].copy()), torch.from_numpy(x[:, 1:].copy()))


def _ceiling(logp: np.ndarray, pmax: np.ndarray, hit: np.ndarray) -> dict[str, float]:
    """Bayes-optimal accuracy (realised and expected) and loss over ``[n, T]`` arrays."""
    return {"acc": float(hit.mean()), "acc_expected": float(pmax.mean()),
            "loss": float(-logp.mean())}


def _layout(cfg: MarkovConfig) -> dict[str, list[int]]:
    """Token ids of each group."""
    lo, hi = cfg.n_det + cfg.n_ctx, cfg.n_base
    modes = list(range(hi, hi + cfg.n_modes)) if cfg.n_modes > 1 else []
    return {
        "det": list(range(cfg.n_det)),
        "ctx": list(range(cfg.n_det, lo)),
        "fixed": list(range(lo, hi)),
        "mode": modes,
    }


def generate(cfg: MarkovConfig) -> TaskData:
    """Generate the language's train set and simple/complex/all test splits with ceilings.

    Example:
        >>> data = generate(MarkovConfig(n_train=8, n_test=16, seq_len=12))
        >>> list(data.evals), tuple(data.train.inputs.shape), data.vocab_size
        (['simple', 'complex', 'all'], (8, 12), 12)
    """
    lang = draw_language(cfg)
    _, rng_train, rng_test = _streams(cfg.seed)
    x_train, logp_train, _, _ = sample(cfg, lang, cfg.n_train, rng_train)
    x_test, logp, pmax, hit = sample(cfg, lang, cfg.n_test, rng_test)
    train_ic, test_ic = -logp_train.mean(1), -logp.mean(1)
    cut = float(np.quantile(test_ic, cfg.simple_quantile))
    ids = {
        "simple": np.flatnonzero(test_ic <= cut),
        "complex": np.flatnonzero(test_ic > cut),
        "all": np.arange(cfg.n_test),
    }
    if not ids["complex"].size:
        raise LandscapeError(
            f"markov: all test ICs are <= the cut {cut:.4g}, so the complex split is empty; "
            "lower simple_quantile or make the language less deterministic"
        )
    test = _split(x_test)
    ctx_ids = np.asarray(_layout(cfg)["ctx"], dtype=np.int64)
    ctx_in = np.isin(x_test[:, :-1], ctx_ids)  # current token in-context, [n_test, T]
    info = {
        "config": dataclasses.asdict(cfg),
        "ic_cut": cut,
        "simple_quantile": cfg.simple_quantile,
        "sizes": {"train": cfg.n_train, **{k: int(v.size) for k, v in ids.items()}},
        "simple_fraction": ids["simple"].size / cfg.n_test,
        "vocab": _layout(cfg),
        "successors": lang.succ.tolist(),
        "warmup": cfg.warmup,
        "ctx_fraction": {k: float(ctx_in[v].mean()) for k, v in ids.items()},
    }
    evals = {k: test.subset(v) for k, v in ids.items()}
    ceilings = {k: _ceiling(logp[v], pmax[v], hit[v]) for k, v in ids.items()}
    if cfg.long_len:
        long_cfg = dataclasses.replace(cfg, seq_len=cfg.long_len, long_len=0)
        x_long, logp_l, pmax_l, hit_l = sample(long_cfg, lang, cfg.n_test, _long_stream(cfg.seed))
        long = _split(x_long)  # scored only beyond the training length
        long.targets[:, : cfg.seq_len] = IGNORE
        evals["long"] = long
        tail = np.s_[:, cfg.seq_len :]
        ceilings["long"] = _ceiling(logp_l[tail], pmax_l[tail], hit_l[tail])
        info["long_len"] = cfg.long_len
    return TaskData(
        name=cfg.name,
        vocab_size=cfg.vocab_size,
        max_len=max(cfg.seq_len, cfg.long_len),
        train=_split(x_train),
        evals=evals,
        ceilings=ceilings,
        info=info,
        sample_info={"train_ic": train_ic, "test_ic": test_ic},
    )


def _long_stream(seed: int) -> np.random.Generator:
    """The long test split's generator: a fourth child of the seed's SeedSequence."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3])
