"""The model against independent references: causality, PyTorch's attention, loops, rotary."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from landscape.errors import LandscapeError
from landscape.train.model import CausalAttention, LoopedTransformer, ModelConfig, _rope

VOCAB, T = 7, 9
CONFIGS = [dict(attention=a, positions=p, mlp=m, loops=n, input_injection=i)
           for a, p, m, n, i in itertools.product(("softmax", "linear"),
                                                  ("learned", "rope", "none"),
                                                  (False, True), (1, 3), (False, True))
           if not (i and n == 1)]


def _model(**cfg):
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(d_model=8, n_heads=2, **cfg), VOCAB, T).double()
    with torch.no_grad():  # larger weights than the init, so that every path matters
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(10.0)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _tokens(n=3, seed=1):
    return torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_changing_a_later_token_never_changes_an_earlier_output(cfg):
    model = _model(**cfg)
    x = _tokens()
    base = model(x)
    for j in range(T):
        y = x.clone()
        y[:, j] = (y[:, j] + 1) % VOCAB
        out = model(y)
        assert torch.equal(out[:, :j], base[:, :j]), f"position < {j} saw token {j}"
        assert not torch.allclose(out[:, j], base[:, j]), f"position {j} ignores its own token"


@pytest.mark.parametrize("rope", [False, True])
def test_softmax_attention_equals_torch_scaled_dot_product_attention_in_float64(rope):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=12, n_heads=3, positions="rope" if rope else "learned")
    attn = CausalAttention(cfg).double()
    x = torch.randn(4, T, 12, dtype=torch.float64)

    def heads(z):
        return z.view(4, T, 3, 4).transpose(1, 2)

    q, k, v = heads(attn.q(x)), heads(attn.k(x)), heads(attn.v(x))
    if rope:
        q, k = _rope(q), _rope(k)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = attn.o(ref.transpose(1, 2).reshape(4, T, 12))
    torch.testing.assert_close(attn(x), ref, rtol=1e-12, atol=1e-12)


def test_linear_attention_is_the_causal_mean_of_raw_scores():
    torch.manual_seed(0)
    attn = CausalAttention(ModelConfig(d_model=6, n_heads=2, attention="linear")).double()
    x = torch.randn(2, T, 6, dtype=torch.float64)
    q, k, v = (lin(x).view(2, T, 2, 3) for lin in (attn.q, attn.k, attn.v))
    y = torch.zeros(2, T, 2, 3, dtype=torch.float64)
    for t in range(T):  # one position at a time, as the definition reads
        for s in range(t + 1):
            score = (q[:, t] * k[:, s]).sum(-1, keepdim=True) / math.sqrt(3)
            y[:, t] += score * v[:, s] / (t + 1)
    torch.testing.assert_close(attn(x), attn.o(y.reshape(2, T, 6)), rtol=1e-12, atol=1e-12)


def test_loops_change_the_computation_never_the_parameters():
    single, looped = _model(loops=1), _model(loops=3)
    ps, pl = dict(single.named_parameters()), dict(looped.named_parameters())
    assert list(ps) == list(pl) and all(ps[n].shape == pl[n].shape for n in ps)
    looped.load_state_dict(single.state_dict(), strict=True)  # a Single checkpoint fits
    x = _tokens()
    # three loops are the block applied three times to the same residual stream
    h = single.embed(x) + single.pos.weight[:T]
    for _ in range(3):
        h = single.block(h)
    torch.testing.assert_close(looped(x), single.head(single.ln_f(h)), rtol=0, atol=0)
    assert not torch.allclose(looped(x), single(x))
    torch.testing.assert_close(single(x, loops=3), looped(x), rtol=0, atol=0)
    single.loops = 3  # a forward-time setting: no parameter appears or changes
    assert dict(single.named_parameters()).keys() == ps.keys()
    torch.testing.assert_close(single(x), looped(x), rtol=0, atol=0)


def test_rotary_scores_depend_only_on_the_relative_position():
    torch.manual_seed(0)
    q0, k0 = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    q = _rope(q0.expand(1, 1, T, 6).clone())  # the same query and key at every position
    k = _rope(k0.expand(1, 1, T, 6).clone())
    scores = (q @ k.transpose(-2, -1))[0, 0]  # [T, T]
    for m, n in itertools.product(range(T), repeat=2):
        d = m - n
        ref = scores[d, 0] if d >= 0 else scores[0, -d]
        torch.testing.assert_close(scores[m, n], ref, rtol=1e-12, atol=1e-12)
    # a rotation: norms are kept, position 0 is untouched, other positions do move
    torch.testing.assert_close(q.norm(dim=-1), q0.norm().expand(1, 1, T), rtol=1e-12, atol=0)
    torch.testing.assert_close(q[0, 0, 0], q0, rtol=0, atol=0)
    assert not torch.allclose(q[0, 0, 1], q0)
    assert not torch.allclose(scores[1, 0], scores[0, 0])


def test_rotary_and_no_positions_accept_sequences_longer_than_max_len():
    x = torch.randint(0, VOCAB, (2, 2 * T))
    for positions in ("rope", "none"):
        assert _model(positions=positions)(x).shape == (2, 2 * T, VOCAB)
    with pytest.raises(LandscapeError, match="exceeds the 9 learned positions"):
        _model(positions="learned")(x)
