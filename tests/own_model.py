"""A model that is not landscape's, as a user would define it (importable as own_model).

Also a training script: ``python own_model.py RUN.h5 STEPS [SLEEP [tiny|norm]]`` records
a deterministic AdamW loop with :class:`landscape.Recorder`, continuing the file if it
exists.
"""

import sys
import time
from types import SimpleNamespace

import torch
from torch import nn

VOCAB, D, T = 11, 8, 6


class TinyLM(nn.Module):
    """Embeddings, a causal running mean, a LayerNorm and a head: next-token logits."""

    def __init__(self, vocab=VOCAB, d=D, n_ctx=T):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.1 * torch.randn(n_ctx, d))
        self.mix = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids) + self.pos[: input_ids.shape[1]]
        w = torch.ones_like(input_ids, dtype=h.dtype) if attention_mask is None else (
            attention_mask.to(h.dtype))
        c = (h * w[..., None]).cumsum(1) / w.cumsum(1).clamp(min=1)[..., None]
        return self.head(self.norm(torch.tanh(self.mix(c)) + h))


class KwLM(TinyLM):
    """Keyword-only forward returning an output object, as HuggingFace models do."""

    def forward(self, *, input_ids, attention_mask):
        return SimpleNamespace(logits=super().forward(input_ids, attention_mask))


def build(vocab=VOCAB, d=D, n_ctx=T, seed=0):
    torch.manual_seed(seed)
    return TinyLM(vocab, d, n_ctx)


def build_kw(vocab=VOCAB, d=D, n_ctx=T, seed=0):
    torch.manual_seed(seed)
    return KwLM(vocab, d, n_ctx)


class NormLM(nn.Module):
    """Embeddings, a BatchNorm1d over the features and a head, with buffers of each kind.

    In eval mode its output depends on BatchNorm's running statistics (float32 buffers
    that training updates; ``num_batches_tracked`` is int64); ``scale`` is a persistent
    buffer that never changes, ``shift`` a non-persistent one.
    """

    def __init__(self, vocab=VOCAB, d=6, momentum=0.5, track=True):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.bn = nn.BatchNorm1d(d, momentum=momentum, track_running_stats=track)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("scale", torch.full((d,), 0.5))
        self.register_buffer("shift", torch.zeros(d), persistent=False)

    def forward(self, x):
        h = torch.tanh(self.mix(self.emb(x)))
        h = self.bn(h.reshape(-1, h.shape[-1])).reshape(h.shape)
        return self.head(h * self.scale + self.shift)


def build_norm(vocab=VOCAB, d=6, seed=0, track=True):
    torch.manual_seed(seed)
    return NormLM(vocab, d, track=track)


def not_a_module(**kwargs):
    return {"weights": 1}


def masked_loss(model, batch):
    """Mean next-token loss where the mask is 1 (a custom loss over a dict batch)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    y = batch["input_ids"][:, 1:]
    keep = batch["attention_mask"][:, 1:].bool()
    ce = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                     y.reshape(-1), reduction="none")
    return (ce * keep.reshape(-1)).sum() / keep.sum()


def per_token_loss(model, batch):
    """Not a scalar: a loss function must reduce."""
    inputs, targets = batch
    logits = model(inputs)
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1),
                                       reduction="none")


def declared_loss(model, batch):
    """Mean token loss of a pair batch that declares its output and per-example losses."""
    return declared_loss.output_loss(declared_loss.output(model, batch), batch).mean()


def _sequence_losses(logits, batch):
    """``[n]`` each sequence's mean token loss."""
    ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                     batch[1].reshape(-1), reduction="none")
    return ce.reshape(batch[1].shape).mean(dim=1)


declared_loss.output = lambda model, batch: model(batch[0])
declared_loss.output_loss = _sequence_losses


def data(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, T), generator=g)
    y = torch.roll(x, -1, dims=1)
    return x, y


MODELS = {"tiny": (build, "own_model:build", {"d": D}),
          "norm": (build_norm, "own_model:build_norm", {})}


def train(path, total, every=1, sleep=0.0, kind="tiny"):
    """A user's loop: AdamW on random batches (seeded by step), recorded.

    ``kind``: ``tiny`` (:class:`TinyLM`) or ``norm`` (:class:`NormLM`, trained in train
    mode, so that its BatchNorm statistics move).
    """
    import landscape

    make, factory, kwargs = MODELS[kind]
    model = make(**kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rec = landscape.Recorder(path, model, probe=data(8, seed=99), loss="next_token",
                             factory=factory, factory_kwargs=kwargs)
    start = 0 if rec.last_step is None else rec.restore(model, opt) + 1
    for step in range(start, total + 1):
        if step > 0:
            model.train()
            x, y = data(8, seed=1000 + step)
            loss = nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            metrics = {"loss": loss.item()}
        else:
            metrics = {}
        if step % every == 0:
            rec.checkpoint(step, optimizer=opt, metrics=metrics)
        time.sleep(sleep)
    rec.close()


if __name__ == "__main__":
    train(sys.argv[1], int(sys.argv[2]), sleep=float(sys.argv[3]) if len(sys.argv) > 3 else 0,
          kind=sys.argv[4] if len(sys.argv) > 4 else "tiny")
