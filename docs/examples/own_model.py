"""Your own model, recorded, probed and plotted: ``python docs/examples/own_model.py``.

A small causal transformer defined here (torch.nn layers, nothing from landscape) learns a
noisy "add one" sequence task with AdamW; landscape.Recorder writes its checkpoints into
runs/own_model.h5, then the probe and the figures run on that file.
"""

import torch
from torch import nn

import landscape

VOCAB, T = 16, 12


class TinyGPT(nn.Module):
    """Token and position embeddings, pre-norm causal transformer layers, a linear head."""

    def __init__(self, d_model=32, n_heads=2, n_layers=2):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(T, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, ids):
        """Next-token logits ``[B, T, VOCAB]`` of token ids ``[B, T]``."""
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.head(self.layers(self.emb(ids) + self.pos[: ids.shape[1]], mask=mask,
                                     is_causal=True))


def build(**kwargs):
    """The factory the run file names: rebuilds the module, probes load the weights."""
    return TinyGPT(**kwargs)


def batch(n, generator):
    """Sequences where each token is the previous one plus 1 (mod VOCAB), 10 % noise."""
    x = torch.randint(0, VOCAB, (n, 1), generator=generator)
    steps = torch.where(torch.rand(n, T, generator=generator) < 0.9, 1,
                        torch.randint(0, VOCAB, (n, T), generator=generator))
    seq = (x + steps.cumsum(1)) % VOCAB
    return seq[:, :-1], seq[:, 1:]


def main():
    """Train with AdamW, recording a checkpoint every 60 steps (continues if killed)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build(d_model=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    probe = batch(64, torch.Generator().manual_seed(123))  # fixed, stored in the file
    with landscape.Recorder("runs/own_model.h5", model, probe=probe, loss="next_token",
                            factory="own_model:build", factory_kwargs={"d_model": 32}) as rec:
        start = 0 if rec.last_step is None else rec.restore(model, opt) + 1
        for step in range(start, 301):
            if step:
                x, y = batch(32, g)
                loss = nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
            if step % 60 == 0:
                rec.checkpoint(step, optimizer=opt,
                               metrics={"loss": loss.item()} if step else {})
                print(f"step {step}: checkpoint" + (f", loss {loss.item():.3f}" if step else ""))


if __name__ == "__main__":
    main()
