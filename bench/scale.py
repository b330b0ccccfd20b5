"""Grid evaluation and Hessian top-k with 1 vs 2 processes (torch.distributed, gloo).

The default Looped-Attn model size (d_model 32, 2 heads, loops 3, about 6.5k parameters,
random weights) on a probe set of ``--probe`` random sequences of 48 tokens, one torch
thread per process. Two workloads, each timed in one process and in two (spawned gloo
ranks on a ``file://`` store; process start-up and set-up untimed):

* ``grid``: an N x N loss grid on a random plane, :func:`landscape.geometry.slices.loss_grid` in one
  process, :func:`landscape.train.distributed.sharded_loss_grid` (cells dealt round-robin) in two;
* ``top-k``: the Hessian operator (gradient graph) and ``--steps`` Lanczos steps for the
  top ``--k`` eigenvalues (``tol=0``: both arms take the same steps), the probe set halved
  over the ranks and every product all-reduced in two.

The bound to compare with is what this machine gives two processes at all: a third arm
runs two independent copies of the one-process workload at once (no communication), and
``2 * t(one alone) / t(two copies at once)`` is the throughput two busy processes get here
(2.0 on two idle, independent cores; less when the cores are shared with other jobs or
are hyperthreads). For two ranks it also reports where the time goes: the local products,
the all-reduces (transfer plus waiting for the other rank), and the Lanczos bookkeeping
(re-orthogonalisation, tridiagonal solves), which every rank repeats. The arms alternate
within each repeat; medians over repeats. Prints Markdown for BENCHMARKS.md.

    python bench/scale.py [--grid 11] [--probe 256] [--k 10] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from landscape.curvature.hessian import HessianOperator
from landscape.curvature.objective import detached_params
from landscape.curvature.spectral import lanczos
from landscape.geometry.directions import random_plane
from landscape.geometry.slices import loss_grid, make_axis
from landscape.train.distributed import process_group, sharded_loss_fn, sharded_loss_grid
from landscape.train.model import LoopedTransformer, ModelConfig
from landscape.train.split_loss import make_loss_fn
from landscape.train.tasks.base import IGNORE, Split

VOCAB, SEQ = 12, 48


def problem(n_probe: int):
    """Model, probe split and parameters, the same in every process (seeded)."""
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(d_model=32, n_heads=2, loops=3), VOCAB, SEQ).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, VOCAB, (n_probe, SEQ), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[:, -1] = IGNORE
    return model, Split(x, y), detached_params(model)


class Timed:
    """A reduce function that times itself."""

    def __init__(self, reduce):
        self.reduce, self.seconds, self.calls = reduce, 0.0, 0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.reduce(t)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def run_grid(args, ranks=None) -> dict:
    model, split, params = problem(args.probe)
    plane = random_plane(params, seed=0)
    axis = make_axis(-1.0, 1.0, args.grid)
    loss_fn = make_loss_fn(model, split)
    t0, c0 = time.perf_counter(), time.process_time()
    if ranks is None:
        grid = loss_grid(loss_fn, params, plane, axis, axis)
    else:
        grid = sharded_loss_grid(loss_fn, params, plane, axis, axis, ranks=ranks)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "check": float(grid.sum())}


def run_topk(args, ranks=None) -> dict:
    model, split, params = problem(args.probe)
    reduce = None if ranks is None else Timed(ranks.all_reduce_sum)
    t0, c0 = time.perf_counter(), time.process_time()
    if ranks is None:
        op = HessianOperator(make_loss_fn(model, split), params)
    else:
        op = HessianOperator(sharded_loss_fn(model, split, ranks), params, reduce=reduce)
    t_graph = time.perf_counter() - t0
    inner = op._matvec  # time the products (local compute + all-reduce) from outside
    spent = [0.0]

    def timed_matvec(v):
        s = time.perf_counter()
        out = inner(v)
        spent[0] += time.perf_counter() - s
        return out

    op._matvec = timed_matvec
    res = lanczos(op, k_top=args.k, tol=0.0, max_steps=args.steps, seed=0)
    wall = time.perf_counter() - t0
    comm = reduce.seconds if reduce is not None else 0.0
    return {"wall": wall, "cpu": time.process_time() - c0, "graph": t_graph,
            "products": spent[0] - comm, "allreduce": comm,
            "solver": wall - t_graph - spent[0], "hvps": res.n_matvec,
            "check": float(res.top_values[0])}


def worker(rank: int, args, store: str, out: str) -> None:
    torch.set_num_threads(1)
    results = []
    with process_group("cpu", init_method=f"file://{store}", rank=rank, world=2) as ranks:
        for _ in range(args.repeats):
            for name, fn in (("grid", run_grid), ("top-k", run_topk)):
                ranks.barrier()
                results.append((name, fn(args, ranks)))
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))


def one_process(args, barrier=None) -> list:
    torch.set_num_threads(1)
    out = []
    for name, fn in (("grid", run_grid), ("top-k", run_topk)):
        if barrier is not None:
            barrier.wait()
        out.append((name, fn(args)))
    return out


def copy_worker(i: int, args, barrier, out: str) -> None:
    Path(out, f"copy{i}.json").write_text(json.dumps(one_process(args, barrier)))


def two_copies(args) -> list:
    """Two independent one-process workloads at once: the machine's own bound."""
    os.environ["OMP_NUM_THREADS"] = "1"
    barrier = mp.get_context("spawn").Barrier(2)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(copy_worker, args=(args, barrier, tmp), nprocs=2, join=True)
        copies = [json.loads(Path(tmp, f"copy{i}.json").read_text()) for i in range(2)]
    return [(a[0], {k: max(a[1][k], b[1][k]) for k in a[1]}) for a, b in zip(*copies)]


def two_processes(args) -> list:
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(args, f"{tmp}/store", tmp), nprocs=2, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(2)]
    # a workload ends when its slower rank ends
    return [(a[0], {k: max(a[1][k], b[1][k]) for k in a[1]}) for a, b in zip(*ranks)]


def median(rows: list, name: str, key: str) -> float:
    return statistics.median(r[key] for n, r in rows if n == name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=11, help="points per axis (odd)")
    ap.add_argument("--probe", type=int, default=256, help="probe sequences")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60, help="Lanczos steps (fixed)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    one, two, copies = [], [], []
    once = argparse.Namespace(**{**vars(args), "repeats": 1})
    for _ in range(args.repeats):  # alternate the arms, one repeat each, against drift
        one += one_process(once)
        two += two_processes(once)
        copies += two_copies(once)
    for a, b in zip(one, two):
        assert abs(a[1]["check"] - b[1]["check"]) <= 1e-4 * abs(a[1]["check"]), (a, b)
    print(f"{args.grid}x{args.grid} grid, top-{args.k} with {args.steps} Lanczos steps, "
          f"probe set {args.probe} x {SEQ} tokens, {args.repeats} repeats, medians; "
          f"{os.cpu_count()} CPUs, load average {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after\n")
    print("| workload | 1 process (s) | 2 ranks (s) | speed-up | two copies at once (s) | "
          "machine bound | speed-up / bound | CPU s: 1 process, busier rank |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("grid", "top-k"):
        t1, t2, tc = (median(rows, name, "wall") for rows in (one, two, copies))
        bound = 2 * t1 / tc
        print(f"| {name} | {t1:.2f} | {t2:.2f} | {t1 / t2:.2f}x | {tc:.2f} | {bound:.2f}x | "
              f"{t1 / t2 / bound:.2f} | {median(one, name, 'cpu'):.2f}, "
              f"{median(two, name, 'cpu'):.2f} |")
    print("\nTop-k, where the time goes (seconds; 2 processes: the slower rank):\n")
    print("| part | 1 process | 2 processes |")
    print("|---|---|---|")
    for key in ("graph", "products", "allreduce", "solver"):
        print(f"| {key} | {median(one, 'top-k', key):.3f} | {median(two, 'top-k', key):.3f} |")
    hv = median(two, "top-k", "hvps")
    print(f"\n{hv:.0f} products; all-reduce per product "
          f"{1e3 * median(two, 'top-k', 'allreduce') / hv:.2f} ms")


if __name__ == "__main__":
    main()
