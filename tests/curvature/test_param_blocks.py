"""Per-block spectra on an architecture this project did not define, against the dense truth."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature.hessian import HessianOperator, dense_hessian_reference
from landscape.curvature.param_blocks import (
    block_spectra,
    blocks,
    layer_blocks,
    layer_of,
    pattern_blocks,
)
from landscape.errors import LandscapeError
from landscape.train.model import LoopedTransformer, ModelConfig


class Encoder(nn.Module):
    """A two-layer causal nn.TransformerEncoder language model (torch.nn's own layers)."""

    def __init__(self, vocab=5, d=4, n_layers=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, 1, 4, dropout=0.0, batch_first=True)
            for _ in range(n_layers))
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        h = self.emb(x)
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        for layer in self.layers:
            h = layer(h, src_mask=mask, is_causal=True)
        return self.head(h)


@pytest.fixture(scope="module")
def encoder_problem():
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randint(0, 5, (2, 4))
    y = torch.randint(0, 5, (2, 4))

    def loss_fn(params):
        logits = functional_call(model, params, (x,))
        return nn.functional.cross_entropy(logits.reshape(-1, 5), y.reshape(-1))

    params = {n: p.detach().double() for n, p in model.named_parameters()}
    dense = dense_hessian_reference(loss_fn, params).numpy()
    return loss_fn, params, dense


def test_default_blocks_are_the_layers_of_any_architecture():
    gpt2 = ["transformer.wte.weight", "transformer.wpe.weight",
            "transformer.h.0.ln_1.weight", "transformer.h.0.attn.c_attn.weight",
            "transformer.h.1.mlp.c_fc.bias", "transformer.h.11.ln_2.bias",
            "transformer.ln_f.weight", "lm_head.weight", "bias"]
    assert list(layer_blocks(gpt2)) == ["transformer.wte", "transformer.wpe", "transformer.h.0",
                                        "transformer.h.1", "transformer.h.11",
                                        "transformer.ln_f", "lm_head", "bias"]
    assert layer_blocks(gpt2)["transformer.h.0"] == gpt2[2:4]
    assert layer_of("layers.10.self_attn.in_proj_weight") == "layers.10"
    ours = [n for n, _ in LoopedTransformer(ModelConfig(d_model=8, n_heads=2, mlp=True),
                                            12, 12).named_parameters()]
    assert list(layer_blocks(ours)) == ["embed", "pos", "block.ln1", "block.attn.q",
                                        "block.attn.k", "block.attn.v", "block.attn.o",
                                        "block.ln2", "block.mlp.0", "block.mlp.2", "ln_f", "head"]


def test_patterns_select_blocks_and_bad_patterns_are_refused():
    names = [n for n, _ in Encoder().named_parameters()]
    got = pattern_blocks(names, ["layers.0.self_attn.*", "*.norm?.weight"])
    assert got["layers.0.self_attn.*"] == ["layers.0.self_attn.in_proj_weight",
                                           "layers.0.self_attn.in_proj_bias",
                                           "layers.0.self_attn.out_proj.weight",
                                           "layers.0.self_attn.out_proj.bias"]
    assert got["*.norm?.weight"] == [f"layers.{i}.norm{j}.weight" for i in (0, 1) for j in (1, 2)]
    assert blocks(names) == layer_blocks(names) and blocks(names, []) == layer_blocks(names)
    with pytest.raises(LandscapeError, match="matches no parameter.*emb.weight"):
        pattern_blocks(names, ["transformer.h.*"])
    for bad in (["a/b"], [""], ["emb.*", "emb.*"]):
        with pytest.raises(LandscapeError):
            pattern_blocks(names, bad)


@pytest.mark.parametrize("patterns", [None, ["layers.1.self_attn.*", "layers.*.linear?.*"]])
def test_block_spectra_are_the_dense_hessians_diagonal_blocks(encoder_problem, patterns):
    loss_fn, params, dense = encoder_problem
    op = HessianOperator(loss_fn, params, dtype=torch.float64)
    groups = blocks(op.names, patterns)
    got = block_spectra(op, groups, k_top=3, tol=1e-10, trace_hvps=30)
    assert list(got) == list(groups)
    offsets = dict(zip(op.layout.names, zip(op.layout.offsets, op.layout.sizes)))
    for name, res in got.items():
        idx = np.concatenate([np.arange(o, o + s) for o, s in
                              (offsets[n] for n in groups[name])])
        truth = np.linalg.eigvalsh(dense[np.ix_(idx, idx)])[::-1]
        k = len(res["values"])
        assert res["dim"] == idx.size and res["converged"].all()
        np.testing.assert_allclose(res["values"], truth[:k], rtol=1e-7,
                                   atol=1e-9 * np.abs(truth).max())
        if res["trace_stderr"] == 0.0:  # exact (small block)
            assert res["trace"] == pytest.approx(truth.sum(), rel=1e-9, abs=1e-12)
        else:
            assert abs(res["trace"] - truth.sum()) < 5 * res["trace_stderr"] + 1e-9
    # the default blocks cover the model exactly once
    if patterns is None:
        assert sum(r["dim"] for r in got.values()) == op.dim
