"""2D loss grids: ours against the peer's way and against the compute bound.

On the default Looped-Attn checkpoint (loops=3) and its probe set, a grid of N x N points
(41 x 41; 11 x 11 with ``--quick``) on a filter-normalised random plane, in points per
second. The arms are interleaved row by row (each computes grid row i, fixed alpha and every
beta, in an order that rotates with i and the repeat; setup untimed), so that the load of
the shared machine hits them alike; medians over repeats, ratios formed inside a repeat:

* ``ours, batch_points=1``: :func:`landscape.geometry.slices.loss_grid`, the lean per-point loop;
* ``ours, auto``: the same call with the default ``batch_points="auto"`` (1 on the CPU);
* ``peer``: as tomgoldstein/loss-landscape does it (``net_plotter.set_weights`` and
  ``evaluation.eval_loss``): per point, the perturbed weights are built as a list of
  per-parameter changes and assigned to the module (``p.data = w + d``), then the loss is
  evaluated by iterating a ``torch.utils.data.DataLoader`` over the probe set
  (``--peer-batch`` sequences per batch, batch losses weighted by their scored tokens);
* ``bound``: N x N bare forward passes of the module at the checkpoint's weights over the
  probe set (``torch.no_grad``, the same loss), in the library's chunks of
  :data:`landscape.curvature.objective.CHUNK` sequences: a grid with zero overhead per point.

Two diagnostic arms (``--no-diagnostics`` drops them) separate the peer's per-point
overhead from its batch size: the peer with one DataLoader batch of the whole probe set,
and bare forwards over the whole probe set at once. The peer's grid is checked against
ours (largest absolute difference printed).

    python bench/slices.py [--repeats 3] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from landscape.curvature.objective import CHUNK
from landscape.geometry.directions import random_plane
from landscape.geometry.slices import loss_grid, make_axis
from landscape.runs.run import Run
from landscape.train.model import token_loss
from landscape.train.recipe import load_recipe
from landscape.train.tasks.base import IGNORE
from landscape.train.trainer import train

ROOT = Path(__file__).parents[1]
OURS = "ours, batch_points=1"
AUTO = 'ours, batch_points="auto"'
PEER = "peer: loss-landscape loop (DataLoader, --peer-batch)"
BOUND = "bound: bare forwards over the probe set, in the library's chunks"
PEER_FULL = "peer at a DataLoader batch of the whole probe set (diagnostic)"
WHOLE = "bare forwards, whole probe set at once (diagnostic)"
RATIOS = {  # name: (numerator arm, denominator arm) of a throughput ratio
    "ours / bound": (OURS, BOUND),
    "auto / bound": (AUTO, BOUND),
    "ours / peer": (OURS, PEER),
    "peer at the full batch / whole-set forwards (the peer's own overhead)": (PEER_FULL, WHOLE),
    "whole-set / chunked bare forwards": (WHOLE, BOUND),
}


def machine(threads: int) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"<!-- {os.cpu_count()} cores, load average {load}, torch {torch.__version__}, "
            f"{threads} torch thread(s) -->")


def checkpoint(path: Path, epochs: int, threads: int) -> Run:
    """The trained default Looped-Attn checkpoint, trained here if missing."""
    if not path.exists():
        recipe = load_recipe(ROOT / "models" / "looped_attn.toml",
                             overrides=[{"train": {"epochs": epochs, "threads": threads}}])
        train(recipe, path)
    return Run.open(path)


# ----------------------------------------------------------------------------- arms
# Each arm is built once (its setup untimed) and returns a function computing one grid row
# (fixed alpha, every beta), so that the arms can be interleaved row by row.


def ours(run: Run, plane, axis, batch_points):
    loss_fn, params = run.loss_fn("probe"), run.params()

    def row(a: float) -> np.ndarray:
        return loss_grid(loss_fn, params, plane, [a], axis, batch_points=batch_points)[0]

    return row


def peer(run: Run, plane, axis, batch_size: int):
    """tomgoldstein/loss-landscape's loop: set_weights, then eval_loss over a DataLoader."""
    net = run.model()
    names = [n for n, _ in net.named_parameters()]
    weights = [p.data.clone() for p in net.parameters()]  # get_weights
    dx = [plane.x[n] for n in names]
    dy = [plane.y[n] for n in names]
    split = run.split("probe")
    loader = DataLoader(TensorDataset(split.inputs, split.targets), batch_size=batch_size,
                        shuffle=False)

    def row(a: float) -> np.ndarray:
        out = np.empty(axis.size)
        for j, b in enumerate(axis):
            changes = [d0 * a + d1 * b for d0, d1 in zip(dx, dy)]  # set_weights
            for p, w, d in zip(net.parameters(), weights, changes):
                p.data = w + d
            out[j] = eval_loss(net, loader)
        return out

    return row


def eval_loss(net, loader) -> float:
    """``evaluation.eval_loss``, with batch losses weighted by scored tokens."""
    total_loss, total = 0.0, 0
    net.eval()
    with torch.no_grad():
        for inputs, targets in loader:
            n = int((targets != IGNORE).sum())
            total += n
            total_loss += token_loss(net(inputs), targets).item() * n
    return total_loss / total


def bound(run: Run, axis, chunk: int):
    """Bare forward passes at the checkpoint's weights over the probe set, one per grid point.

    ``chunk`` sequences per forward (the library's :data:`CHUNK` for the bound proper), the
    chunk losses weighted by their scored tokens.
    """
    net, split = run.model(), run.split("probe")
    x, y = split.inputs, split.targets
    parts = [(x[i:i + chunk], y[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
    weights = [int((t != IGNORE).sum()) for _, t in parts]
    total = sum(weights)

    def row(a: float) -> np.ndarray:
        out = np.empty(axis.size)
        with torch.no_grad():
            for k in range(axis.size):
                out[k] = sum(float(token_loss(net(u), t)) * w for (u, t), w in zip(parts, weights))
        return out / total

    return row


# ----------------------------------------------------------------------------- main


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="an 11 x 11 grid instead of 41 x 41")
    ap.add_argument("--grid", type=int, default=None, help="points per axis (odd)")
    ap.add_argument("--span", type=float, default=1.0, help="coordinates from -span to span")
    ap.add_argument("--peer-batch", type=int, default=64)
    ap.add_argument("--no-diagnostics", action="store_true",
                    help="skip the peer at the full batch and the chunked bare forwards")
    ap.add_argument("--epochs", type=int, default=10, help="training of a missing checkpoint")
    ap.add_argument("--ckpt", type=Path, default=Path(tempfile.gettempdir()) / "bench_looped.h5")
    args = ap.parse_args()
    args.grid = args.grid or (11 if args.quick else 41)
    return args


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    run = checkpoint(args.ckpt, args.epochs, args.threads)
    axis = make_axis(-args.span, args.span, args.grid)
    plane = random_plane(run.params(), seed=0)
    pb, n_seq = args.peer_batch, run.split("probe").inputs.shape[0]
    arms = {
        OURS: ours(run, plane, axis, 1),
        AUTO: ours(run, plane, axis, "auto"),
        PEER: peer(run, plane, axis, pb),
        BOUND: bound(run, axis, CHUNK),
    }
    if not args.no_diagnostics:
        arms[PEER_FULL] = peer(run, plane, axis, n_seq)
        arms[WHOLE] = bound(run, axis, n_seq)
    names = list(arms)
    rates = {n: [] for n in names}
    ratios = {n: [] for n in RATIOS if all(a in arms for a in RATIOS[n])}
    loads = []
    points = axis.size**2
    for r in range(args.repeats):
        secs = dict.fromkeys(names, 0.0)
        grids = {n: np.empty((axis.size, axis.size)) for n in names}
        for i, a in enumerate(axis):  # row by row, the arms in a rotating order
            k = (i + r) % len(names)
            for n in names[k:] + names[:k]:
                t0 = time.perf_counter()
                grids[n][i] = arms[n](a)
                secs[n] += time.perf_counter() - t0
        for n in names:
            rates[n].append(points / secs[n])
        loads.append(os.getloadavg()[0])
        for n, (num, den) in RATIOS.items():
            if n in ratios:
                ratios[n].append(secs[den] / secs[num])
    diff = float(np.abs(grids[OURS] - grids[PEER]).max())
    centre = float(grids[OURS][args.grid // 2, args.grid // 2])
    report(args, run, rates, ratios, diff, centre, float(grids[BOUND][0, 0]), loads)


def report(args, run, rates, ratios, diff, centre, bare, loads) -> None:
    med = statistics.median
    p = run.layout.size
    print(f"<!-- python bench/slices.py {' '.join(sys.argv[1:])} -->")
    print(machine(args.threads) + f"  <!-- 1-min load after each repeat: "
          f"{', '.join(f'{x:.2f}' for x in loads)} -->")
    print(f"<!-- Looped-Attn (loops {run.model().loops}), P = {p}, probe set "
          f"{tuple(run.split('probe').inputs.shape)}, {args.grid}x{args.grid} grid on "
          f"[-{args.span}, {args.span}]^2; peer batch {args.peer_batch}; max |ours - peer| = "
          f"{diff:.1e}; loss at the origin {centre:.6f} (bare forward {bare:.6f}) -->")
    print("| arm | points/s (median) | per repeat |\n|---|---|---|")
    for n, xs in rates.items():
        print(f"| {n} | {med(xs):.1f} | {', '.join(f'{x:.1f}' for x in xs)} |")
    print("\n| ratio (same repeat) | median | per repeat |\n|---|---|---|")
    for n, xs in ratios.items():
        print(f"| {n} | **{med(xs):.3f}** | {', '.join(f'{x:.3f}' for x in xs)} |")


if __name__ == "__main__":
    main()
