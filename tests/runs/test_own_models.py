"""Own models' losses: floating inputs follow the parameters' dtype, and the built-in losses
over labels with -100."""

import numpy as np
import pytest
import torch
from any_model import cnn, mlp, vectors
from torch import nn

from landscape.curvature.hessian import HessianOperator
from landscape.curvature.objective import ParamLayout
from landscape.runs.own_models import cast_batch, make_custom_loss_fn, probe_arrays


def _loss_fn(model, probe, loss):
    form, arrays = probe_arrays(probe)
    return make_custom_loss_fn(model, loss, form, arrays, trust_code=True, chunk=5)


def _params(model, dtype):
    return {n: p.detach().to(dtype) for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_inputs_follow_the_parameters_dtype(dtype):
    model = mlp().eval()
    x, y = vectors(12)
    f = _loss_fn(model, (x, y), "cross_entropy")
    ref = mlp().to(dtype).eval()
    ref.load_state_dict(model.state_dict())
    want = nn.functional.cross_entropy(ref(x.to(dtype)), y)
    got = f(_params(model, dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got, want)
    with f.bind(_params(model, dtype)) as bound:  # the grids' path
        torch.testing.assert_close(bound(), want)


def test_batchnorm_buffers_and_images_in_float64_match_a_float64_model():
    model = cnn().eval()
    with torch.no_grad():  # statistics that are not the initial ones
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn2.running_var.uniform_(0.5, 2.0)
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(7) % 3
    f = _loss_fn(model, (x, y), "cross_entropy")
    ref = cnn().double().eval()
    ref.load_state_dict(model.state_dict())
    torch.testing.assert_close(f(_params(model, torch.float64)),
                               nn.functional.cross_entropy(ref(x.double()), y))
    assert model.bn1.running_mean.dtype == torch.float32  # the module itself is untouched


def test_hessian_in_float64_on_float_inputs_matches_a_dense_reference():
    model = mlp(d_in=3, width=4, d_out=2).eval()
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(2))
    y = torch.tanh(x[:, :2])
    f = _loss_fn(model, (x, y), "mse")
    params = _params(model, torch.float64)
    layout = ParamLayout.of(params)
    op = HessianOperator(f, params, dtype=torch.float64)
    dense = torch.stack([op.matvec(e) for e in torch.eye(layout.size, dtype=torch.float64)])
    ref = mlp(d_in=3, width=4, d_out=2).double().eval()

    def reference(flat):
        out = torch.func.functional_call(ref, layout.unflatten(flat), (x.double(),))
        return ((out - y.double()) ** 2).mean()

    want = torch.autograd.functional.hessian(reference, layout.flatten(params))
    torch.testing.assert_close(dense, want)


def test_cast_batch_leaves_integers_and_masks_alone():
    batch = {"pixels": torch.randn(2, 3), "input_ids": torch.ones(2, 3, dtype=torch.long),
             "keep": torch.ones(2, 3, dtype=torch.bool)}
    out = cast_batch(batch, torch.float64)
    assert [v.dtype for v in out.values()] == [torch.float64, torch.long, torch.bool]
    assert cast_batch((batch["pixels"], batch["input_ids"]), None)[0].dtype == torch.float32


class _Tagger(nn.Module):
    """Token ids and a float feature per token in, logits per token out (a dict batch)."""

    def __init__(self, vocab=7, classes=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, 5)
        self.feat = nn.Linear(1, 5)
        self.head = nn.Linear(5, classes)

    def forward(self, input_ids, feature):
        return self.head(torch.tanh(self.emb(input_ids) + self.feat(feature[..., None])))


def _tagged(labels_per_row):
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 7, (4, 5), generator=g)
    labels = torch.randint(0, 4, (4, 5), generator=g)
    labels[:, labels_per_row:] = -100
    return {"input_ids": ids, "feature": torch.randn(4, 5, generator=g), "labels": labels}


@pytest.mark.parametrize("scored", [5, 2])
def test_masked_lm_scores_only_labels_that_are_not_minus_100(scored):
    torch.manual_seed(0)
    model = _Tagger().eval()
    batch = _tagged(scored)
    f = _loss_fn(model, batch, "masked_lm")
    logits = model(batch["input_ids"], batch["feature"])
    labels = batch["labels"]
    keep = labels != -100
    want = nn.functional.cross_entropy(logits[keep], labels[keep])
    got = f(_params(model, torch.float64))  # float features at float64 parameters
    torch.testing.assert_close(got, want.double(), rtol=1e-5, atol=1e-6)
    if scored < 5:  # not the mean over every position (ignored ones count as 0 loss)
        naive = nn.functional.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1),
                                            reduction="sum") / labels.numel()
        assert not np.isclose(float(got.detach()), float(naive.detach()))


def test_cross_entropy_over_labels_skips_minus_100():
    model = mlp().eval()
    x, y = vectors(10)
    y[::3] = -100
    form, arrays = probe_arrays((x, y))
    f = make_custom_loss_fn(model, "cross_entropy", form, arrays, trust_code=True, chunk=4)
    keep = y != -100
    want = nn.functional.cross_entropy(model(x)[keep], y[keep])
    torch.testing.assert_close(f(_params(model, torch.float32)), want)
