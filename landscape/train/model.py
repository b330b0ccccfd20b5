"""One decoder block, applied once (Single-Attn) or looped with shared weights (Looped-Attn).

Read top to bottom: the config, the attention, the block, the model. ``loops`` is a
forward-time setting, not a parameter: a Single-Attn checkpoint loads into Looped-Attn
unchanged, which is what SHIFT relies on.

Attention is written out (no ``F.scaled_dot_product_attention``): its default CPU kernel
has no double backward, and every Hessian probe needs one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.train.tasks.base import IGNORE

ATTENTIONS = ("softmax", "linear")
NORMS = ("pre", "none")
POSITIONS = ("learned", "rope", "none")
LOOP_RULES = ("fixed", "size")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture. Every field is a recipe key under ``[model]``."""

    d_model: int = 32  # width of the residual stream
    n_heads: int = 2  # attention heads; d_model must be divisible by it
    attention: str = "softmax"  # "softmax", or "linear": causal, unnormalised q.k scores / (t+1)
    mlp: bool = False  # add a GELU MLP after the attention inside the block
    d_mlp: int = 0  # MLP hidden width; 0 means 4 * d_model
    norm: str = "pre"  # "pre": LayerNorm before attention, MLP and head; "none"
    positions: str = "learned"  # "learned" absolute rows, "rope" (rotary), "none" (NoPE)
    input_injection: bool = False  # re-add the input embedding before every loop after the first
    loops: int = 1  # how often the block runs: 1 is Single-Attn, 3 is Looped-Attn
    layers: int = 1  # distinct (untied) blocks run in sequence on each pass; 3 with loops=1
    #                  is the untied three-layer model of Looped-Attn's compute
    loop_rule: str = "fixed"  # "fixed": `loops` passes; "size": each sample runs
    #                           T(n) = loop_scale * n + loop_offset passes, n its input size
    loop_scale: int = 1  # size rule: passes per unit of input size
    loop_offset: int = 0  # size rule: passes added to every sample
    tie_embeddings: bool = False  # head shares the token embedding matrix

    def __post_init__(self):
        if self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            raise LandscapeError(
                f"model: d_model={self.d_model} must be a positive multiple of "
                f"n_heads={self.n_heads}"
            )
        if self.positions == "rope" and (self.d_model // self.n_heads) % 2:
            raise LandscapeError("model: rope needs an even head width (d_model / n_heads)")
        for key, value, allowed in (
            ("attention", self.attention, ATTENTIONS),
            ("norm", self.norm, NORMS),
            ("positions", self.positions, POSITIONS),
            ("loop_rule", self.loop_rule, LOOP_RULES),
        ):
            if value not in allowed:
                raise LandscapeError(f"model: {key}={value!r} is not one of {', '.join(allowed)}")
        if self.loops < 1:
            raise LandscapeError(f"model: loops={self.loops} must be at least 1")
        if self.layers < 1:
            raise LandscapeError(f"model: layers={self.layers} must be at least 1")
        if self.loop_scale < 0 or self.loop_offset < 0 or self.loop_scale + self.loop_offset < 1:
            raise LandscapeError("model: loop_scale and loop_offset must be >= 0, and not both 0")

    def passes(self, sizes: torch.Tensor) -> torch.Tensor:
        """Passes of the block stack per sample under the size rule: ``T(n)``, at least 1."""
        return (self.loop_scale * sizes + self.loop_offset).clamp(min=1)
        if self.d_mlp < 0:
            raise LandscapeError(f"model: d_mlp={self.d_mlp} must be >= 0")


def _rope(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` ``[B, H, T, dh]`` (dh even), base 10000."""
    t, dh = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, dh, 2, dtype=x.dtype, device=x.device) / dh))
    ang = torch.arange(t, dtype=x.dtype, device=x.device)[:, None] * inv  # [T, dh/2]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class CausalAttention(nn.Module):
    """Multi-head causal self-attention with separate Q, K, V, O projections (no biases)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.kind, self.rope = cfg.n_heads, cfg.attention, cfg.positions == "rope"
        self.q, self.k = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v, self.o = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend causally over ``x`` ``[B, T, D]``; returns ``[B, T, D]``."""
        b, t, d = x.shape
        h = self.n_heads

        def heads(z):
            return z.view(b, t, h, d // h).transpose(1, 2)  # [B, H, T, dh]

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        if self.rope:
            q, k = _rope(q), _rope(k)
        q = q / math.sqrt(d // h)  # scale the small tensor, not the [T, T] scores
        scores = q @ k.transpose(-2, -1)  # [B, H, T, T]
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        if self.kind == "softmax":
            weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        else:  # linear: causal sum of raw scores, averaged over the visible prefix
            count = torch.arange(1, t + 1, dtype=x.dtype, device=x.device)[:, None]
            weights = scores.masked_fill(future, 0.0) / count
        y = (weights @ v).transpose(1, 2).reshape(b, t, d)  # [B, T, D]
        return self.o(y)


class Block(nn.Module):
    """Pre-norm residual block: ``h + attn(ln(h))``, then optionally ``h + mlp(ln(h))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        norm = nn.LayerNorm if cfg.norm == "pre" else lambda d: nn.Identity()
        self.ln1 = norm(cfg.d_model)
        self.attn = CausalAttention(cfg)
        self.mlp = None
        if cfg.mlp:
            width = cfg.d_mlp or 4 * cfg.d_model
            self.ln2 = norm(cfg.d_model)
            self.mlp = nn.Sequential(
                nn.Linear(cfg.d_model, width), nn.GELU(), nn.Linear(width, cfg.d_model)
            )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """One pass of the block over the residual stream ``h`` ``[B, T, D]``."""
        h = h + self.attn(self.ln1(h))
        if self.mlp is not None:
            h = h + self.mlp(self.ln2(h))
        return h


class LoopedTransformer(nn.Module):
    """Embedding, one :class:`Block` applied ``loops`` times with shared weights, a linear head.

    Args:
        cfg: the architecture.
        vocab_size: number of token ids.
        max_len: longest sequence the learned positions must cover (ignored otherwise).

    The parameters do not depend on ``loops``: ``model.loops`` may be changed at any
    time (SHIFT does), and ``forward(x, loops=n)`` overrides it for one call.

    With ``layers > 1`` each pass runs ``block`` and then the ``untied`` blocks (their own
    weights) in sequence: ``layers=3, loops=1`` is a plain three-layer transformer.
    With ``loop_rule="size"`` the number of passes follows each sample's input size
    (``forward(x, sizes=n)``): the batch runs the largest ``T(n)``, and a sample whose
    ``T(n)`` is reached keeps its residual stream unchanged from then on, so its output is
    exactly that of ``T(n)`` passes.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.cfg, self.loops, self.max_len = cfg, cfg.loops, max_len
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(max_len, cfg.d_model) if cfg.positions == "learned" else None
        self.block = Block(cfg)
        self.untied = nn.ModuleList(Block(cfg) for _ in range(cfg.layers - 1))
        self.ln_f = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight  # weight tying: one matrix, two uses
        self.apply(_init)

    def forward(self, tokens: torch.Tensor, loops: int | None = None,
                sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, V]`` of ``tokens`` ``[B, T]`` after ``loops`` passes of the block.

        ``sizes`` ``[B]``: each sample's input size, needed by ``loop_rule="size"`` (then
        each sample runs ``T(n)`` passes) unless ``loops`` is given (then all run ``loops``).
        """
        t = tokens.shape[1]
        per_sample = None
        if loops is None and self.cfg.loop_rule == "size":
            if sizes is None:
                raise LandscapeError("model: loop_rule='size' needs each sample's input size "
                                     "(sizes), or an explicit loops")
            per_sample = self.cfg.passes(sizes.to(tokens.device))  # [B]
            loops = int(per_sample.max()) if len(per_sample) else 1
        if self.pos is not None and t > self.max_len:
            raise LandscapeError(
                f"sequence length {t} exceeds the {self.max_len} learned positions; "
                "use positions='rope' or 'none' for longer test sequences"
            )
        x0 = self.embed(tokens)  # [B, T, D]
        if self.pos is not None:
            x0 = x0 + self.pos.weight[:t]
        h = x0
        for i in range(self.loops if loops is None else loops):
            z = h + x0 if i > 0 and self.cfg.input_injection else h
            for block in (self.block, *self.untied):
                z = block(z)
            h = z if per_sample is None else torch.where((i < per_sample)[:, None, None], z, h)
        return self.head(self.ln_f(h))


def forward_flops(cfg: ModelConfig, vocab_size: int, seq_len: int, passes: int) -> int:
    """Floating-point operations of one forward pass of one sequence, counted from the config.

    Matrix products only (2 per multiply-add; embedding look-ups, LayerNorm, softmax and
    residual additions are O(T d) and left out), as this module computes them: per pass and
    block, the Q, K, V, O projections ``4 * 2 T d^2``, the scores and their product with V
    over the full ``T x T`` matrix (the causal mask is applied after, so the masked half is
    computed too) ``2 * 2 T^2 d``, the MLP ``2 * 2 T d d_mlp``; then the head ``2 T d V``.
    A training step costs three times this per sequence (the backward pass computes two
    products of each forward product's size: every layer's input feeds a parameter).

    Args:
        cfg: the architecture (``layers`` blocks per pass).
        vocab_size: V.
        seq_len: T, the (padded) length the model is run on.
        passes: passes of the block stack (``loops``, or the batch's largest ``T(n)``).

    >>> forward_flops(ModelConfig(d_model=4, n_heads=2), vocab_size=5, seq_len=3, passes=1)
    648
    """
    d, t = cfg.d_model, seq_len
    d_mlp = (cfg.d_mlp or 4 * d) if cfg.mlp else 0
    block = 8 * t * d * d + 4 * t * t * d + 4 * t * d * d_mlp
    return passes * cfg.layers * block + 2 * t * d * vocab_size


def _init(module: nn.Module) -> None:
    """GPT-2 style initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def token_loss(logits: torch.Tensor, targets: torch.Tensor,
               reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over all scored tokens (targets != IGNORE): their mean, or their sum.

    The mean is over tokens, not a mean of row means.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE, reduction=reduction)


# --- parameter groups (per-block spectra) ------------------------------------------------

GROUPS = ("embedding", "q", "k", "v", "o", "mlp", "norm", "head", "other")

_GROUP_PATTERNS = (
    ("embedding", r"^(embed|pos)\."),
    ("q", r"(^|\.)attn\.q\."),
    ("k", r"(^|\.)attn\.k\."),
    ("v", r"(^|\.)attn\.v\."),
    ("o", r"(^|\.)attn\.o\."),
    ("mlp", r"(^|\.)mlp\."),
    ("norm", r"(^|\.)(ln\w*|norm\w*)\."),
    ("head", r"^head\."),
)


def param_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """Group the parameter names of :class:`LoopedTransformer` by role.

    Groups, in this order: ``embedding`` (token and position embeddings), ``q``, ``k``,
    ``v``, ``o`` (attention projections), ``mlp``, ``norm`` (every LayerNorm), ``head``
    (absent when tied to the embedding), and ``other`` for names that match none (so a
    notebook model still gets a complete partition). Empty groups are left out.

    Args:
        names: parameter names, e.g.
            :attr:`landscape.curvature.hessian.HessianOperator.names`.

    Returns:
        ``{group: [names in the given order]}``.
    """
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name in names:
        group = next((g for g, pat in _GROUP_PATTERNS if re.search(pat, name)), "other")
        out[group].append(name)
    return {g: ns for g, ns in out.items() if ns}
