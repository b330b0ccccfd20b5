"""A HuggingFace GPT-2 (randomly initialised, 2 layers) recorded while it trains, then probed.

``pip install 'landscape[hf]'``, then ``python docs/examples/hf_gpt2.py``. No network: the
configuration is built here. The Recorder stores the model's configuration; probes rebuild
it with eager attention (the fused kernels have no double backward).
"""

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

import landscape
from landscape.probe import HessianSettings, ProbeSettings, probe
from landscape.runs.run import Run

transformers.logging.set_verbosity_error()
torch.manual_seed(0)
config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                    bos_token_id=0, eos_token_id=0)
model = GPT2LMHeadModel(config)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
ids = torch.randint(0, 64, (16, 32), generator=g)
mask = torch.ones_like(ids)
mask[8:, 24:] = 0  # padded tails: not scored
with landscape.Recorder("runs/gpt2.h5", model,
                        probe={"input_ids": ids, "attention_mask": mask}) as rec:
    for step in range(41):
        if step:
            x = torch.randint(0, 64, (8, 32), generator=g) // 4 * 4  # a learnable pattern
            out = model(input_ids=x, labels=x)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        if step % 20 == 0:
            rec.checkpoint(step, optimizer=opt)

probe("runs/gpt2.h5", ProbeSettings(steps="all", geometry=None, hessian=HessianSettings(
    k_top=3, k_bottom=1, slq_runs=2, slq_steps=20, trace_hvps=30)))
run = Run.open("runs/gpt2.h5")
print(run)
for step in run.steps:
    top, trace = run.part("top", step), run.part("trace", step)
    print(f"step {step}: top eigenvalues {top.values.round(1)}, bottom "
          f"{top.bottom_values[0]:.1f}, trace {trace.estimate:.0f} +- {trace.stderr:.0f}")
