"""What a commit costs against the size of the run: the Recorder on a 10M-parameter model.

Part ``commits``: 100 checkpoints of a GPT-style model (AdamW, so each checkpoint also
stores the second moment and the optimiser state for continuing) recorded back to back;
the time of each ``Recorder.checkpoint`` call. With a layout whose commit costs what it
adds, the 100th costs about what the 1st does; the previous layout copied the whole file
on every commit (its cost at the 100th checkpoint is given from the measured copy speed).

Part ``overhead``: the same model trained with AdamW for ``--steps`` steps, checkpointed
every ``--every`` steps; the recording overhead is the time spent in ``checkpoint`` over
the time spent in training steps, in the same loop (and, beside it, the end-to-end wall
time against a loop without a Recorder, alternated).

    python bench/commit.py [--checkpoints 100] [--steps 100] [--every 50] [--dir /tmp]

Writes about 16 GB in total (100 x 160 MB, 8 GB of it kept until the end) into a
temporary folder under ``--dir``, removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from landscape.runs.recorder import Recorder


class GPT(nn.Module):
    """A GPT-style decoder (pre-norm, causal, tied head): not one of landscape's models."""

    def __init__(self, vocab: int = 8192, d: int = 384, layers: int = 4, heads: int = 6,
                 n_ctx: int = 64):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(n_ctx, d))
        block = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, ids):
        t = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        h = self.blocks(self.emb(ids) + self.pos[:t], mask=mask, is_causal=True)
        return self.norm(h) @ self.emb.weight.T


def build(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(**kwargs)


def batch(step: int, b: int = 4, t: int = 64, vocab: int = 8192):
    g = torch.Generator().manual_seed(step)
    x = torch.randint(0, vocab, (b, t + 1), generator=g)
    return x[:, :-1], x[:, 1:]


def train_step(model, opt, step):
    x, y = batch(step)
    loss = nn.functional.cross_entropy(model(x).reshape(-1, 8192), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def commits(root: Path, n: int) -> dict:
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_step(model, opt, 0)  # Adam's moments exist
    p = sum(x.numel() for x in model.parameters())
    path = root / "commits.h5"
    rec = Recorder(path, model, probe=batch(10**6, b=2), loss="next_token",
                   factory="commit:build")
    times, sizes = [], []
    for i in range(n):
        t0 = time.perf_counter()
        rec.checkpoint(i + 1, optimizer=opt, metrics={"loss": 0.0})
        times.append(time.perf_counter() - t0)
        sizes.append(path.stat().st_size)
    rec.close()
    folder = sum(f.stat().st_size for f in Path(f"{path}.d").iterdir())
    # the previous layout copied the whole run on every commit: its speed on this disk
    seg = next(Path(f"{path}.d").glob("trajectory.params-*.npy"))
    t0 = time.perf_counter()
    shutil.copyfile(seg, root / "copy.npy")
    fd = os.open(root / "copy.npy", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    copy_mb_s = seg.stat().st_size / 1e6 / (time.perf_counter() - t0)
    return {"P": p, "times": times, "index_bytes": sizes, "folder_bytes": folder,
            "copy_mb_s": copy_mb_s}


def overhead(root: Path, steps: int, every: int, repeats: int) -> dict:
    rows = []
    for r in range(repeats):
        for arm in ("recorded", "bare"):
            model = build()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            rec = None
            if arm == "recorded":
                rec = Recorder(root / f"loop{r}.h5", model, probe=batch(10**6, b=2),
                               loss="next_token", factory="commit:build")
            t_train = t_rec = 0.0
            t0 = time.perf_counter()
            for step in range(1, steps + 1):
                t1 = time.perf_counter()
                loss = train_step(model, opt, step)
                t_train += time.perf_counter() - t1
                if rec is not None and step % every == 0:
                    t1 = time.perf_counter()
                    rec.checkpoint(step, optimizer=opt, metrics={"loss": loss})
                    t_rec += time.perf_counter() - t1
            if rec is not None:
                rec.close()
            rows.append({"arm": arm, "wall": time.perf_counter() - t0, "train": t_train,
                         "record": t_rec})
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--part", choices=["all", "commits", "overhead"], default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench_commit_", dir=args.dir))
    try:
        if args.part in ("all", "commits"):
            c = commits(root, args.checkpoints)
            t = c["times"]
            first, last = t[0], t[-1]
            print(f"P = {c['P']:,} parameters; {args.checkpoints} checkpoints, each "
                  f"{4 * 4 * c['P'] / 1e6:.0f} MB of new data (params, adam_v, optimiser state)")
            print("| checkpoint | 1st | 2nd-5th (median) | 96th-99th (median) | 100th "
                  "| last / first |")
            print("|---|---|---|---|---|---|")
            print(f"| commit time (s) | {first:.2f} | {statistics.median(t[1:5]):.2f} | "
                  f"{statistics.median(t[-5:-1]):.2f} | {last:.2f} | {last / first:.2f} |")
            print(f"index RUN.h5: {c['index_bytes'][0] / 1e3:.0f} kB after the 1st, "
                  f"{c['index_bytes'][-1] / 1e3:.0f} kB after the last; RUN.h5.d: "
                  f"{c['folder_bytes'] / 1e9:.2f} GB")
            run_gb = c["folder_bytes"] / 1e9
            print(f"copy speed {c['copy_mb_s']:.0f} MB/s: copying the whole run at the "
                  f"100th commit (the previous layout) would take about "
                  f"{run_gb * 1e3 / c['copy_mb_s']:.0f} s")
            shutil.rmtree(root / "commits.h5.d")
        if args.part in ("all", "overhead"):
            o = overhead(root, args.steps, args.every, args.repeats)
            rec = [r for r in o["rows"] if r["arm"] == "recorded"]
            bare = [r for r in o["rows"] if r["arm"] == "bare"]
            inloop = [r["record"] / r["train"] for r in rec]
            e2e = [a["wall"] / b["wall"] - 1 for a, b in zip(rec, bare)]
            step_s = statistics.median(r["train"] / args.steps for r in rec + bare)
            print(f"training: {args.steps} AdamW steps of 4 x 64 tokens, "
                  f"{step_s:.2f} s per step; a checkpoint every {args.every} steps")
            print("| repeat | in the loop: checkpoint time / step time | end to end: "
                  "recorded / bare - 1 |")
            print("|---|---|---|")
            for i, (a, b) in enumerate(zip(inloop, e2e)):
                print(f"| {i} | {100 * a:+.2f} % | {100 * b:+.2f} % |")
            print(f"| median | {100 * statistics.median(inloop):+.2f} % | "
                  f"{100 * statistics.median(e2e):+.2f} % |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
