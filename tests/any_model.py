"""Tiny models of every common kind, as a user would define them (importable as any_model).

Each kind is one :class:`Kind`: a factory (``"any_model:NAME"`` for the Recorder), its
arguments, a probe set, the loss the Recorder stores, and a training step. The models
hold a few hundred to a few thousand parameters, so that the default ``landscape probe``
of each runs in seconds. Float inputs come from ``torch.randn``: the probe must cast them
to the parameters' dtype (float64 for widths and spread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

N = 12  # examples in a probe set


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- plain PyTorch models ---------------------------------------------------------------


def mlp(d_in: int = 6, width: int = 16, d_out: int = 3, seed: int = 0) -> nn.Module:
    """Three linear layers with tanh between them: ``[N, d_in]`` floats in."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, width),
                         nn.Tanh(), nn.Linear(width, d_out))


class SmallCNN(nn.Module):
    """Conv, BatchNorm, ReLU, dropout, pooling, a linear head: ``[N, 1, 8, 8]`` images."""

    def __init__(self, channels: int = 4, classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(channels * 4, classes)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(h))), 2)  # [N, C, 4, 4]
        h = nn.functional.adaptive_avg_pool2d(h, 2).flatten(1)  # [N, 4C]
        return self.head(self.drop(h))


def cnn(channels: int = 4, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(channels, classes)


class TinyViT(nn.Module):
    """Patches of ``[N, 1, 8, 8]`` images, a class token, one pre-norm attention block."""

    def __init__(self, patch: int = 4, d: int = 8, heads: int = 2, classes: int = 3):
        super().__init__()
        self.patch = patch
        n_patches = (8 // patch) ** 2
        self.embed = nn.Linear(patch * patch, d)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_patches + 1, d))
        self.block = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.1,
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        p = self.patch
        tiles = x.unfold(2, p, p).unfold(3, p, p).reshape(x.shape[0], -1, p * p)  # [N, L, p*p]
        h = self.embed(tiles)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), h], 1) + self.pos  # [N, L+1, d]
        return self.head(self.norm(self.block(h))[:, 0])


def vit(d: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyViT(d=d)


class SeqClassifier(nn.Module):
    """A GRU or LSTM over ``[N, T, F]`` float sequences; the last state classified."""

    def __init__(self, cell: str = "gru", features: int = 3, hidden: int = 8,
                 classes: int = 3):
        super().__init__()
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)  # [N, T, hidden]
        return self.head(out[:, -1])


def rnn(cell: str = "gru", hidden: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SeqClassifier(cell, hidden=hidden)


# --- HuggingFace models -----------------------------------------------------------------

VOCAB, T = 16, 6


def hf_causal_lm(seed: int = 0):
    import transformers

    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=T, n_embd=8, n_layer=1,
                                  n_head=2, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg)


def _bert_config(**extra):
    import transformers

    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=16,
                                   max_position_embeddings=T, type_vocab_size=1,
                                   pad_token_id=0, **extra)


def hf_masked_lm(seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    return transformers.BertForMaskedLM(_bert_config())


def hf_classifier(seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(_bert_config(num_labels=3))


# --- probe sets -------------------------------------------------------------------------


def images(n: int = N, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, 1, 8, 8]`` float images and class ids ``[n]`` in 0..2."""
    x = torch.randn(n, 1, 8, 8, generator=_g(seed))
    return x, (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 0).long()


def vectors(n: int = N, seed: int = 1, regression: bool = False):
    """``[n, 6]`` floats and class ids ``[n]`` (or float targets ``[n, 3]``)."""
    x = torch.randn(n, 6, generator=_g(seed))
    if regression:
        return x, torch.tanh(x[:, :3] - x[:, 3:])
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def sequences(n: int = N, seed: int = 1):
    """``[n, 5, 3]`` float sequences and class ids ``[n]``."""
    x = torch.randn(n, 5, 3, generator=_g(seed))
    return x, (x.sum((1, 2)) > 0).long() + (x[:, -1, 0] > 0).long()


def tokens(n: int = N, seed: int = 1) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[n, T]``, the first rows padded at the end."""
    ids = torch.randint(1, VOCAB, (n, T), generator=_g(seed))
    mask = torch.ones_like(ids)
    mask[:3, 4:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def masked_tokens(n: int = N, seed: int = 1, mask_id: int = 1) -> dict[str, torch.Tensor]:
    """A masked-LM batch: some ids replaced by ``mask_id``, ``labels`` -100 elsewhere."""
    batch = tokens(n, seed)
    pick = (torch.rand(batch["input_ids"].shape, generator=_g(seed + 1)) < 0.3) & (
        batch["attention_mask"] == 1)
    pick[:, 0] = True  # every row scores a token
    labels = batch["input_ids"].masked_fill(~pick, -100)
    return {**batch, "input_ids": batch["input_ids"].masked_fill(pick, mask_id),
            "labels": labels}


def labelled_tokens(n: int = N, seed: int = 1) -> dict[str, torch.Tensor]:
    """A sequence-classification batch: ``labels`` ``[n]`` in 0..2."""
    batch = tokens(n, seed)
    return {**batch, "labels": batch["input_ids"][:, 0] % 3}


# --- the kinds --------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of model as the test matrix records it.

    Attributes:
        build: the factory's function (called with ``kwargs``).
        factory: its importable name for the Recorder, or None (HuggingFace: from config).
        kwargs: the factory's arguments.
        probe: makes the probe set (seeded).
        loss: the loss the Recorder stores.
        train_loss: ``f(model, batch) -> scalar`` for the training loop.
    """

    build: Callable[..., nn.Module]
    factory: str | None
    kwargs: dict
    probe: Callable[..., Any]
    loss: str
    train_loss: Callable[[nn.Module, Any], torch.Tensor]


def _ce(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def _mse(model, batch):
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def _hf(model, batch):
    if "labels" in batch:
        return model(**batch).loss
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return model(**batch, labels=labels).loss


KINDS: dict[str, Kind] = {
    "mlp_mse": Kind(mlp, "any_model:mlp", {}, lambda s: vectors(seed=s, regression=True),
                    "mse", _mse),
    "mlp_ce": Kind(mlp, "any_model:mlp", {}, lambda s: vectors(seed=s), "cross_entropy", _ce),
    "cnn": Kind(cnn, "any_model:cnn", {}, lambda s: images(seed=s), "cross_entropy", _ce),
    "vit": Kind(vit, "any_model:vit", {}, lambda s: images(seed=s), "cross_entropy", _ce),
    "gru": Kind(rnn, "any_model:rnn", {"cell": "gru"}, lambda s: sequences(seed=s),
                "cross_entropy", _ce),
    "lstm": Kind(rnn, "any_model:rnn", {"cell": "lstm"}, lambda s: sequences(seed=s),
                 "cross_entropy", _ce),
    "hf_causal_lm": Kind(hf_causal_lm, None, {}, lambda s: tokens(seed=s), "next_token", _hf),
    "hf_masked_lm": Kind(hf_masked_lm, None, {}, lambda s: masked_tokens(seed=s),
                         "masked_lm", _hf),
    "hf_classifier": Kind(hf_classifier, None, {}, lambda s: labelled_tokens(seed=s),
                          "cross_entropy", _hf),
}
"""The test matrix's models, by name."""

HF_KINDS = tuple(k for k in KINDS if k.startswith("hf_"))


def record(kind: str, path, steps: int = 3, lr: float = 0.05):
    """Train ``kind`` for ``steps`` SGD steps in train mode, recording every step."""
    import landscape

    k = KINDS[kind]
    model = k.build(**k.kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    extra = {"factory": k.factory, "factory_kwargs": k.kwargs} if k.factory else {}
    with landscape.Recorder(path, model, probe=k.probe(99), loss=k.loss, **extra) as rec:
        rec.checkpoint(0, optimizer=opt)
        for step in range(1, steps + 1):
            model.train()
            loss = k.train_loss(model, k.probe(1000 + step))
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.checkpoint(step, optimizer=opt, metrics={"loss": loss.item()})
    return model
