"""Untied layers, loop counts that follow the input size, and FLOPs counted from the config."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from landscape.curvature.objective import ParamLayout
from landscape.errors import LandscapeError
from landscape.train.model import LoopedTransformer, ModelConfig, forward_flops, token_loss


def _model(**kw):
    torch.manual_seed(0)
    return LoopedTransformer(ModelConfig(d_model=8, n_heads=2, **kw), vocab_size=7, max_len=16)


def test_untied_layers_have_their_own_weights_and_the_compute_of_looping():
    single, untied = _model(), _model(layers=3)
    n1, n3 = (ParamLayout.of(m).size for m in (single, untied))
    head = sum(p.numel() for n, p in single.named_parameters() if not n.startswith("block."))
    assert n3 - head == 3 * (n1 - head)  # three blocks' worth of block parameters
    x = torch.randint(0, 7, (2, 5))
    with torch.no_grad():  # the three blocks in order, once each
        h = untied.embed(x) + untied.pos.weight[:5]
        for block in (untied.block, *untied.untied):
            h = block(h)
        expected = untied.head(untied.ln_f(h))
        torch.testing.assert_close(untied(x), expected)
    assert forward_flops(untied.cfg, 7, 5, 1) == forward_flops(single.cfg.__class__(
        d_model=8, n_heads=2, loops=3), 7, 5, 3)


def test_loop_count_follows_each_samples_input_size():
    model = _model(positions="none", input_injection=True, loop_rule="size", loop_scale=1,
                   loop_offset=1)
    x = torch.randint(0, 7, (3, 6))
    sizes = torch.tensor([1, 4, 2])
    with torch.no_grad():
        batch = model(x, sizes=sizes)
        for i, n in enumerate(sizes.tolist()):  # each alone, with T(n) = n + 1 loops
            alone = model(x[i : i + 1], loops=n + 1)
            torch.testing.assert_close(batch[i : i + 1], alone)
            other = model(x[i : i + 1], loops=n + 2)
            assert not torch.allclose(batch[i : i + 1], other)
    with pytest.raises(LandscapeError, match="sizes"):
        model(x)


def test_bad_depth_settings():
    for kw in ({"layers": 0}, {"loop_rule": "length"}, {"loop_scale": 0, "loop_offset": 0}):
        with pytest.raises(LandscapeError):
            ModelConfig(**kw)


@pytest.mark.parametrize("kw", [{}, {"mlp": True, "d_mlp": 12, "loops": 2},
                                {"layers": 3, "attention": "linear"}])
def test_flops_match_torch_flop_counter(kw):
    """The hand count against torch's own count of the matrix products actually run."""
    model = _model(**kw)
    x, t = torch.randint(0, 7, (4, 9)), 9
    y = torch.randint(0, 7, (4, 9))
    passes = model.cfg.loops
    with FlopCounterMode(display=False) as fwd:
        logits = model(x)
    with FlopCounterMode(display=False) as both:
        token_loss(model(x), y).backward()
    assert fwd.get_total_flops() == 4 * forward_flops(model.cfg, 7, t, passes)
    assert both.get_total_flops() == 3 * 4 * forward_flops(model.cfg, 7, t, passes)
    assert logits.shape == (4, 9, 7)


def test_flops_by_hand_on_a_tiny_config():
    cfg = ModelConfig(d_model=4, n_heads=2, mlp=True, d_mlp=8, loops=2)
    # per pass: q,k,v,o 4 * 2*3*4*4 = 384; scores and mixing 2 * 2*3*3*4 = 144;
    # MLP 2 * 2*3*4*8 = 384; two passes; head 2*3*4*5 = 120
    assert forward_flops(cfg, vocab_size=5, seq_len=3, passes=2) == 2 * (384 + 144 + 384) + 120
