"""The probe plan's estimates against measured times, part by part, on tiny models.

Each model is built in memory with its data (fixed seeds, float inputs where the model
takes them) and its loss as a function of the parameters (``functional_call`` in eval
mode): an MLP on random features, a small CNN with BatchNorm on random images, our
Looped-Attn (:class:`landscape.train.model.LoopedTransformer`, 3 loops) on random tokens
and, where ``transformers`` is installed, a tiny HuggingFace ``LlamaForCausalLM``. For
each, :func:`landscape.probe.costs.measure_costs` and :func:`~landscape.probe.costs.plan_parts`
give the estimate of the default probe's Hessian parts (top-10/bottom-5 Lanczos, Hutch++,
SLQ, the exact spectrum where ``--exact auto`` would take it), then the same parts of
:mod:`landscape.probe.parts` run on a fresh operator and are timed (``hessian/top``
includes building the operator and its determinism check, as the plan counts). Prints a
Markdown table of estimate / measured per part and in all, medians over ``--repeats``.

    python bench/plan_accuracy.py [--repeats 3] [--models mlp,cnn,looped,llama]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.func import functional_call

from landscape.probe import parts
from landscape.probe.costs import exact_auto, measure_costs, plan_parts
from landscape.probe.parts import HessianSettings


def _loss_of(model: nn.Module, batch, loss):
    model.eval()
    buffers = dict(model.named_buffers())

    def loss_fn(params):
        return loss(functional_call(model, {**params, **buffers}, batch[0]), batch[1])
    params = {n: p.detach() for n, p in model.named_parameters()}
    return loss_fn, params


def _ce(out, y):
    out = getattr(out, "logits", out)
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def mlp():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 4))
    x, y = torch.randn(256, 16, generator=g), torch.randint(0, 4, (256,), generator=g)
    return _loss_of(model, ((x,), y), _ce)


def cnn():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    x, y = torch.randn(128, 1, 12, 12, generator=g), torch.randint(0, 10, (128,), generator=g)
    return _loss_of(model, ((x,), y), _ce)


def looped():
    from landscape.train.model import LoopedTransformer, ModelConfig

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(d_model=16, n_heads=2, loops=3), 8, 16)
    x = torch.randint(0, 8, (64, 16), generator=g)
    return _loss_of(model, ((x,), torch.roll(x, -1, 1)), _ce)


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg)
    x = torch.randint(0, 64, (16, 16), generator=g)
    return _loss_of(model, ((x,), torch.roll(x, -1, 1)), _ce)


MODELS = {"mlp": mlp, "cnn": cnn, "looped": looped, "llama": llama}


def _measure(loss_fn, params, hs: HessianSettings, dense: bool) -> dict[str, float]:
    """Seconds of each Hessian part, run as the probe runs them."""
    from landscape.curvature.hessian import HessianOperator

    out = {}
    t0 = time.perf_counter()
    op = HessianOperator(loss_fn, params, dtype=torch.float32)
    op.check_determinism(seed=hs.seed)
    top = parts.top(op, hs)
    out["hessian/top"] = time.perf_counter() - t0
    for name, run in (("hessian/trace", lambda: parts.trace(op, hs, top)),
                      ("hessian/slq", lambda: parts.slq(op, hs))):
        t0 = time.perf_counter()
        run()
        out[name] = time.perf_counter() - t0
    if dense:
        t0 = time.perf_counter()
        parts.exact(op)
        out["hessian/exact"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    hs = HessianSettings()
    print("| model | P | part | estimate (s) | measured (s) | estimate / measured |")
    print("|---|---:|---|---:|---:|---:|")
    for name in args.models.split(","):
        try:
            loss_fn, params = MODELS[name]()
        except ImportError as e:
            print(f"| {name} | - | skipped: {e} | | | |")
            continue
        est: dict[str, list[float]] = {}
        got: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            costs = measure_costs(loss_fn, params)
            dense = exact_auto(costs, hs.exact_max_params)[0]
            plans = {p.name: p.seconds for p in plan_parts(costs, hs, dense=dense)
                     if p.name != "hessian/sharpness"}
            for k, v in plans.items():
                est.setdefault(k, []).append(v)
            for k, v in _measure(loss_fn, params, hs, dense).items():
                got.setdefault(k, []).append(v)
        p = costs.params
        for part in got:
            e, m = statistics.median(est[part]), statistics.median(got[part])
            print(f"| {name} | {p:,} | {part} | {e:.3f} | {m:.3f} | {e / m:.2f} |")
        e = statistics.median(sum(est[k][i] for k in got) for i in range(args.repeats))
        m = statistics.median(sum(got[k][i] for k in got) for i in range(args.repeats))
        print(f"| {name} | {p:,} | **all** | {e:.3f} | {m:.3f} | {e / m:.2f} |", flush=True)


if __name__ == "__main__":
    main()
