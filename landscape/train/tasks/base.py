"""What every task hands to the model and the trainer.

A task is a deterministic function of its config (seeded): it returns a
:class:`TaskData` with a training split, named evaluation splits and, where the
generating process is known, the Bayes-optimal ceiling of each evaluation split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from landscape.errors import LandscapeError

IGNORE = -100
"""Target value of a position whose prediction is not scored (``F.cross_entropy`` ignore_index)."""


@dataclass(frozen=True)
class Split:
    """A set of sequences with their next-token targets.

    Raises :class:`~landscape.errors.LandscapeError` unless both are ``[N, T]``.

    Attributes:
        inputs: ``[N, T]`` int64 token ids, padded with the task's pad id where shorter.
        targets: ``[N, T]`` int64, ``targets[n, t]`` is the token the model must predict
            after reading ``inputs[n, : t + 1]``; :data:`IGNORE` where nothing is scored.
        sizes: ``[N]`` int64 input size of each sequence (algorithmic tasks: its ``n``), or
            None; a model whose loop count follows the input size reads it.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    sizes: torch.Tensor | None = None

    def __post_init__(self):
        if self.inputs.shape != self.targets.shape or self.inputs.dim() != 2:
            raise LandscapeError(
                f"inputs {tuple(self.inputs.shape)} and targets {tuple(self.targets.shape)} "
                "must both be [N, T]"
            )
        if self.sizes is not None and tuple(self.sizes.shape) != (self.inputs.shape[0],):
            raise ValueError(f"sizes {tuple(self.sizes.shape)} must be [N] with N = "
                             f"{self.inputs.shape[0]}")

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_scored(self) -> int:
        """Number of scored (non-ignored) target positions."""
        return int((self.targets != IGNORE).sum())

    def subset(self, ids) -> Split:
        """The sequences at ``ids`` (a new Split; this one is unchanged)."""
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        sizes = None if self.sizes is None else self.sizes[ids]
        return Split(self.inputs[ids], self.targets[ids], sizes)

    def to(self, device: torch.device | str) -> Split:
        """The same split with its tensors on ``device``."""
        sizes = None if self.sizes is None else self.sizes.to(device)
        return Split(self.inputs.to(device), self.targets.to(device), sizes)


@dataclass(frozen=True)
class TaskData:
    """Everything a task generates.

    Attributes:
        name: task name (``markov``, ``parity``, ...).
        vocab_size: number of token ids the model must embed (including special tokens).
        max_len: longest sequence over all splits; positions must cover it.
        train: the training split.
        evals: evaluation splits by name, in display order. Markov: ``simple``,
            ``complex``, ``all`` (held-out test set, cut by Information Content).
            Algorithmic: ``len_<n>`` per test length.
        ceilings: per evaluation split, the Bayes-optimal ``{"acc": ..., "loss": ...}``
            where the true process is known (empty otherwise).
        info: JSON-serialisable facts about the generated data (IC cut, lengths, ...).
        sample_info: per-sample arrays (e.g. ``"test_ic"``), for plots and reports.
    """

    name: str
    vocab_size: int
    max_len: int
    train: Split
    evals: dict[str, Split]
    ceilings: dict[str, dict[str, float]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    sample_info: dict[str, np.ndarray] = field(default_factory=dict)
