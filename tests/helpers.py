"""What several test modules share: tiny recipes, small CLI arguments, run comparison.

Test modules import from here (``from helpers import tiny_recipe``), never from each other
or from ``conftest``; ``conftest.py`` holds only fixtures.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from landscape.runs.run import Run
from landscape.train.recipe import load_recipe

TINY = {
    "name": "tiny",
    "task": {"name": "markov", "n_train": 128, "n_test": 64, "seq_len": 12},
    "model": {"d_model": 8, "n_heads": 2},
    "train": {"batch_size": 16, "epochs": 4, "probe_size": 16, "lr": 3e-3},
}

SMALL = ["--set", "task.n_train=64", "--set", "task.n_test=32", "--set", "task.seq_len=8",
         "--set", "model.d_model=8", "--set", "train.batch_size=16", "--set",
         "train.probe_size=8"]
"""``landscape train`` arguments that make any Markov recipe tiny."""


def tiny_recipe(**tables):
    """The tiny Markov recipe with some tables overridden, e.g. model={"loops": 3}."""
    return load_recipe(overrides=[TINY, tables])


def same_run(a, b):
    """Assert that two run files hold the same trajectory and metrics (wall times aside)."""
    ra, rb = Run.open(a), Run.open(b)
    np.testing.assert_array_equal(ra.steps, rb.steps)
    np.testing.assert_array_equal(ra.loops, rb.loops)
    np.testing.assert_array_equal(ra.trajectory(), rb.trajectory())
    for k in ra.metrics:
        if k not in ("wall", "tokens_per_s"):
            np.testing.assert_array_equal(ra.metrics[k], rb.metrics[k], err_msg=k)


# --- synthetic spectra and runs for the landscape claims (2-4) ---------------------------


def with_bulk(valley, p=400, seed=0, bulk=1e-7):
    """A valley over a bulk of ``p`` eigenvalues near zero (``|lambda| <= bulk``), shuffled."""
    rng = np.random.default_rng(seed)
    out = np.concatenate([np.asarray(valley, float), rng.uniform(-bulk, bulk, p)])
    return rng.permutation(out)


def u_like(seed=0):
    """Clustered valley eigenvalues (uniformly steep cliffs) over a bulk near zero."""
    return with_bulk(np.random.default_rng(100 + seed).uniform(0.6, 1.0, 20), seed=seed)


def v_like(seed=0):
    """Valley eigenvalues spread over four decades (varied steepness) over a bulk."""
    rng = np.random.default_rng(200 + seed)
    return with_bulk(np.concatenate([[1.0], 10 ** rng.uniform(-3.95, 0, 39)]), seed=seed)


class StoredRun:
    """Just what the landscape claims read from a Run: a seed, a name, stored parts."""

    def __init__(self, arch, seed, probes, steps_per_epoch=10):
        loops = {"looped": 3}.get(arch, 1)
        self.recipe = tiny_recipe(model={"loops": loops}, train={"seed": seed})
        self.arch, self.name, self.path = arch, f"{arch}_s{seed}", f"{arch}_s{seed}.h5"
        self.probes = probes
        self.probed_steps = sorted({s for s, _ in probes})
        self.steps = np.asarray(self.probed_steps or [0])  # the last probed step ends the run
        self.attrs = {"steps_per_epoch": steps_per_epoch}
        self.metrics = {}
        self.shift_step = None

    def part(self, name, step=-1):
        """The stored part ``name`` at ``step`` as an attribute namespace, or None."""
        for (s, _), parts in self.probes.items():
            if s == step and name in parts:
                return SimpleNamespace(**parts[name])
        return None


def grouped(**archs):
    """``{"markov": {arch: [runs]}}`` as series.group_runs returns it (a run or a list)."""
    return {"markov": {a: list(r) if isinstance(r, (list, tuple)) else [r]
                       for a, r in archs.items()}}


# --- tiny models for the curvature operators (GGN, Fisher) --------------------------------


def norm_mlp(n_in=3, n_out=3, seed=0):
    """Linear-LayerNorm-tanh-Linear-BatchNorm(eval)-tanh-Linear in float64, weights of
    order one and running statistics away from (0, 1), so both norms act."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, 4), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 4),
                          nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, n_out)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.3, 0.7)
        model[4].running_mean.normal_(0.0, 0.5)
        model[4].running_var.uniform_(0.5, 2.0)
    return model.eval()


def tiny_looped(seed=0, vocab=5, t=6):
    """A one-layer LoopedTransformer in float64 with weights of order one."""
    import torch

    from landscape.train.model import LoopedTransformer, ModelConfig

    torch.manual_seed(seed)
    model = LoopedTransformer(ModelConfig(d_model=4, n_heads=2), vocab_size=vocab, max_len=t)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("ln1.weight") else 0.0, 0.5)
    return model.double().eval()


def tiny_token_split(n=5, t=6, vocab=5, seed=0):
    """``n`` random sequences with next-token targets, some of them IGNORE."""
    import torch

    from landscape.train.tasks.base import IGNORE, Split

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, t), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[:, -1] = IGNORE
    y[0, 2] = IGNORE
    return Split(x, y)


def close(a, b, rtol=1e-10):
    """Assert ``a`` equals ``b`` to ``rtol`` of ``b``'s largest entry, saying by how much."""
    err = float((a - b).abs().max() / b.abs().max())
    assert err <= rtol, f"max |a - b| / max |b| = {err:.3g} > {rtol:g}"


def pair(x, y):
    """A pair-form probe set's arrays."""
    return {"inputs": x.numpy(), "targets": y.numpy()}


def classification(n=7, seed=1):
    """``n`` float64 inputs of 3 features and their class ids (3 classes)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=g))
