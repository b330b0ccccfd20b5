"""Probes on models this project did not define: scaling, memory, top-5 race, 2-D slices.

The model is a GPT-style causal language model assembled from ``torch.nn`` layers: token
and position embeddings, a stack of ``nn.TransformerEncoderLayer(norm_first=True,
dropout=0, activation="gelu")`` with a causal mask, a final ``nn.LayerNorm`` and a linear
head (``gpt(d, layers)``). Data: random tokens from a seeded generator (vocabulary 256),
next-token targets, one fixed batch; the loss is the mean cross-entropy over it. Each
part prints Markdown for BENCHMARKS.md (medians over repeats, ratios inside a repeat,
arms alternated).

* ``ratio``: one Hessian-vector product (our operator: a double backward through the
  retained create-graph gradient) against one gradient (forward and backward on fresh
  leaves) at widths giving P from about 1e4 to 1e7 (4 layers).
* ``memory``: peak resident memory (of a fresh subprocess per measurement) of one training
  step (forward, backward, AdamW step) against one probe of the same batch (the operator,
  Lanczos top-5 at ``tol=1e-4`` with its default basis cap, Hutch++ with 20 products
  deflated by those 5), both above the subprocess's memory after building model and data;
  on Linux also the peak of each stage (``VmHWM``, reset between stages).
* ``eigen``: the top-5 eigenvalues to 1e-4 relative error on a model of more than 1M
  parameters, every arm in float64 (in float32 the products' rounding alone left the top
  five 1.1e-4 from the truth, whatever the tolerance): ours (``lanczos``) against scipy's
  ``eigsh`` (ARPACK) on the same operator, PyHessian 0.1 (through our adapter) and
  curvlinops' ``HessianLinearOperator`` (``GGNLinearOperator`` with ``--curvature ggn``)
  with ``eigsh``. Truth: float64 Lanczos at ``tol=1e-10`` with recomputed residuals. Each
  arm runs at the loosest tolerance in 1e-2..1e-7 (half decades) that reaches 1e-4 on all
  five on every seed 0..R-1, bisected (geometrically, :data:`BISECT_ROUNDS` times) towards
  the half-decade above it that failed (PyHessian, whose runs are the longest, may get
  fewer seeds with ``--peer-repeats``); then each arm runs once more per seed at its
  setting, the arms alternated, for the table. curvlinops is first checked
  against the dense float64 Hessian of a small model without LayerNorm (and with it), and
  on the race model against our operator: an arm whose product is more than
  :data:`WRONG` off computes another matrix and is not raced (a row says so).
  hessian-eigenthings 1.0.0a5 races with its own ``HessianOperator`` (or ``GGNOperator``)
  on the module and its own ``lanczos`` (``which="LA"``, full re-orthogonalisation): it
  has no tolerance that stops it, only a number of steps (default 10), so its knob is the
  steps, searched on 10..320 and then bisected to the fewest that reach 1e-4 on every seed
  (a knowledge no user has: the peer's best case). One product of its operator is first
  compared with ours on the race model. ``--curvature ggn`` races on the GGN instead
  (ours: :class:`~landscape.curvature.ggn.GGNOperator` on the loss split at the logits;
  ARPACK on it; hessian-eigenthings' GGN), truth: float64 Lanczos on our GGN operator.
* ``slice``: a 21 x 21 grid on a filter-normalised random plane of a model of more than 1M
  parameters: ours (``loss_grid`` on the loss the library builds for a recorded model,
  per point and vmapped chunks) against tomgoldstein/loss-landscape's per-point loop
  (load the weights into the module with ``p.data = w + d``, evaluate the loss); each arm
  computes the whole grid in one call, as a user does, arms alternated in an order that
  rotates from repeat to repeat, after an untimed 3 x 3 warm-up of each; points per
  second of wall-clock and of the process's CPU time (less sensitive to other jobs on a
  shared machine).

    python bench/any_model.py --parts ratio,memory,eigen,slice [--repeats 3]
    python bench/any_model.py --parts eigen --eigen-d 16 --eigen-layers 1 --curvature ggn
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature.ggn import GGNOperator
from landscape.curvature.hessian import (
    HessianOperator,
    dense_hessian_reference,
    double_backward_attention,
)
from landscape.curvature.objective import has_tied_tensors
from landscape.curvature.spectral import hutchpp, lanczos

VOCAB = 256
TOLS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7)
TARGET = 1e-4
STEPS = (10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 160, 200, 240, 320)  # hessian-eigenthings
BISECT_ROUNDS = 3  # a tolerance arm's search: the half-decade grid, then 3 bisections
WRONG = 1e-8  # a peer's product further than this from ours computes another matrix
DTYPE = torch.float64  # of the eigen race: float32 products stall at 1.1e-4 there (measured)


# ----------------------------------------------------------------------------- the model


class GPT(nn.Module):
    """A pre-LN causal transformer from torch.nn layers (not this project's model)."""

    def __init__(self, d: int, layers: int, seq: int, vocab: int = VOCAB, norm: bool = True):
        super().__init__()
        heads = max(1, d // 32)
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq, d)
        self.h = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(layers))
        if not norm:  # no LayerNorm anywhere (main() turns the layers' fused path off,
            for layer in self.h:  # which would read norm1.eps)
                layer.norm1, layer.norm2 = nn.Identity(), nn.Identity()
        self.ln_f = nn.LayerNorm(d) if norm else nn.Identity()
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.wte(x) + self.wpe(torch.arange(t, device=x.device))
        for layer in self.h:
            h = layer(h, src_mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.ln_f(h))


def problem(d: int, layers: int, batch: int, seq: int, norm: bool = True, seed: int = 0,
            vocab: int = VOCAB):
    torch.manual_seed(seed)
    model = GPT(d, layers, seq, vocab=vocab, norm=norm).eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    tie = has_tied_tensors(model)  # as the library's loss functions do

    def loss_fn(params):
        buffers = dict(model.named_buffers())  # read now: the model may have been cast
        logits = functional_call(model, (dict(params), buffers), (inputs,), tie_weights=tie)
        return nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))

    params = {n: p.detach() for n, p in model.named_parameters()}
    return model, inputs, targets, loss_fn, params


def n_params(d: int, layers: int, seq: int) -> int:
    return sum(p.numel() for p in GPT(d, layers, seq).parameters())


def warm_start(model, inputs, targets, steps: int) -> None:
    """A few AdamW steps so that the Hessian is not that of an initialisation."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        logits = model(inputs)
        nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1)).backward()
        opt.step()
    model.eval()


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"<!-- {os.cpu_count()} cores, load average {load}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s) -->")


def med(xs):
    return statistics.median(xs)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ----------------------------------------------------------------------------- ratio

WIDTHS = (16, 48, 144, 480)  # 4 layers: P about 2.2e4, 1.4e5, 1.1e6, 1.1e7


def ratio_part(args) -> None:
    print(machine())
    print("| d | layers | P | gradient (ms) | HVP (ms) | HVP / gradient | operator build (ms) |")
    print("|---|---|---|---|---|---|---|")
    for d in args.widths:
        ratio_one(d, args)


def ratio_one(d: int, args) -> None:
    _, _, _, loss_fn, params = problem(d, 4, args.batch, args.seq)
    names = list(params)

    def gradient():
        leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        torch.autograd.grad(loss_fn(leaves), [leaves[n] for n in names])

    build_s, op = timed(lambda: HessianOperator(loss_fn, params))
    gen = torch.Generator().manual_seed(0)
    vs = [torch.randn(op.dim, generator=gen) for _ in range(args.calls)]
    gradient()
    op.matvec(vs[0])  # warm-up of both
    ratios, gs, hs = [], [], []
    for _ in range(args.repeats):
        g_t, h_t = [], []
        for v in vs:  # interleaved
            g_t.append(timed(gradient)[0])
            h_t.append(timed(lambda v=v: op.matvec(v))[0])
        gs.append(med(g_t))
        hs.append(med(h_t))
        ratios.append(hs[-1] / gs[-1])
    print(f"| {d} | 4 | {op.dim:,} | {1e3 * med(gs):.1f} | {1e3 * med(hs):.1f} | "
          f"**{med(ratios):.2f}x** ({', '.join(f'{r:.2f}' for r in ratios)}) | "
          f"{1e3 * build_s:.0f} |", flush=True)


# ----------------------------------------------------------------------------- memory


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


class _Stages:
    """Peak resident memory per stage (Linux: ``VmHWM``, reset through ``clear_refs``).

    Where the high-water mark cannot be reset, one stage covers everything (``ru_maxrss``).
    """

    def __init__(self):
        self.base, self.peaks = self._status("VmRSS"), []
        self.resettable = self._reset()

    @staticmethod
    def _status(key: str) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return _maxrss_bytes()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def mark(self, name: str) -> None:
        if self.resettable:
            self.peaks.append((name, self._status("VmHWM")))
            self._reset()

    def report(self) -> str:
        peak = max([p for _, p in self.peaks] or [_maxrss_bytes()])
        stages = ";".join(f"{n}={(p - self.base) / 2**20:.0f}" for n, p in self.peaks)
        return f"{self.base} {peak} {stages or '-'}"


def memory_child(what: str, d: int, batch: int, seq: int) -> None:
    """Runs in a fresh process: prints 'base peak stages' (bytes; stages: MiB above base)."""
    import landscape.curvature.spectral as sp

    model, inputs, targets, loss_fn, params = problem(d, 4, batch, seq)
    st = _Stages()
    if what == "train":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        opt.zero_grad()
        logits = model(inputs)
        st.mark("forward")
        nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1)).backward()
        st.mark("backward")
        opt.step()
        st.mark("AdamW")
    else:
        op = HessianOperator(loss_fn, params)
        st.mark("graph")
        res = lanczos(op, k_top=5, tol=1e-4, max_steps=min(op.dim, 300))
        st.mark(f"lanczos({res.steps} steps, basis {res.max_basis or res.steps} "
                f"in {res.basis_storage})")
        part = sp._hutchinson_part

        def marked(*args, **kw):  # the low-rank part of Hutch++ is done, then its probes
            st.mark("hutch++ low rank")
            return part(*args, **kw)
        sp._hutchinson_part = marked
        hutchpp(op, 20 + 5, basis=res.top_vectors)
        sp._hutchinson_part = part
        st.mark("hutch++ probes")
    print(st.report())


def memory_part(args) -> None:
    print(machine())
    print("| d | P | batch x seq | baseline (MiB) | training step (MiB above) | probe (MiB above) "
          "| probe / step | peaks (MiB, step / probe) |")
    print("|---|---|---|---|---|---|---|---|")
    for d in args.widths:
        out = {"train": [], "probe": []}
        stages = {}
        for _ in range(args.repeats):
            for what in ("train", "probe"):
                res = subprocess.run([sys.executable, __file__, "--child", what, "--d", str(d),
                                      "--batch", str(args.batch), "--seq", str(args.seq)],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
                base, peak, stages[what] = res.stdout.strip().splitlines()[-1].split(maxsplit=2)
                out[what].append((int(base), int(peak)))
        mib = 2**20
        tr = med([p - b for b, p in out["train"]])
        pr = med([p - b for b, p in out["probe"]])
        base = med([b for b, _ in out["train"] + out["probe"]])
        print(f"| {d} | {n_params(d, 4, args.seq):,} | {args.batch} x {args.seq} | "
              f"{base / mib:.0f} | {tr / mib:.0f} | {pr / mib:.0f} | **{pr / tr:.2f}x** | "
              f"{med([p for _, p in out['train']]) / mib:.0f} / "
              f"{med([p for _, p in out['probe']]) / mib:.0f} |", flush=True)
        print(f"<!-- d {d}, peak of each stage in MiB above the baseline (last repeat): "
              f"step {stages['train']}; probe {stages['probe']} -->", flush=True)


# ----------------------------------------------------------------------------- eigen


class ScipyOp:
    """Our operator as a scipy LinearOperator (in its dtype; float64 arrays for ARPACK)."""

    def __init__(self, op):
        from scipy.sparse.linalg import LinearOperator

        self.op = op
        self.lin = LinearOperator((op.dim, op.dim), matvec=self._mv, dtype=np.float64)

    def _mv(self, x):
        v = torch.as_tensor(np.asarray(x).reshape(-1), dtype=op_dtype(self.op))
        return self.op.matvec(v).double().numpy()


def op_dtype(op):
    return op.dtype


class _Counted:
    def __init__(self, lin):
        from scipy.sparse.linalg import LinearOperator

        self.n = 0

        def mv(x):
            self.n += 1 if np.ndim(x) == 1 or x.shape[1] == 1 else x.shape[1]
            return lin @ x

        self.lin = LinearOperator(lin.shape, matvec=mv, matmat=mv, dtype=lin.dtype)


def rel_errors(values, truth) -> np.ndarray:
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    return np.abs(v - truth) / np.abs(truth)


def arm_ours(make_op, tol, seed, basis="auto"):
    def go():
        op = make_op()
        res = lanczos(op, k_top=5, tol=tol, seed=seed, basis_storage=basis)
        return res.top_values, res.n_matvec, res.thick_restarts
    s, (vals, n, restarts) = timed(go)
    return {"values": vals, "hvp": n, "s": s, "restarts": restarts}


def arm_eigsh(make_op, tol, seed):
    from scipy.sparse.linalg import eigsh

    def go():
        op = make_op()
        v0 = np.random.default_rng(seed).standard_normal(op.dim)
        vals = eigsh(ScipyOp(op).lin, k=5, which="LA", tol=tol, v0=v0,
                     return_eigenvectors=False)
        return vals, op.n_matvec
    s, (vals, n) = timed(go)
    return {"values": vals, "hvp": n, "s": s}


def arm_pyhessian(model, inputs, targets, tol, seed, max_iter):
    from landscape.probe.pyhessian_backend import pyhessian_backend
    from landscape.train.tasks.base import Split

    class Loops(nn.Module):  # the adapter passes loops=...
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, loops=None):
            return self.m(x)

    def go():
        with double_backward_attention():
            res = pyhessian_backend(Loops(model), Split(inputs, targets), top_n=5, tol=tol,
                                    max_iter=max_iter, trace=False, seed=seed)
        return res.eigenvalues, res.n_hvp_eigen
    s, (vals, n) = timed(go)
    return {"values": vals, "hvp": n, "s": s}


class _Flat(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        out = self.m(x)
        return out.reshape(-1, out.shape[-1])


def curvlinops_operator(model, inputs, targets, curvature: str = "hessian"):
    """curvlinops' Hessian or GGN operator on the one batch (the flattened logits)."""
    from curvlinops import GGNLinearOperator, HessianLinearOperator

    cls = HessianLinearOperator if curvature == "hessian" else GGNLinearOperator
    params = [p for p in model.parameters() if p.requires_grad]
    return cls(_Flat(model), nn.CrossEntropyLoss(), params, [(inputs, targets.reshape(-1))],
               check_deterministic=False)


def arm_curvlinops(model, inputs, targets, tol, seed, curvature="hessian"):
    from scipy.sparse.linalg import eigsh

    def go():
        with double_backward_attention():
            lin = _Counted(curvlinops_operator(model, inputs, targets, curvature).to_scipy())
            v0 = np.random.default_rng(seed).standard_normal(lin.lin.shape[0])
            vals = eigsh(lin.lin, k=5, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
        return vals, lin.n
    s, (vals, n) = timed(go)
    return {"values": vals, "hvp": n, "s": s}


class _Probe:
    """Counts the products a peer's operator is asked for (its ``matvec`` wrapped)."""

    def __init__(self, op):
        from hessian_eigenthings import LambdaOperator

        self.n = 0

        def mv(v):
            self.n += 1
            return op.matvec(v)

        self.op = LambdaOperator(mv, op.size, device=op.device, dtype=op.dtype)


def _ce(logits, targets):
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def eigenthings_operator(model, inputs, targets, curvature: str):
    """hessian-eigenthings' own Hessian or GGN operator on the one batch (its model API)."""
    import hessian_eigenthings as he

    data = [(inputs, targets)]
    if curvature == "hessian":
        return he.HessianOperator(model, data, lambda m, b: _ce(m(b[0]), b[1]))
    return he.GGNOperator(model, data, lambda m, b: m(b[0]), lambda out, b: _ce(out, b[1]))


def arm_eigenthings(model, inputs, targets, steps, seed, curvature):
    """hessian-eigenthings 1.0.0a5: its operator and its Lanczos run for ``steps`` steps.

    Its Lanczos takes a fixed number of steps (default ``2 k = 10``) and no tolerance that
    stops it; full re-orthogonalisation asked for at every length (its default turns it off
    beyond 50 steps, where ghost copies of the top eigenvalue then crowd the top five).
    """
    import hessian_eigenthings as he

    def go():
        with double_backward_attention():  # its GGN runs forward-mode AD through attention
            counted = _Probe(eigenthings_operator(model, inputs, targets, curvature))
            res = he.lanczos(counted.op, k=5, max_iter=steps, which="LA", seed=seed,
                             reorthogonalize=True)
        return res.eigenvalues.detach().double().numpy(), counted.n
    s, (vals, n) = timed(go)
    return {"values": vals, "hvp": n, "s": s}


def our_operator(loss_fn, params, split, curvature: str):
    """Our Hessian or GGN operator, float64."""
    if curvature == "hessian":
        return HessianOperator(loss_fn, params, dtype=DTYPE)
    return GGNOperator(split, params, dtype=DTYPE)


def our_split(model, inputs, targets):
    """The loss split at the logits, as the library builds it for a recorded model."""
    from landscape.runs.own_models import make_split_objective

    return make_split_objective(model, "next_token", "pair",
                                {"inputs": inputs.numpy(), "targets": targets.numpy()},
                                trust_code=False)


def check_curvlinops(args) -> None:
    """curvlinops' Hessian against the dense float64 truth, without and with LayerNorm."""
    with double_backward_attention():  # its products run forward-mode AD through attention
        _check_curvlinops()


def _check_curvlinops() -> None:
    model, inputs, targets, loss_fn, params = problem(4, 1, 2, 4, norm=False, vocab=5)
    model = model.double()
    params64 = {n: p.detach() for n, p in model.named_parameters()}
    dense = dense_hessian_reference(loss_fn, params64)
    lin = curvlinops_operator(model, inputs, targets).to_scipy()
    v = np.random.default_rng(0).standard_normal(dense.shape[0])
    err = np.linalg.norm(lin @ v - dense.numpy() @ v) / np.linalg.norm(dense.numpy() @ v)
    print(f"<!-- curvlinops vs dense float64 Hessian, no LayerNorm, P = {dense.shape[0]}: "
          f"relative error of a product {err:.1e} -->")
    model, inputs, targets, loss_fn, params = problem(4, 1, 2, 4, norm=True, vocab=5)
    model = model.double()
    params64 = {n: p.detach() for n, p in model.named_parameters()}
    dense = dense_hessian_reference(loss_fn, params64).numpy()
    lin = curvlinops_operator(model, inputs, targets).to_scipy()
    v = np.random.default_rng(0).standard_normal(dense.shape[0])
    err = np.linalg.norm(lin @ v - dense @ v) / np.linalg.norm(dense @ v)
    print(f"<!-- curvlinops vs dense float64 Hessian, with LayerNorm, P = {dense.shape[0]}: "
          f"relative error of a product {err:.1e} -->")


def eigen_part(args) -> None:
    print(machine())
    curvature = args.curvature
    curv = not args.arms or "curvlinops" in args.arms
    if curv and curvature == "hessian":  # its checks need it installed
        check_curvlinops(args)
    model, inputs, targets, loss_fn, params = problem(args.eigen_d, args.eigen_layers,
                                                      args.batch, args.seq,
                                                      norm=not args.no_norm)
    warm_start(model, inputs, targets, 20)
    model = model.to(DTYPE)  # every arm in float64 (the peers use the module)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    split = our_split(model, inputs, targets) if curvature == "ggn" else None

    def make_op():
        return our_operator(loss_fn, params, split, curvature)

    s, truth_res = timed(lambda: lanczos(make_op(), k_top=5, tol=1e-10, max_steps=400,
                                         exact_residuals=True))
    truth = truth_res.top_values
    print(f"<!-- {curvature}, P = {sum(p.numel() for p in params.values()):,}; truth: float64 "
          f"Lanczos on our {curvature} operator, {truth_res.n_matvec} products "
          f"({truth_res.thick_restarts} thick restarts, basis cap {truth_res.max_basis}), "
          f"{s:.0f} s, largest recomputed residual {truth_res.top_residuals.max():.1e}; top-5 "
          f"{np.array2string(truth, precision=6)} -->")
    v = np.random.default_rng(1).standard_normal(sum(p.numel() for p in params.values()))
    ours = make_op().matvec(torch.as_tensor(v)).numpy()
    curv_off = 0.0
    if curv:  # one product of ours against curvlinops' on the race model
        with double_backward_attention():  # the race model: curvlinops against ours
            lin_v = curvlinops_operator(model, inputs, targets, curvature).to_scipy() @ v
        curv_off = float(np.linalg.norm(lin_v - ours) / np.linalg.norm(ours))
        print(f"<!-- curvlinops {curvature} vs our operator on the race model (both float64): "
              f"relative difference of a product {curv_off:.1e} -->", flush=True)
    if not args.arms or "hessian-eigenthings" in args.arms:
        with double_backward_attention():
            he_v = eigenthings_operator(model, inputs, targets, curvature).matvec(
                torch.as_tensor(v)).detach().numpy()
        print(f"<!-- hessian-eigenthings {curvature} operator vs ours on the race model (both "
              f"float64): relative difference of a product "
              f"{np.linalg.norm(he_v - ours) / np.linalg.norm(ours):.1e} -->", flush=True)
    arms = {
        "ours: Lanczos" + ("" if args.basis == "auto" else f", basis in {args.basis}"):
            lambda tol, seed: arm_ours(make_op, tol, seed, args.basis),
        "scipy eigsh (ARPACK), same operator": lambda tol, seed: arm_eigsh(make_op, tol, seed),
        "hessian-eigenthings 1.0.0a5": lambda steps, seed: arm_eigenthings(
            model, inputs, targets, steps, seed, curvature),
    }
    curv_name = ("curvlinops HessianLinearOperator + eigsh" if curvature == "hessian"
                 else "curvlinops GGNLinearOperator + eigsh")
    if curv and curv_off <= WRONG:
        arms[curv_name] = lambda tol, seed: arm_curvlinops(model, inputs, targets, tol, seed,
                                                           curvature)
    if curvature == "hessian":
        arms["PyHessian 0.1"] = lambda tol, seed: arm_pyhessian(model, inputs, targets, tol,
                                                                seed, args.max_iter)
    if args.arms:
        keep = [a.strip() for a in args.arms.split(",")]
        arms = {k: v for k, v in arms.items() if any(k.startswith(x) for x in keep)}
    tuned, rows = {}, {}

    def seeds_of(name: str) -> int:
        return min(args.repeats, args.peer_repeats) if name == "PyHessian 0.1" else args.repeats

    for name, arm in arms.items():
        knobs = STEPS if name.startswith("hessian-eigenthings") else TOLS
        if args.tol_ours and name.startswith("ours"):  # a fixed tolerance, no search
            knobs = (args.tol_ours,)
        search = Search(name, arm, truth, seeds_of(name))
        passing = next((k for k in knobs if search.passes(k)), None)
        if passing is None:
            continue
        if knobs is STEPS and passing > STEPS[0]:
            passing = fewest_steps(search, passing)
        elif knobs is TOLS and passing < TOLS[0]:
            passing = loosest_tol(search, passing)
        tuned[name] = passing
    for seed in range(args.repeats):  # the timed runs: every arm at its knob, alternated
        for name in tuned:
            if seed < seeds_of(name):
                out = arms[name](tuned[name], seed)
                out["err"] = rel_errors(out["values"], truth).max()
                rows.setdefault(name, []).append(out)
    print(f"| arm ({curvature}) | tol or steps | products | seconds | worst rel. error | "
          "reached 1e-4 | products / ours | seconds / ours |")
    print("|---|---|---|---|---|---|---|---|")
    ours = next((v for k, v in rows.items() if k.startswith("ours")), None)
    for name, outs in rows.items():
        hv = [o["hvp"] for o in outs]
        sec = [o["s"] for o in outs]
        ratio_h = [o["hvp"] / u["hvp"] for o, u in zip(outs, ours)] if ours else [math.nan]
        ratio_s = [o["s"] / u["s"] for o, u in zip(outs, ours)] if ours else [math.nan]
        # (zip pairs each run with ours of the same seed, run in the same repeat)
        reached = sum(o["err"] <= TARGET for o in outs)
        print(f"| {name} | {_knob(name, tuned[name])} | {med(hv):.0f} | {med(sec):.1f} | "
              f"{max(o['err'] for o in outs):.1e} | {reached}/{len(outs)} | "
              f"**{med(ratio_h):.2f}x** | **{med(ratio_s):.2f}x** |")
    if curv and curv_off > WRONG:
        print(f"| {curv_name} | not raced: its product is {curv_off:.1e} off the "
              f"{curvature} on this model | | | | | | |")
    for name in arms:
        if name not in tuned:
            knobs = (f"{STEPS[0]}..{STEPS[-1]} steps" if name.startswith("hessian-eigenthings")
                     else f"{TOLS[0]:.0e}..{TOLS[-1]:.0e}")
            print(f"| {name} | none in {knobs} reached 1e-4 | | | | | | |")


class Search:
    """Whether an arm at a knob reaches 1e-4 on every seed of the race (seeds 0..n-1).

    A knob passes only if all seeds reach the target: tuned on seed 0 alone, a knob at the
    edge of seed 0's convergence failed other seeds (hessian-eigenthings' steps and our
    tolerance alike, 1-2 of 3 seeds in the first runs). Seeds run in order and the first
    failure ends the trial.
    """

    def __init__(self, name: str, arm, truth, n_seeds: int):
        self.name, self.arm, self.truth, self.n_seeds = name, arm, truth, n_seeds

    def passes(self, knob) -> bool:
        for seed in range(self.n_seeds):
            out = self.arm(knob, seed)
            err = rel_errors(out["values"], self.truth).max()
            print(f"<!-- search {self.name}: {_knob(self.name, knob)}, seed {seed}: "
                  f"{out['hvp']} products, {out['s']:.1f} s, worst error {err:.1e}"
                  + (f", {out['restarts']} thick restarts" if "restarts" in out else "")
                  + " -->", flush=True)
            if not err <= TARGET:
                return False
        return True


def fewest_steps(search: Search, passing: int) -> int:
    """Bisect hessian-eigenthings' steps down to the fewest that reach 1e-4 on every seed.

    With one seed its first ``m`` steps are the same in every run, so the fewest is
    well defined: the peer gets exactly the steps it needs, which a user would not know.
    """
    lo = max(s for s in STEPS if s < passing)  # failed in the search
    while passing - lo > 1:
        mid = (lo + passing) // 2
        if search.passes(mid):
            passing = mid
        else:
            lo = mid
    return passing


def loosest_tol(search: Search, passing: float, rounds: int = BISECT_ROUNDS) -> float:
    """Bisect a tolerance (geometrically) up towards the half-decade above that failed.

    The tolerance arms' counterpart of :func:`fewest_steps`: each arm gets its best case
    at a resolution of about ``3^(1/2^rounds)``, not only the half-decade grid.
    """
    fail = min(t for t in TOLS if t > passing)
    for _ in range(rounds):
        mid = math.sqrt(fail * passing)
        if search.passes(mid):
            passing = mid
        else:
            fail = mid
    return passing


def _knob(name: str, knob) -> str:
    """A tolerance, or hessian-eigenthings' number of Lanczos steps."""
    return f"{knob} steps" if name.startswith("hessian-eigenthings") else f"tol {knob:.1e}"


# ----------------------------------------------------------------------------- slice


def slice_part(args) -> None:
    from landscape.geometry.directions import random_plane
    from landscape.geometry.slices import loss_grid, make_axis
    from landscape.runs.own_models import make_custom_loss_fn

    print(machine())
    model, inputs, targets, _, params = problem(args.eigen_d, args.eigen_layers, args.batch,
                                                args.seq)
    # ours: the loss the library builds for a recorded model (next-token, mean over tokens)
    loss_fn = make_custom_loss_fn(model, "next_token", "pair",
                                  {"inputs": inputs.numpy(), "targets": targets.numpy()},
                                  trust_code=False)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    plane = random_plane(params, 0)
    axis = make_axis(-1.0, 1.0, args.grid)
    n = args.grid

    def peer_grid(axis=axis):
        """loss-landscape's way: p.data = w + a x + b y in the module, then evaluate."""
        out = []
        with torch.no_grad():
            for a in axis:
                for b in axis:
                    for name, p in model.named_parameters():
                        p.data = params[name] + a * plane.x[name] + b * plane.y[name]
                    logits = model(inputs)
                    out.append(float(nn.functional.cross_entropy(
                        logits.reshape(-1, VOCAB), targets.reshape(-1))))
            for name, p in model.named_parameters():
                p.data = params[name].clone()
        return np.array(out).reshape(len(axis), len(axis))

    def ours_grid(batch_points, axis=axis):
        return loss_grid(loss_fn, params, plane, axis, axis, batch_points=batch_points)

    arms = {"ours per point (batch_points=1)": lambda **kw: ours_grid(1, **kw),
            "ours vmapped chunks of 4 points": lambda **kw: ours_grid(4, **kw),
            "peer: loss-landscape's per-point loop": peer_grid}
    if args.arms:
        keep = [a.strip() for a in args.arms.split(",")]
        arms = {k: v for k, v in arms.items() if any(k.startswith(x) for x in keep)}
    for arm in arms.values():  # warm-up, untimed: first touches, lazy initialisation
        arm(axis=make_axis(-1.0, 1.0, 3))
    pps, cpu = {k: [] for k in arms}, {k: [] for k in arms}
    grids = {}
    for r in range(args.repeats):
        order = list(arms)[r % len(arms):] + list(arms)[: r % len(arms)]  # rotating
        for k in order:
            c0 = time.process_time()
            t, grids[k] = timed(arms[k])
            pps[k].append(n * n / t)
            cpu[k].append(n * n / (time.process_time() - c0))
    ref = grids["peer: loss-landscape's per-point loop"]
    print(f"<!-- P = {sum(p.numel() for p in params.values()):,}, {n} x {n} grid, batch "
          f"{args.batch} x {args.seq}; largest difference of our grid from the peer's "
          f"{np.abs(grids['ours per point (batch_points=1)'] - ref).max():.1e} -->")
    print("| arm | points/s (median) | per repeat | / peer (median of per-repeat ratios) "
          "| points per CPU-second (median) | / peer, CPU |")
    print("|---|---|---|---|---|---|")
    peer, peer_cpu = pps["peer: loss-landscape's per-point loop"], cpu[
        "peer: loss-landscape's per-point loop"]
    for k, v in pps.items():
        r = [x / y for x, y in zip(v, peer)]
        rc = [x / y for x, y in zip(cpu[k], peer_cpu)]
        print(f"| {k} | {med(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} | "
              f"**{med(r):.3f}** | {med(cpu[k]):.2f} | **{med(rc):.3f}** |")


# ----------------------------------------------------------------------------- main


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="ratio,memory,eigen,slice")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--calls", type=int, default=5, help="products per arm per repeat (ratio)")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--eigen-d", type=int, default=128)
    ap.add_argument("--eigen-layers", type=int, default=5)
    ap.add_argument("--max-iter", type=int, default=1000, help="PyHessian maxIter")
    ap.add_argument("--arms", default="", help="eigen, slice: only the arms whose names start so "
                    "(comma-separated: ours,scipy,curvlinops,PyHessian,hessian-eigenthings)")
    ap.add_argument("--tol-ours", type=float, default=0.0,
                    help="eigen: run ours at this tolerance instead of searching for one")
    ap.add_argument("--peer-repeats", type=int, default=3,
                    help="runs of PyHessian in the eigen race (its runs are the longest)")
    ap.add_argument("--curvature", choices=("hessian", "ggn"), default="hessian",
                    help="eigen: race on the Hessian or on the GGN (ours, ARPACK on our "
                         "operator, hessian-eigenthings)")
    ap.add_argument("--no-norm", action="store_true",
                    help="race on the model without LayerNorm (where curvlinops is right)")
    ap.add_argument("--basis", choices=("auto", "memory", "file"), default="auto",
                    help="eigen: where our Lanczos keeps its basis (auto: the library's "
                    "default, a temporary file above 256 MiB)")
    ap.add_argument("--grid", type=int, default=21)
    ap.add_argument("--child", default="")
    ap.add_argument("--d", type=int, default=0)
    args = ap.parse_args()
    args.widths = [int(w) for w in str(args.widths).split(",")]
    return args


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    # nn.TransformerEncoderLayer's fused inference path: off, so that every arm evaluates
    # the same operations (and the model without LayerNorm can run at all)
    torch.backends.mha.set_fastpath_enabled(False)
    if args.child:
        memory_child(args.child, args.d, args.batch, args.seq)
        return
    parts = {"ratio": ratio_part, "memory": memory_part, "eigen": eigen_part,
             "slice": slice_part}
    for name in args.parts.split(","):
        print(f"\n<!-- part {name}: python bench/any_model.py {' '.join(sys.argv[1:])} -->")
        parts[name](args)


if __name__ == "__main__":
    main()
