"""Curvature engine against PyHessian 0.1, on the same checkpoint and probe set.

Five parts, each printing Markdown table rows for BENCHMARKS.md (medians over repeats,
ratios formed inside each repeat, arms alternated; the machine is shared and noisy):

* ``eigen``: the top-5 eigenvalues to a relative error of 1e-4 on every one of the five.
  Truth: float64 Lanczos with ``tol=1e-10`` (its residuals recomputed by explicit
  products), cross-checked against the dense spectrum where the ``dense`` part builds it.
  Ours: ``lanczos(HessianOperator(...), k_top=5, tol=t)`` (float32); PyHessian:
  ``hessian(...).eigenvalues(top_n=5, tol=t, maxIter=...)`` through
  :func:`landscape.probe.pyhessian_backend.pyhessian_backend`. Each arm runs at the loosest ``t`` in
  1e-3..1e-8 that reaches 1e-4 (searched with seed 0, then timed with seeds 0..R-1);
  PyHessian is also run at its default (``tol=1e-3``, ``maxIter=100``) to report its error
  and whether its order is wrong.
* ``trace``: Hutch++ (ours) with a budget of B products against Hutchinson (PyHessian's
  ``trace``, and our ``hutchinson`` as a control): Hutchinson needs ``(sigma / s)^2``
  products to reach the standard error ``s`` that Hutch++ reports with B, where ``sigma`` is
  the per-probe standard deviation of ``v^T H v`` (measured from N probes).
* ``cost``: one Hessian-vector product against one gradient (forward and backward on fresh
  leaves), interleaved; also the create-graph gradient that builds the operator.
* ``dense``: the dense Hessian by ``dense_matrix`` (float32 columns) against its bound
  P x (one HVP; HVPs sampled all through the build, one after every 64 columns, their time
  subtracted), then float64 ``eigvalsh``.
* ``sizes``: one HVP at d_model 16/32/64 (P ~ 2k, 6.5k, 21k; trained weights at 32, a seeded
  initialisation otherwise) and ``eigvalsh`` of random symmetric matrices, to say which
  sizes fit which time budget.

Checkpoints: the default Single-Attn and Looped-Attn recipes trained for ``--epochs``
epochs (10 by default) into ``--ckpt-dir`` unless already there.

    python bench/hessian.py [--parts eigen,trace,cost,dense,sizes] [--models single,looped]
                            [--repeats 3] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from landscape.curvature.hessian import HessianOperator
from landscape.curvature.spectral import (
    SymmetricOperator,
    dense_matrix,
    hutchinson,
    hutchpp,
    lanczos,
)
from landscape.probe.pyhessian_backend import pyhessian_backend
from landscape.runs.run import Run
from landscape.train.archs import RECIPES
from landscape.train.model import LoopedTransformer, ModelConfig
from landscape.train.recipe import load_recipe
from landscape.train.split_loss import make_loss_fn
from landscape.train.trainer import train

ROOT = Path(__file__).parents[1]
TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
TARGET = 1e-4


# ----------------------------------------------------------------------------- helpers


def machine(threads: int) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"<!-- {os.cpu_count()} cores, load average {load}, torch {torch.__version__}, "
            f"{threads} torch thread(s) -->")


def checkpoint(kind: str, ckpt_dir: Path, epochs: int, threads: int) -> Run:
    """The trained checkpoint of a default recipe, trained here if missing."""
    path = ckpt_dir / f"bench_{kind}.h5"
    if not path.exists():
        recipe = load_recipe(ROOT / "models" / f"{RECIPES[kind]}.toml",
                             overrides=[{"train": {"epochs": epochs, "threads": threads}}])
        train(recipe, path)
    return Run.open(path)


def rel_errors(values, truth: np.ndarray) -> np.ndarray:
    """Relative errors of ``values`` (sorted descending, as found) against ``truth``."""
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    return np.abs(v - truth) / np.abs(truth)


def order_wrong(values) -> bool:
    v = np.asarray(values, dtype=np.float64)
    return bool((np.diff(v) > 0).any())


def med(xs) -> float:
    return statistics.median(xs)


# ----------------------------------------------------------------------------- eigen


def ours_top5(loss_fn, params, tol: float, seed: int) -> dict:
    t0 = time.perf_counter()
    op = HessianOperator(loss_fn, params)
    res = lanczos(op, k_top=5, tol=tol, seed=seed)
    return {"values": res.top_values, "hvp": res.n_matvec, "s": time.perf_counter() - t0}


def peer_top5(model, split, tol: float, max_iter: int, seed: int) -> dict:
    t0 = time.perf_counter()
    res = pyhessian_backend(model, split, top_n=5, tol=tol, max_iter=max_iter, trace=False,
                            seed=seed)
    return {"values": res.eigenvalues, "hvp": res.n_hvp_eigen, "s": time.perf_counter() - t0}


def truth_top5(loss_fn, params) -> tuple[np.ndarray, dict]:
    t0 = time.perf_counter()
    op = HessianOperator(loss_fn, params, dtype=torch.float64)
    res = lanczos(op, k_top=5, tol=1e-10, max_steps=min(op.dim, 400), exact_residuals=True)
    info = {"hvp": res.n_matvec, "s": time.perf_counter() - t0,
            "res": float(res.top_residuals.max()), "converged": res.converged}
    return res.top_values, info


def search(run_arm, truth) -> tuple[float | None, dict | None]:
    """The loosest tolerance in TOLS whose result reaches TARGET on all five."""
    for tol in TOLS:
        out = run_arm(tol)
        if rel_errors(out["values"], truth).max() <= TARGET:
            return tol, out
    return None, None


def eigen_part(kind: str, run: Run, args) -> None:
    loss_fn, params = run.loss_fn("probe"), run.params()
    model, split = run.model(), run.split("probe")
    truth, tinfo = truth_top5(loss_fn, params)
    print(f"<!-- {kind}: truth = float64 Lanczos tol 1e-10, {tinfo['hvp']} HVPs, "
          f"{tinfo['s']:.1f} s, max explicit residual {tinfo['res']:.1e}; top-5 "
          f"{np.array2string(truth, precision=6)} -->")
    t_ours, _ = search(lambda t: ours_top5(loss_fn, params, t, 0), truth)
    t_peer, _ = search(lambda t: peer_top5(model, split, t, args.peer_max_iter, 0), truth)
    rows = {"ours": [], "peer": [], "default": []}
    for r in range(args.repeats):
        arms = [("ours", functools.partial(ours_top5, loss_fn, params, t_ours, r)),
                ("peer", functools.partial(peer_top5, model, split, t_peer,
                                           args.peer_max_iter, r)),
                ("default", functools.partial(peer_top5, model, split, 1e-3, 100, r))]
        if r % 2:
            arms.reverse()
        for name, fn in arms:
            if name == "peer" and t_peer is None:
                continue
            out = fn()
            out["err"] = rel_errors(out["values"], truth).max()
            out["order"] = order_wrong(out["values"])
            rows[name].append(out)
    report_eigen(kind, t_ours, t_peer, args.peer_max_iter, rows)


def report_eigen(kind, t_ours, t_peer, max_iter, rows) -> None:
    def line(name, label, tol, mi):
        outs = rows[name]
        errs = [o["err"] for o in outs]
        wrong = sum(o["order"] for o in outs)
        ok = sum(e <= TARGET for e in errs)
        print(f"| {kind} | {label} | {tol:.0e} | {mi} | {med([o['hvp'] for o in outs]):.0f} | "
              f"{med([o['s'] for o in outs]):.2f} | {max(errs):.1e} | {ok}/{len(outs)} | "
              f"{wrong}/{len(outs)} |")

    line("ours", "ours: Lanczos", t_ours, "-")
    if t_peer is None:
        print(f"| {kind} | PyHessian | none in 1e-3..1e-8 reaches 1e-4 | {max_iter} | | | | | |")
    else:
        line("peer", "PyHessian (tuned tol)", t_peer, max_iter)
    line("default", "PyHessian (default)", 1e-3, 100)
    if t_peer is not None:
        hv = [p["hvp"] / o["hvp"] for o, p in zip(rows["ours"], rows["peer"])]
        wall = [p["s"] / o["s"] for o, p in zip(rows["ours"], rows["peer"])]
        print(f"| {kind} | **PyHessian / ours** | | | **{med(hv):.1f}x** | **{med(wall):.1f}x** "
              f"| | | |")


EIGEN_HEADER = ("| model | arm | tol | maxIter | HVPs | seconds | worst rel. error | "
                "reached 1e-4 | order wrong |\n|---|---|---|---|---|---|---|---|---|")


# ----------------------------------------------------------------------------- trace


def trace_part(kind: str, run: Run, args) -> None:
    loss_fn, params = run.loss_fn("probe"), run.params()
    model, split = run.model(), run.split("probe")
    n = args.hutchinson_probes
    ratios = {b: [] for b in args.budgets}
    stderrs = {b: [] for b in args.budgets}
    estimates = {b: [] for b in args.budgets}
    sig_peer, sig_ours, per_hvp = [], [], []
    for r in range(args.repeats):
        op = HessianOperator(loss_fn, params)
        t0 = time.perf_counter()
        peer = pyhessian_backend(model, split, top_n=1, max_iter=1, trace=True,
                                 trace_max_iter=n, trace_tol=0.0, seed=r)
        per_hvp.append((time.perf_counter() - t0) / (peer.n_hvp_trace + peer.n_hvp_eigen))
        sp = float(np.std(peer.trace_samples, ddof=1))
        so = float(np.std(hutchinson(op, n, seed=r).samples, ddof=1))
        sig_peer.append(sp)
        sig_ours.append(so)
        for b in args.budgets:
            est = hutchpp(op, b, seed=r)
            stderrs[b].append(est.stderr)
            estimates[b].append(est.estimate)
            ratios[b].append((sp / est.stderr) ** 2 / b)
    for b in args.budgets:
        s = med(stderrs[b])
        print(f"| {kind} | {b} | {med(estimates[b]):.1f} | {s:.2f} | {med(sig_peer):.1f} | "
              f"{med(sig_ours):.1f} | {(med(sig_peer) / s) ** 2:.0f} | **{med(ratios[b]):.1f}x** |")
    print(f"<!-- {kind}: PyHessian trace: {1e3 * med(per_hvp):.0f} ms per HVP; Hutchinson "
          f"sigma from {n} probes per repeat -->")


TRACE_HEADER = ("| model | Hutch++ budget B (HVPs) | Hutch++ estimate | Hutch++ stderr s | "
                "Hutchinson sigma/probe (PyHessian) | (ours, control) | Hutchinson HVPs for s | "
                "ratio (HVPs / B) |\n|---|---|---|---|---|---|---|---|")


# ----------------------------------------------------------------------------- cost


def cost_part(kind: str, run: Run, args) -> None:
    loss_fn, params = run.loss_fn("probe"), run.params()
    gen = torch.Generator().manual_seed(0)
    ratios, grads, hvps, builds = [], [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        op = HessianOperator(loss_fn, params)
        builds.append(time.perf_counter() - t0)
        v = torch.randn(op.dim, generator=gen)
        op.matvec(v)  # warm-up
        tg, th = [], []
        for _ in range(args.cost_calls):
            leaves = {k: x.detach().clone().requires_grad_(True) for k, x in params.items()}
            t0 = time.perf_counter()
            torch.autograd.grad(loss_fn(leaves), list(leaves.values()))
            tg.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            op.matvec(v)
            th.append(time.perf_counter() - t0)
        grads.append(med(tg))
        hvps.append(med(th))
        ratios.append(med(th) / med(tg))
    print(f"| {kind} | {1e3 * med(grads):.1f} | {1e3 * med(hvps):.1f} | **{med(ratios):.2f}x** | "
          f"{1e3 * med(builds):.1f} |")


COST_HEADER = ("| model | gradient (ms) | HVP (ms) | HVP / gradient | create-graph gradient "
               "(operator build, ms) |\n|---|---|---|---|---|")


# ----------------------------------------------------------------------------- dense


def hvp_seconds(op: HessianOperator, calls: int, seed: int = 0) -> list[float]:
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(seed))
    op.matvec(v)
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        op.matvec(v)
        out.append(time.perf_counter() - t0)
    return out


def sized_problem(run: Run, d_model: int, loops: int):
    """Loss and parameters of the default architecture at width ``d_model``.

    The trained checkpoint where it is that width; otherwise a seeded initialisation
    (the cost of a product does not depend on the weights' values).
    """
    if d_model == run.recipe.model.d_model:
        return run.loss_fn("probe", loops=loops), run.params()
    torch.manual_seed(0)
    cfg = ModelConfig(**{**vars(run.recipe.model), "d_model": d_model, "loops": loops})
    model = LoopedTransformer(cfg, int(run.task_attrs["vocab_size"]),
                              int(run.task_attrs["max_len"])).eval()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return make_loss_fn(model, run.split("probe")), params


class ProbedOperator(SymmetricOperator):
    """``op`` unchanged, plus one timed extra product after every ``matmat`` call.

    The extra products sample the cost of one HVP all through a dense build, under the
    same load as the build itself; their time is subtracted from the build's.
    """

    def __init__(self, op: HessianOperator):
        super().__init__(op.dim, op.dtype, op.device)
        self.op, self.samples, self.spent, self.columns = op, [], 0.0, 0.0
        self.gen = torch.Generator().manual_seed(1)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.op.matvec(v)

    def _matmat(self, vs: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.op.matmat(vs)
        self.columns += time.perf_counter() - t0
        t0 = time.perf_counter()
        v = torch.randn(self.dim, generator=self.gen).to(self.dtype)
        t1 = time.perf_counter()
        self.op.matvec(v)
        t2 = time.perf_counter()
        self.samples.append(t2 - t1)
        self.spent += t2 - t0
        return out


def dense_part(kind: str, run: Run, d_model: int, args) -> None:
    loss_fn, params = sized_problem(run, d_model, run.recipe.model.loops)
    op = ProbedOperator(HessianOperator(loss_fn, params))
    op.op.matvec(torch.ones(op.dim))  # warm-up
    t0 = time.perf_counter()
    mat = dense_matrix(op)
    t_dense = time.perf_counter() - t0 - op.spent
    t_hvp = med(op.samples)
    bound = op.dim * t_hvp
    mat64 = mat.double()
    del mat
    t0 = time.perf_counter()
    values = torch.linalg.eigvalsh(mat64).numpy()
    t_eig = time.perf_counter() - t0
    print(f"| {kind} | {d_model} | {op.dim} | {1e3 * t_hvp:.1f} | {bound:.0f} | {t_dense:.0f} | "
          f"**{t_dense / bound:.2f}x** | {t_eig:.1f} |")
    mean = float(np.mean(op.samples))
    print(f"<!-- {kind}: {len(op.samples)} HVPs timed during the build (one per 64 columns): "
          f"median {1e3 * t_hvp:.1f} ms (the bound above), mean {1e3 * mean:.1f} ms "
          f"(dense / (P x mean) = {t_dense / (op.dim * mean):.2f}x), quartiles "
          f"{1e3 * np.percentile(op.samples, 25):.0f}/{1e3 * np.percentile(op.samples, 75):.0f} "
          f"ms; inside op.matmat {op.columns:.0f} s ({1e3 * op.columns / op.dim:.1f} ms a "
          f"column), the rest of dense_matrix {t_dense - op.columns:.1f} s -->")
    if d_model == run.recipe.model.d_model:
        truth, _ = truth_top5(loss_fn, params)
        err = np.abs(values[::-1][:5] - truth) / np.abs(truth)
        print(f"<!-- {kind}: dense top-5 vs float64 Lanczos truth: worst rel. diff "
              f"{err.max():.1e}; exact trace {values.sum():.2f}; bottom-3 "
              f"{np.array2string(values[:3], precision=4)} -->")


DENSE_HEADER = ("| model | d_model | P | one HVP (ms) | bound P x HVP (s) | dense_matrix (s) | "
                "dense / bound | eigvalsh float64 (s) |\n|---|---|---|---|---|---|---|---|")


def sizes_part(run: Run, args) -> None:
    """HVP cost at each width and the time of one dense spectrum it implies."""
    eig = {}
    for p in args.eig_sizes:
        a = torch.randn(p, p, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        torch.linalg.eigvalsh(a + a.T)
        eig[p] = time.perf_counter() - t0
    big = max(eig)
    for d_model in args.widths:
        for kind, loops in (("single", 1), ("looped", 3)):
            loss_fn, params = sized_problem(run, d_model, loops)
            op = HessianOperator(loss_fn, params)
            t_hvp = med(hvp_seconds(op, 5))
            t_eig = eig.get(op.dim, eig[big] * (op.dim / big) ** 3)
            how = "measured" if op.dim in eig else f"n^3 from P={big}"
            total = op.dim * t_hvp + t_eig
            print(f"| {kind} | {d_model} | {op.dim} | {1e3 * t_hvp:.0f} | "
                  f"{op.dim * t_hvp / 60:.1f} | {t_eig:.0f} ({how}) | {total / 60:.1f} |")
    print(f"<!-- eigvalsh of random symmetric float64 matrices: "
          f"{', '.join(f'P={p}: {s:.1f} s' for p, s in eig.items())} -->")


SIZES_HEADER = ("| model | d_model | P | one HVP (ms) | P x HVP (min) | eigvalsh (s) | "
                "one exact spectrum (min) |\n|---|---|---|---|---|---|---|")


# ----------------------------------------------------------------------------- main


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="eigen,trace,cost,dense,sizes",
                    help="comma-separated: eigen, trace, cost, dense, sizes")
    ap.add_argument("--models", default="single,looped")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="one Hutch++ budget, fewer probes, the dense part at d_model=16")
    ap.add_argument("--epochs", type=int, default=10, help="training of missing checkpoints")
    ap.add_argument("--ckpt-dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--peer-max-iter", type=int, default=1000,
                    help="PyHessian maxIter per eigenvalue at the tuned tol")
    ap.add_argument("--budgets", default="30,60,120", help="Hutch++ budgets (HVPs)")
    ap.add_argument("--hutchinson-probes", type=int, default=100)
    ap.add_argument("--cost-calls", type=int, default=10)
    ap.add_argument("--dense-models", default="single",
                    help="models of the dense part (Looped-Attn at d_model=32 takes ~20 min)")
    ap.add_argument("--dense-width", type=int, default=None,
                    help="d_model of the dense part (default 32, 16 with --quick)")
    args = ap.parse_args()
    args.parts = args.parts.split(",")
    args.models = args.models.split(",")
    args.dense_models = args.dense_models.split(",")
    args.budgets = [int(b) for b in ("60" if args.quick else args.budgets).split(",")]
    if args.quick:
        args.hutchinson_probes = min(args.hutchinson_probes, 50)
    args.dense_width = args.dense_width or (16 if args.quick else 32)
    args.widths = (16, 32, 64)
    args.eig_sizes = (2240, 6528)
    return args


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    args.ckpt_dir.mkdir(parents=True, exist_ok=True)
    kinds = dict.fromkeys(args.models + (args.dense_models if "dense" in args.parts else []))
    runs = {k: checkpoint(k, args.ckpt_dir, args.epochs, args.threads) for k in kinds}
    print(f"<!-- python bench/hessian.py {' '.join(sys.argv[1:])} -->")
    parts = [("eigen", EIGEN_HEADER, eigen_part), ("trace", TRACE_HEADER, trace_part),
             ("cost", COST_HEADER, cost_part)]
    for name, header, fn in parts:
        if name in args.parts:
            print(f"\n{machine(args.threads)}\n{header}")
            for kind, run in runs.items():
                fn(kind, run, args)
                print(machine(args.threads), flush=True)
    if "dense" in args.parts:
        print(f"\n{machine(args.threads)}\n{DENSE_HEADER}")
        for kind in args.dense_models:
            dense_part(kind, runs[kind], args.dense_width, args)
            print(machine(args.threads), flush=True)
    if "sizes" in args.parts:
        print(f"\n{machine(args.threads)}\n{SIZES_HEADER}")
        sizes_part(next(iter(runs.values())), args)
        print(machine(args.threads), flush=True)


if __name__ == "__main__":
    main()
