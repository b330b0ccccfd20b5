"""GPT-2-small (124M parameters) recorded and probed on a CPU: time, products, peak memory.

A randomly initialised GPT-2-small configuration (``transformers.GPT2Config()``: 12
layers, d 768, vocabulary 50257) is trained for ``--steps`` AdamW steps on a fixed 4 x 128
batch of random tokens through the HuggingFace path (:class:`landscape.Recorder`, the
factory ``landscape.hf:causal_lm``), the same batch being the probe set. The last
checkpoint is then probed from the run file:

* ``hessian``: top-5 by Lanczos (float32, ``tol`` 1e-4 relative residual, at most
  ``--max-steps`` steps, its basis where the library's defaults keep it) on
  :class:`~landscape.curvature.hessian.HessianOperator`, then the Hutch++ trace with
  those 5 vectors deflated and ``--trace-hvps`` more products;
* ``ggn``: top-5 by Lanczos on :class:`~landscape.curvature.ggn.GGNOperator`.

Each phase runs in its own process, so each peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process's high-water mark, model and
run file reads included) is that phase's alone; the ``step`` phase is one training step
(forward, backward, AdamW update) of the same batch, the yardstick of the ratio. Progress
is printed as it goes (a killed run shows how far it got); the result is a JSON line per
phase and a Markdown table at the end.

    python bench/gpt2_small.py [--out /tmp/gpt2_small] [--steps 3] [--max-steps 40]
        [--trace-hvps 30]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

BATCH, SEQ = 4, 128


def peak_rss_gib() -> float:
    """This process's peak resident set size so far, GiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def say(*args) -> None:
    print(*args, flush=True)


def batch() -> dict[str, torch.Tensor]:
    """The fixed 4 x 128 batch of random tokens (training batch and probe set)."""
    from transformers import GPT2Config

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, GPT2Config().vocab_size, (BATCH, SEQ), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def model():
    """Randomly initialised GPT-2-small with eager attention (as the probes rebuild it)."""
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(GPT2Config(), attn_implementation="eager").train()


def phase_record(out: Path, steps: int) -> dict:
    """Train ``steps`` AdamW steps, a checkpoint after each, into ``out/run.h5``."""
    import landscape

    net, data = model(), batch()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    path = out / "run.h5"
    times = []
    with landscape.Recorder(path, net, probe=data) as rec:
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            loss = net(**data, labels=data["input_ids"]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            rec.checkpoint(step, optimizer=opt, metrics={"loss": loss.item()})
            say(f"record: step {step} loss {loss.item():.4f} in {times[-1]:.1f} s")
    params = sum(p.numel() for p in net.parameters())
    return {"params": params, "train_step_s": times, "path": str(path)}


def phase_step(out: Path) -> dict:
    """One training step of the same batch on the rebuilt model (the memory yardstick)."""
    from landscape.runs.run import Run

    run = Run.open(out / "run.h5")
    net = run.model(-1).train()
    data = batch()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    loss = net(**data, labels=data["input_ids"]).loss
    loss.backward()
    opt.step()
    return {"seconds": time.perf_counter() - t0}


def phase_curvature(out: Path, which: str, max_steps: int, trace_hvps: int) -> dict:
    """Top-5 (and for the Hessian the Hutch++ trace) of the last checkpoint."""
    from landscape.curvature.ggn import GGNOperator
    from landscape.curvature.hessian import HessianOperator
    from landscape.curvature.spectral import hutchpp, lanczos
    from landscape.runs.run import Run

    run = Run.open(out / "run.h5")
    params = run.params(-1)
    t0 = time.perf_counter()
    if which == "hessian":
        op = HessianOperator(run.loss_fn(), params)
    else:
        op = GGNOperator(run.split_objective(), params)
    res = {"build_s": time.perf_counter() - t0, "build_peak_gib": peak_rss_gib()}
    say(f"{which}: operator built in {res['build_s']:.1f} s, peak {res['build_peak_gib']:.2f} GiB")
    trace_products(op, which)
    t0 = time.perf_counter()
    top = lanczos(op, k_top=5, tol=1e-4, max_steps=max_steps)  # the basis: see main's help
    res.update(top_s=time.perf_counter() - t0, top_products=top.n_matvec,
               top_values=[float(v) for v in top.top_values],
               top_converged=[bool(c) for c in top.top_converged],
               top_residuals=[float(r) for r in top.top_residuals],
               seconds_per_product=(time.perf_counter() - t0) / max(top.n_matvec, 1))
    say(f"{which}: top-5 {res['top_values']} converged {res['top_converged']} in "
        f"{res['top_s']:.0f} s, {top.n_matvec} products, peak {peak_rss_gib():.2f} GiB")
    if which == "hessian" and trace_hvps >= 2:  # --trace-hvps 0: the top-5 alone
        t0 = time.perf_counter()
        tr = hutchpp(op, trace_hvps + 5, basis=top.top_vectors)
        res.update(trace=float(tr.estimate), trace_stderr=float(tr.stderr),
                   trace_s=time.perf_counter() - t0, trace_products=tr.n_matvec)
        say(f"{which}: Hutch++ trace {tr.estimate:.4g} +- {tr.stderr:.2g} in "
            f"{res['trace_s']:.0f} s, {tr.n_matvec} products, peak {peak_rss_gib():.2f} GiB")
    return res


def trace_products(op, which: str) -> None:
    """Print a line after every product (count, seconds since the first, peak memory)."""
    t0, matvec, matmat = time.perf_counter(), op._matvec, op._matmat

    def say_done() -> None:
        say(f"{which}: {op.n_matvec} products done, {time.perf_counter() - t0:.0f} s, "
            f"peak {peak_rss_gib():.2f} GiB")

    def traced_matvec(v):
        out = matvec(v)
        say_done()
        return out

    def traced_matmat(vs):
        out = matmat(vs)
        say_done()
        return out

    op._matvec, op._matmat = traced_matvec, traced_matmat


def phase_trace(out: Path, products: int) -> dict:
    """The Hutch++ trace of the Hessian on its own (sketched, nothing deflated)."""
    from landscape.curvature.hessian import HessianOperator
    from landscape.curvature.spectral import hutchpp
    from landscape.runs.run import Run

    run = Run.open(out / "run.h5")
    op = HessianOperator(run.loss_fn(), run.params(-1))
    trace_products(op, "trace")
    t0 = time.perf_counter()
    tr = hutchpp(op, products)
    res = {"trace": float(tr.estimate), "trace_stderr": float(tr.stderr),
           "trace_s": time.perf_counter() - t0, "trace_products": tr.n_matvec,
           "rank": tr.rank, "probes": tr.n_probes}
    say(f"trace: Hutch++ {tr.estimate:.4g} +- {tr.stderr:.2g} in {res['trace_s']:.0f} s, "
        f"{tr.n_matvec} products, peak {peak_rss_gib():.2f} GiB")
    return res


def run_phase(args, phase: str) -> dict:
    """Run one phase in a fresh process; its JSON result with its own peak memory."""
    cmd = [sys.executable, __file__, "--phase", phase, "--out", str(args.out), "--steps",
           str(args.steps), "--max-steps", str(args.max_steps), "--trace-hvps",
           str(args.trace_hvps)]
    t0 = time.perf_counter()
    result = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:  # streamed: a killed run's log shows how far it got
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
            else:
                say(line.rstrip())
    if proc.returncode != 0 or result is None:
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
    result["wall_s"] = time.perf_counter() - t0
    say(f"{phase}: {json.dumps(result)}")
    return result


def table(r: dict) -> str:
    step = r["step"]["peak_gib"]
    lines = [f"GPT-2-small, {r['record']['params']:,} parameters, batch {BATCH} x {SEQ}, "
             f"{torch.get_num_threads()} torch threads", "",
             "| what | products | time | peak RSS | peak / training step |",
             "|---|---|---|---|---|",
             f"| one training step | - | {r['step']['seconds']:.1f} s | {step:.2f} GiB | 1.0 |"]
    for name in ("hessian", "ggn"):
        c = r[name]
        conv = sum(c["top_converged"])
        lines.append(f"| {name} top-5 Lanczos ({conv}/5 to 1e-4) | {c['top_products']} | "
                     f"{c['top_s']:.0f} s | {c['peak_gib']:.2f} GiB | "
                     f"{c['peak_gib'] / step:.2f} |")
        if "trace" in c:
            lines.append(f"| {name} Hutch++ trace ({c['trace']:.4g} +- {c['trace_stderr']:.2g})"
                         f" | {c['trace_products']} | {c['trace_s']:.0f} s | (same process) | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/gpt2_small"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=40,
                    help="Lanczos steps at most; above 20 its basis (0.5 GB a vector here) "
                         "is capped at 20 vectors, the probe's default; a basis too large "
                         "for memory (capped or not) goes to a temporary file")
    ap.add_argument("--trace-hvps", type=int, default=30,
                    help="Hutch++ probes after the Hessian's top-5 (0: no trace)")
    ap.add_argument("--phase", choices=("record", "step", "hessian", "ggn", "trace"),
                    help="one phase alone (trace: the Hessian's Hutch++ trace without the "
                         "Lanczos vectors, --trace-hvps products)")
    args = ap.parse_args()
    if args.phase is not None:
        if args.phase == "record":
            res = phase_record(args.out, args.steps)
        elif args.phase == "step":
            res = phase_step(args.out)
        elif args.phase == "trace":
            res = phase_trace(args.out, args.trace_hvps)
        else:
            res = phase_curvature(args.out, args.phase, args.max_steps, args.trace_hvps)
        res["peak_gib"] = peak_rss_gib()
        print("RESULT " + json.dumps(res), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for f in args.out.glob("run.h5*"):
        subprocess.run(["rm", "-rf", str(f)], check=True)
    results = {p: run_phase(args, p) for p in ("record", "step", "hessian", "ggn")}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    say(table(results))


if __name__ == "__main__":
    main()
