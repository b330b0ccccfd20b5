import pytest
import torch

from landscape.curvature.objective import ParamLayout, detached_params
from landscape.errors import LandscapeError
from landscape.train.model import LoopedTransformer, ModelConfig, token_loss
from landscape.train.split_loss import make_loss_fn
from landscape.train.tasks.base import IGNORE, Split


def _split(n=10, t=6, vocab=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(vocab, (n, t), generator=g)
    y = torch.randint(vocab, (n, t), generator=g)
    y[:, :2] = IGNORE  # unequal scored counts per chunk make a mean of means wrong
    y[0, :] = IGNORE
    return Split(x, y)


@pytest.mark.parametrize("chunk", [1, 3, 10, 64])
def test_chunked_loss_is_the_token_mean(chunk):
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(d_model=8, loops=3), 5, 6).double()
    split = _split()
    params = detached_params(model)
    direct = token_loss(model(split.inputs), split.targets)
    assert float(make_loss_fn(model, split, chunk=chunk)(params)) == pytest.approx(
        float(direct), rel=1e-12)
    g1 = torch.func.grad(make_loss_fn(model, split, chunk=chunk))(params)
    g2 = torch.func.grad(make_loss_fn(model, split, chunk=len(split)))(params)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-10, atol=1e-12)


def test_chunk_below_one_is_refused():
    model = LoopedTransformer(ModelConfig(d_model=8), 5, 6)
    with pytest.raises(LandscapeError, match="chunk=0"):
        make_loss_fn(model, _split(), chunk=0)


def test_layout_round_trip():
    model = LoopedTransformer(ModelConfig(d_model=8, mlp=True), 5, 6)
    params = detached_params(model)
    layout = ParamLayout.of(model)
    flat = layout.flatten(params)
    assert flat.shape == (layout.size,) and layout.size == sum(p.numel() for p in params.values())
    back = layout.unflatten(flat)
    assert all(torch.equal(back[n], params[n]) for n in params)
    assert ParamLayout.from_json(layout.to_json()) == layout
    assert layout.offsets[1] == params[layout.names[0]].numel()


def test_layout_and_split_refuse_bad_input_with_landscape_error():
    layout = ParamLayout(("a", "b"), ((2, 3), (4,)))
    ok = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    assert layout.flatten(ok).shape == (10,)
    with pytest.raises(LandscapeError, match="missing"):
        layout.flatten({"a": ok["a"]})
    with pytest.raises(LandscapeError, match="'b' has 5 entries"):
        layout.flatten({"a": ok["a"], "b": torch.zeros(5)})
    with pytest.raises(LandscapeError, match="vector has 9 entries"):
        layout.unflatten(torch.zeros(9))
    with pytest.raises(LandscapeError, match="not a parameter layout"):
        ParamLayout.from_json({"names": ["a"]})
    with pytest.raises(LandscapeError, match="1 names, 2 shapes"):
        ParamLayout.from_json({"names": ["a"], "shapes": [[1], [2]]})
    with pytest.raises(LandscapeError, match=r"must both be \[N, T\]"):
        Split(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))


def test_loss_functions_keep_tied_weights_tied():
    """A head tied to the embedding gets the gradient of both uses (functional_call ties)."""
    from torch import nn

    from landscape.curvature.objective import has_tied_tensors
    from landscape.runs.own_models import make_custom_loss_fn

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            return self.head(torch.tanh(self.emb(x)))

    torch.manual_seed(0)
    model = Tied()
    assert has_tied_tensors(model) and not has_tied_tensors(nn.Linear(2, 2))
    x = torch.randint(0, 5, (24,))
    y = torch.randint(0, 5, (24,))
    loss_fn = make_custom_loss_fn(model, "cross_entropy", "pair",
                                  {"inputs": x.numpy(), "targets": y.numpy()}, trust_code=False)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    (g,) = torch.autograd.grad(loss_fn(params), [params["emb.weight"]])
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(g, model.emb.weight.grad)
