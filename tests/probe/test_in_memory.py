"""landscape.analyze on a plain module against a dense float64 Hessian."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import landscape
from landscape.errors import LandscapeError
from landscape.probe import GeometrySettings, HessianSettings
from landscape.runfile import schema as sc

N, D_IN, HIDDEN, CLASSES = 12, 4, 5, 3


def _mlp_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(HIDDEN, CLASSES))
    x = torch.randn(N, D_IN)  # float32 inputs: cast to the float64 products
    y = torch.randint(0, CLASSES, (N,))
    return model, (x, y)


def _dense_hessian(model, x, y) -> torch.Tensor:
    """The float64 Hessian of the mean cross-entropy in eval mode, by autograd."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [q.shape for _, q in model.named_parameters()]
    flat = torch.cat([q.detach().double().reshape(-1) for _, q in model.named_parameters()])
    twin = _twin(model)

    def loss(v):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = v[i : i + s.numel()].reshape(s)
            i += s.numel()
        out = torch.func.functional_call(twin, params, (x.double(),))
        return nn.functional.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss, flat)


def _twin(model):
    import copy

    return copy.deepcopy(model).eval().double()


def test_analyze_matches_the_dense_hessian_and_leaves_the_model_alone():
    model, (x, y) = _mlp_and_batch()
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = landscape.analyze(model, (x, y), loss="cross_entropy",
                              parts=("top", "trace", "slq", "exact", "slice"),
                              hessian=HessianSettings(k_top=3, k_bottom=1, trace_hvps=300,
                                                      dtype="float64"),
                              geometry=GeometrySettings(grid=3))
    dense = torch.linalg.eigvalsh(_dense_hessian(model, x, y)).numpy()
    assert isinstance(found["top"], sc.Top) and isinstance(found["slice"], sc.SliceRandom)
    np.testing.assert_allclose(found["top"].values, dense[::-1][:3], rtol=1e-8)
    np.testing.assert_allclose(found["top"].bottom_values, dense[:1], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(found["exact"].eigvals, dense, atol=1e-10)
    trace = found["trace"]  # Hutch++: stochastic, within 3 of its standard errors
    assert abs(trace.estimate - dense.sum()) <= 3 * trace.stderr < 0.15 * dense.sum()
    assert found["slq"].dim == dense.size and found["slice"].loss.shape == (3, 3)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[3].weight.grad is None and model[0].weight.dtype == torch.float32
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_parts_print_shapes_and_headline_numbers_not_arrays():
    model, batch = _mlp_and_batch()
    found = landscape.analyze(model, batch, parts=("top", "slice"),
                              hessian=HessianSettings(k_top=2, k_bottom=0),
                              geometry=GeometrySettings(grid=5))
    text = repr(found)
    assert "vectors=array[2, 43]" in text and "loss=array[5, 5]" in text
    assert re.search(r"values=\[[0-9.e+-]+, [0-9.e+-]+\]", text), text
    assert "converged=[2 of 2 True]" in text
    assert len(text) < 1000, text


def test_analyze_refuses_an_unknown_part_and_a_batch_that_does_not_fit():
    model, (x, y) = _mlp_and_batch()
    with pytest.raises(LandscapeError, match="unknown part.*valley"):
        landscape.analyze(model, (x, y), parts=("valley",))
    with pytest.raises(LandscapeError, match="targets"):
        landscape.analyze(model, (x, y.float()), loss="cross_entropy")


def _readme_block(title: str) -> str:
    """The first python code block after the line ``title`` in README.md."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    after = text[text.index(title):]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_the_readme_in_memory_example_runs_as_written():
    code = _readme_block("### In memory")
    namespace: dict = {}
    exec(compile(code, "README.md (In memory)", "exec"), namespace)  # noqa: S102
    assert isinstance(namespace["found"]["top"], sc.Top)
