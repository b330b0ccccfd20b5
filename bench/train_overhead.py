"""What recording the trajectory costs: the training loop with and without the run file.

Both arms run the same recipe, seed, steps and evaluations in the same process; the
"bare" arm replaces checkpointing and commits with no-ops. Alternating arms, median of
several repeats (these machines are shared and noisy). Prints a Markdown table row for
BENCHMARKS.md.

    python bench/train_overhead.py [--epochs 20] [--repeats 5] [--model looped]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from landscape.train.recipe import load_recipe
from landscape.train.trainer import Trainer

ROOT = Path(__file__).parents[1]


class BareTrainer(Trainer):
    """The same loop with nothing written: no checkpoints, no commits."""

    def _checkpoint(self) -> None:
        pass

    def _commit(self, final: bool = False) -> None:
        self._pending = {"ckpt": [], "metrics": [], "events": []}


def timed(cls, recipe, path: Path) -> float:
    trainer = cls(recipe, path)
    if cls is Trainer:
        trainer.start()
    t0 = time.perf_counter()
    trainer.run()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="looped_attn", help="recipe in models/")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(ROOT / "models" / f"{args.model}.toml",
                         overrides=[{"train": {"epochs": args.epochs}}])
    rec, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            rec.append(timed(Trainer, recipe, Path(tmp) / f"r{i}.h5"))
            bare.append(timed(BareTrainer, recipe, Path(tmp) / f"b{i}.h5"))
        size = (Path(tmp) / "r0.h5").stat().st_size / 1e6
    r, b = statistics.median(rec), statistics.median(bare)
    print(f"| {args.model} | {args.epochs} epochs, {len(rec)} repeats | bare {b:.2f} s | "
          f"recorded {r:.2f} s | overhead {100 * (r / b - 1):+.1f} % | file {size:.1f} MB |")


if __name__ == "__main__":
    main()
