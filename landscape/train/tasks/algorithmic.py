"""Algorithmic tasks for length generalization: parity, copy, addition, binary sum, unique set.

The task list follows the looped length-generalization literature (Fan et al. 2024,
"Looped Transformers for Length Generalization"); the exact formats below are our own
choices, made for a causal next-token model and written down here.

**Input size n.** ``n`` is the number of input bits (``parity``, ``copy``, ``binary_sum``),
the number of bits of *each* operand (``addition``) or the number of input symbols
(``unique_set``). Training samples draw ``n`` uniformly from
``[train_min_len, train_max_len]``; each test split fixes ``n`` exactly.

**Sample layout.** ``prompt SEP answer``, with everything least-significant bit first:

============  ======================  ====================================  ===========
task          prompt                  answer                                example
============  ======================  ====================================  ===========
parity        n bits                  1 bit: their XOR                      ``1101=1``
copy          n bits                  the same n bits                       ``110=110``
addition      n bits ``+`` n bits     n+1 bits: the sum                     ``10+11=001``
binary_sum    n bits                  ``n.bit_length()`` bits: their count  ``1101=110``
unique_set    n symbols               distinct symbols, first-seen order,   ``3a31=3a1$``
                                      then EOS
============  ======================  ====================================  ===========

Bits and operands are uniform (leading zeros, i.e. trailing high bits, are allowed);
``addition`` always writes n+1 sum bits and ``binary_sum`` always writes
``n.bit_length()`` bits (enough for the largest count, n), high zero bits included, so
for these four tasks the answer length is a function of ``n`` alone and no end token is
needed. ``unique_set`` draws symbols uniformly from ``{0, ..., alphabet-1}``; its answer
length depends on the content, so an EOS token closes it and is scored.

**Online training.** With ``online = true`` the trainer draws a fresh batch at every step
(:func:`online_batch`) instead of cycling through ``train`` (which then only supplies the
probe set), so no input is seen twice in practice; ``curriculum_steps`` opens the training
lengths one by one (:meth:`AlgorithmicConfig.longest_at`), as in Fan et al.

**Tokens.** One vocabulary for all five tasks, so ids mean the same thing everywhere:
``PAD=0`` (``.``), ``SEP=1`` (``=``), ``PLUS=2`` (``+``), ``EOS=3`` (``$``), then symbol
``s`` is id ``4 + s`` (rendered ``0-9a-z``), bits 0 and 1 being symbols 0 and 1.
``vocab_size`` is ``4 + 2`` for the binary tasks and ``4 + alphabet`` for ``unique_set``
(unused special ids, e.g. ``PLUS`` outside addition, simply never occur).

**Inputs and targets.** ``inputs`` is the whole sample, answer included (teacher
forcing), right-padded with ``PAD`` to the longest sample of its split. With
``teacher_forcing = False`` the answer tokens of ``inputs`` are replaced by ``PAD``
placeholders (targets unchanged): the model writes the whole answer from the prompt in one
forward pass, as in the looped length-generalization setup of Fan et al., where the passes
over the prompt do the work that teacher forcing would otherwise hand over token by token.
``targets[t]`` is the token to predict after reading ``inputs[: t + 1]``: it is
``inputs[t + 1]`` where that token belongs to the answer (the first scored position is
the ``SEP``) and :data:`~landscape.train.tasks.base.IGNORE` everywhere else: prompt, the last
answer token, padding.

**Splits.** ``train``: ``n_train`` samples. Evaluations, in this order: ``iid``
(``n_test`` fresh samples from the training length range, drawn independently; for short
lengths many coincide with training samples, ``info["iid_seen_in_train"]`` says how many,
so ``iid`` measures in-distribution accuracy, not memorisation), with ``online = true``
then ``val`` (a second held-out split of the training lengths: choose settings on it, judge
mastery on ``iid``), then ``len_<n>`` with
``n_test`` samples for each test length in increasing ``n``. Default test lengths:
``train_max_len``, ``ceil(1.5 * train_max_len)``, ``2 * train_max_len``; the longest must
reach ``2 * train_max_len``. Answers are deterministic, so every evaluation ceiling is
``{"acc": 1.0, "loss": 0.0}``.

**Randomness.** Each split has its own stream, ``numpy.random.default_rng([seed, k])``
(``k = 0`` train, ``1`` iid, ``(2, n)`` for ``len_<n>``, ``(3, step)`` for the online batch
of a step, ``4`` val): the training data do not change
when only ``n_test`` or the test lengths change. The streams do not depend on the task
name, so ``parity``, ``copy`` and ``binary_sum`` with one seed read the same input bits.

Example:
    >>> data = generate(AlgorithmicConfig("addition", train_max_len=4, n_train=8, n_test=4))
    >>> list(data.evals)
    ['iid', 'len_4', 'len_6', 'len_8']
    >>> row = data.evals["len_8"].inputs[0]
    >>> decode(row)  # 223 + 252 = 475: 8 + 8 operand bits, 9 sum bits, LSB first
    '11111011+00111111=110110111'
    >>> decode(encode("10+11=001"))
    '10+11=001'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.train.tasks.base import IGNORE, Split, TaskData

TASK_NAMES = ("parity", "copy", "addition", "binary_sum", "unique_set")

PAD, SEP, PLUS, EOS = 0, 1, 2, 3
SYMBOL0 = 4  # token id of symbol 0 (bit 0); symbol s is SYMBOL0 + s
_SPECIAL_CHARS = {PAD: ".", SEP: "=", PLUS: "+", EOS: "$"}
_SYMBOL_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
MAX_ALPHABET = len(_SYMBOL_CHARS)  # so that every token renders as one character


@dataclass(frozen=True)
class AlgorithmicConfig:
    """One algorithmic task and its train/test lengths. Fields are recipe keys under ``[task]``."""

    name: str  # one of TASK_NAMES
    train_min_len: int = 1  # shortest training input size n (bits / operand bits / symbols)
    train_max_len: int = 8  # longest training input size n
    test_lengths: tuple[int, ...] = ()  # input sizes of the len_<n> splits; () = default
    n_train: int = 4096  # training samples
    n_test: int = 256  # samples per evaluation split (iid and each test length)
    teacher_forcing: bool = True  # False: the answer positions of the input hold PAD, so
    #                               the whole answer comes from the prompt in one forward pass
    alphabet: int = 8  # unique_set only: number of distinct symbols, 2..36
    seed: int = 0  # seeds every split's random stream
    online: bool = False  # True: every training step draws a fresh batch (online_batch),
    #                       and a held-out ``val`` split (model selection) joins ``iid``
    curriculum_steps: int = 0  # online only: steps over which the longest training input
    #                            grows from train_min_len to train_max_len (0: at once)

    def __post_init__(self):
        if self.name not in TASK_NAMES:
            raise LandscapeError(
                f"task: name={self.name!r} is not an algorithmic task; use one of "
                f"{', '.join(TASK_NAMES)}"
            )
        for key in ("train_min_len", "train_max_len", "n_train", "n_test", "alphabet", "seed",
                    "curriculum_steps"):
            _check_int(key, getattr(self, key))
        for key in ("train_min_len", "n_train", "n_test"):
            if getattr(self, key) < 1:
                raise LandscapeError(f"task: {key}={getattr(self, key)} must be at least 1")
        if self.train_max_len < self.train_min_len:
            raise LandscapeError(
                f"task: train_max_len={self.train_max_len} must be >= "
                f"train_min_len={self.train_min_len}"
            )
        if not 2 <= self.alphabet <= MAX_ALPHABET:
            raise LandscapeError(f"task: alphabet={self.alphabet} must be in 2..{MAX_ALPHABET}")
        if self.seed < 0:
            raise LandscapeError(f"task: seed={self.seed} must be >= 0")
        if not isinstance(self.online, bool):
            raise LandscapeError(f"task: online={self.online!r} must be true or false")
        if self.curriculum_steps < 0 or (self.curriculum_steps and not self.online):
            raise LandscapeError(f"task: curriculum_steps={self.curriculum_steps} needs "
                                 "online = true and must be >= 0")
        self._check_test_lengths()

    def _check_test_lengths(self):
        """Validate ``test_lengths`` (a list from TOML becomes a tuple)."""
        if not isinstance(self.test_lengths, (list, tuple)):
            raise LandscapeError(
                f"task: test_lengths={self.test_lengths!r} must be a list of input sizes"
            )
        for n in self.test_lengths:
            _check_int("test_lengths", n)
            if n < 1:
                raise LandscapeError(f"task: test_lengths contains {n}; sizes must be >= 1")
        object.__setattr__(self, "test_lengths", tuple(int(n) for n in self.test_lengths))
        if len(set(self.test_lengths)) != len(self.test_lengths):
            raise LandscapeError(f"task: test_lengths={list(self.test_lengths)} has duplicates")
        if self.test_lengths and max(self.test_lengths) < 2 * self.train_max_len:
            raise LandscapeError(
                f"task: test_lengths={list(self.test_lengths)} must reach at least "
                f"2 * train_max_len = {2 * self.train_max_len} to test length generalization"
            )

    @property
    def eval_lengths(self) -> tuple[int, ...]:
        """The test input sizes, increasing: ``test_lengths`` or the default."""
        if self.test_lengths:
            return tuple(sorted(self.test_lengths))
        m = self.train_max_len
        return tuple(sorted({m, math.ceil(1.5 * m), 2 * m}))

    def longest_at(self, step: int) -> int:
        """The longest training input size at optimiser step ``step`` (the curriculum).

        Without a curriculum, ``train_max_len``. With ``curriculum_steps = S`` the range
        ``[train_min_len, train_max_len]`` (``k`` sizes) opens one size per ``S / k`` steps:
        ``train_min_len + floor(k * step / S)``, capped at ``train_max_len`` (reached at
        step ``S (k - 1) / k``).
        """
        lo, hi = self.train_min_len, self.train_max_len
        if not self.curriculum_steps:
            return hi
        return min(hi, lo + (hi - lo + 1) * int(step) // self.curriculum_steps)

    @property
    def vocab_size(self) -> int:
        """Number of token ids: 4 special ids plus 2 bits, or ``alphabet`` symbols."""
        return SYMBOL0 + (self.alphabet if self.name == "unique_set" else 2)


def _check_int(key: str, value) -> None:
    """Raise unless ``value`` is an int (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LandscapeError(f"task: {key}={value!r} must be an integer")


# ---------------------------------------------------------------- per-task generators
# Each returns (prompt [m, P] ids, answer [m, L] ids PAD-padded, answer_len [m]).


def _bits(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """``[m, n]`` uniform bits as token ids."""
    return SYMBOL0 + rng.integers(0, 2, size=(m, n))


def _parity(rng, m, n, alphabet):
    x = _bits(rng, m, n)
    answer = SYMBOL0 + ((x - SYMBOL0).sum(axis=1, keepdims=True) % 2)  # [m, 1]
    return x, answer, np.full(m, 1)


def _copy(rng, m, n, alphabet):
    x = _bits(rng, m, n)
    return x, x.copy(), np.full(m, n)


def _addition(rng, m, n, alphabet):
    a, b = rng.integers(0, 2, size=(2, m, n))  # LSB first
    out = np.empty((m, n + 1), dtype=np.int64)
    carry = np.zeros(m, dtype=np.int64)
    for i in range(n):  # ripple carry, vectorised over samples
        s = a[:, i] + b[:, i] + carry
        out[:, i], carry = s % 2, s // 2
    out[:, n] = carry
    plus = np.full((m, 1), PLUS)
    prompt = np.concatenate([SYMBOL0 + a, plus, SYMBOL0 + b], axis=1)
    return prompt, SYMBOL0 + out, np.full(m, n + 1)


def _binary_sum(rng, m, n, alphabet):
    x = _bits(rng, m, n)
    width = n.bit_length()
    count = (x - SYMBOL0).sum(axis=1)  # [m]
    answer = SYMBOL0 + ((count[:, None] >> np.arange(width)) & 1)  # [m, width], LSB first
    return x, answer, np.full(m, width)


def _unique_set(rng, m, n, alphabet):
    x = rng.integers(0, alphabet, size=(m, n))
    hit = x[:, :, None] == np.arange(alphabet)  # [m, n, A]
    seen = hit.any(axis=1)  # [m, A]
    first = np.where(seen, hit.argmax(axis=1), n + np.arange(alphabet))  # unseen sort last
    order = np.argsort(first, axis=1, kind="stable")  # [m, A] symbols by first appearance
    k = seen.sum(axis=1)  # [m] distinct count
    answer = np.full((m, alphabet + 1), PAD)  # at most alphabet symbols, then EOS
    answer[:, :alphabet] = np.where(np.arange(alphabet) < k[:, None], SYMBOL0 + order, PAD)
    answer[np.arange(m), k] = EOS
    return SYMBOL0 + x, answer, k + 1


_GENERATORS = {
    "parity": _parity,
    "copy": _copy,
    "addition": _addition,
    "binary_sum": _binary_sum,
    "unique_set": _unique_set,
}


# ---------------------------------------------------------------- assembling splits


def _split(cfg: AlgorithmicConfig, rng: np.random.Generator, sizes: np.ndarray) -> Split:
    """Generate one sample per entry of ``sizes`` (input sizes n), in that order."""
    groups = []
    for n in np.unique(sizes):  # one vectorised call per distinct n, in increasing n
        rows = np.flatnonzero(sizes == n)
        prompt, answer, alen = _GENERATORS[cfg.name](rng, len(rows), int(n), cfg.alphabet)
        groups.append((rows, prompt, answer[:, : alen.max()], alen))
    width = max(prompt.shape[1] + 1 + answer.shape[1] for _, prompt, answer, _ in groups)
    inputs = np.full((len(sizes), width), PAD, dtype=np.int64)
    targets = np.full((len(sizes), width), IGNORE, dtype=np.int64)
    for rows, prompt, answer, alen in groups:
        p, la = prompt.shape[1], answer.shape[1]
        inputs[rows, :p] = prompt
        inputs[rows, p] = SEP
        inputs[rows, p + 1 : p + 1 + la] = answer if cfg.teacher_forcing else PAD
        scored = np.arange(la) < alen[:, None]  # [m, la]
        targets[rows, p : p + la] = np.where(scored, answer, IGNORE)  # answer[j] read at p + j
    return Split(torch.from_numpy(inputs), torch.from_numpy(targets),
                 torch.from_numpy(np.asarray(sizes, dtype=np.int64)))


def _seen_fraction(train: Split, other: Split) -> float:
    """Fraction of ``other``'s samples that also occur in ``train`` (whole sample, unpadded)."""
    width = max(train.inputs.shape[1], other.inputs.shape[1])

    def rows(split):
        x = np.full((len(split), width), PAD, dtype=np.int64)
        x[:, : split.inputs.shape[1]] = split.inputs.numpy()
        return [r.tobytes() for r in x]

    seen = set(rows(train))
    return float(np.mean([r in seen for r in rows(other)]))


def generate(cfg: AlgorithmicConfig) -> TaskData:
    """Generate the training split and the ``iid`` and ``len_<n>`` evaluation splits.

    Args:
        cfg: the task, lengths, sizes and seed.

    Returns:
        A :class:`TaskData`; ``inputs``/``targets`` of each split are ``[N, T_split]`` int64
        with ``T_split`` the longest sample of the split, ``max_len`` the largest
        ``T_split``, ceilings ``{"acc": 1.0, "loss": 0.0}`` on every evaluation split.
    """
    lo, hi = cfg.train_min_len, cfg.train_max_len
    rng_train = np.random.default_rng([cfg.seed, 0])
    rng_iid = np.random.default_rng([cfg.seed, 1])
    train_n = rng_train.integers(lo, hi + 1, size=cfg.n_train)
    iid_n = rng_iid.integers(lo, hi + 1, size=cfg.n_test)
    train = _split(cfg, rng_train, train_n)
    evals = {"iid": _split(cfg, rng_iid, iid_n)}
    if cfg.online:  # a second held-out split of the training lengths, for model selection
        rng_val = np.random.default_rng([cfg.seed, 4])
        evals["val"] = _split(cfg, rng_val, rng_val.integers(lo, hi + 1, size=cfg.n_test))
    for n in cfg.eval_lengths:
        rng = np.random.default_rng([cfg.seed, 2, n])
        evals[f"len_{n}"] = _split(cfg, rng, np.full(cfg.n_test, n))
    seq_len = {"train": train.inputs.shape[1]} | {k: s.inputs.shape[1] for k, s in evals.items()}
    info = {
        "task": cfg.name,
        "tokens": {"PAD": PAD, "SEP": SEP, "PLUS": PLUS, "EOS": EOS, "SYMBOL0": SYMBOL0},
        "token_chars": decode(np.arange(cfg.vocab_size), strip=False),
        "train_lengths": [int(lo), int(hi)],
        "test_lengths": list(cfg.eval_lengths),
        "seq_len": seq_len,
        "iid_seen_in_train": _seen_fraction(train, evals["iid"]),
    }
    if cfg.name == "unique_set":
        info["alphabet"] = cfg.alphabet
    if cfg.online:
        info["online"] = {"curriculum_steps": cfg.curriculum_steps,
                          "batches": "numpy.random.default_rng([seed, 3, step])"}
    return TaskData(
        name=cfg.name,
        vocab_size=cfg.vocab_size,
        max_len=max(seq_len.values()),
        train=train,
        evals=evals,
        ceilings={k: {"acc": 1.0, "loss": 0.0} for k in evals},
        info=info,
        sample_info={"train_n": train_n, "iid_n": iid_n},
    )


def online_batch(cfg: AlgorithmicConfig, step: int, size: int) -> Split:
    """The fresh training batch of optimiser step ``step`` (``online = true``).

    ``size`` samples with input sizes uniform in ``[train_min_len, cfg.longest_at(step)]``,
    drawn from ``numpy.random.default_rng([seed, 3, step])``: a function of the step alone,
    so a resumed run sees the batches it would have seen, and never one of the evaluation
    splits' streams. Padded to its own longest sample.
    """
    rng = np.random.default_rng([cfg.seed, 3, int(step)])
    sizes = rng.integers(cfg.train_min_len, cfg.longest_at(step) + 1, size=size)
    return _split(cfg, rng, sizes)


# ---------------------------------------------------------------- rendering


def decode(tokens, strip: bool = True) -> str:
    """Render token ids as text, one character per token (``10+11=011``, ``3a31=3a1$``).

    Args:
        tokens: ``[T]`` token ids (tensor, array or list), e.g. one row of ``inputs``.
        strip: drop trailing ``PAD`` (``.``).

    Raises:
        LandscapeError: an id is not a token of this vocabulary.
    """
    ids = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens).reshape(-1)
    chars = []
    for i in ids.tolist():
        if i in _SPECIAL_CHARS:
            chars.append(_SPECIAL_CHARS[i])
        elif SYMBOL0 <= i < SYMBOL0 + MAX_ALPHABET:
            chars.append(_SYMBOL_CHARS[i - SYMBOL0])
        else:
            raise LandscapeError(f"token id {i} is not in the algorithmic vocabulary")
    text = "".join(chars)
    return text.rstrip(_SPECIAL_CHARS[PAD]) if strip else text


def encode(text: str) -> np.ndarray:
    """Token ids ``[len(text)]`` of a rendered sample; the inverse of :func:`decode`.

    Raises:
        LandscapeError: a character is not a token of this vocabulary.
    """
    lookup = {c: i for i, c in _SPECIAL_CHARS.items()}
    lookup |= {c: SYMBOL0 + s for s, c in enumerate(_SYMBOL_CHARS)}
    bad = sorted(set(text) - set(lookup))
    if bad:
        raise LandscapeError(f"characters {bad} are not tokens; use {''.join(lookup)}")
    return np.array([lookup[c] for c in text], dtype=np.int64)
