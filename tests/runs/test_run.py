import numpy as np
import pytest
import torch

from landscape.errors import LandscapeError
from landscape.runfile import schema, store
from landscape.runfile.schema import NotProbed, StaleError
from landscape.runs.run import Run
from landscape.train.archs import LOOPED
from landscape.train.model import token_loss
from landscape.train.trainer import evaluate


def test_open_and_arrays(trained_runs):
    run = Run.open(trained_runs["looped"])
    assert run.recipe.arch == LOOPED
    assert run.steps.dtype == np.int64 and (run.loops == 3).all()
    assert set(run.metrics) >= {"step", "epoch", "wall", "lr", "train_loss", "grad_norm",
                                "simple.acc", "complex.loss", "all.seq_acc", "tokens_per_s"}
    assert "looped" in repr(run)


def test_loss_fn_matches_the_model_and_differentiates(trained_runs):
    run = Run.open(trained_runs["shift"])
    step = int(run.steps[1])  # a Single-Attn checkpoint of the SHIFT run
    loss = run.loss_fn("probe", step=step)
    params = run.params(step)
    model = run.model(step)
    assert model.loops == 1
    split = run.split("probe")
    direct = token_loss(model(split.inputs), split.targets).detach()
    assert float(loss(params)) == pytest.approx(float(direct), rel=1e-6)
    # the probe set is a fixed subset of the training data, with all its tokens scored
    assert len(split) == 16 and split.n_scored == 16 * 12
    grads = torch.func.grad(loss)(params)
    assert set(grads) == set(params) and all(torch.isfinite(g).all() for g in grads.values())
    # the same weights under 3 loops give another objective
    assert float(run.loss_fn("probe", step=step, loops=3)(params)) != float(loss(params))


def test_eval_split_loss_matches_metrics(trained_runs):
    run = Run.open(trained_runs["single"])
    model = run.model(-1)
    res = evaluate(model, run.split("complex"))
    assert res["loss"] == pytest.approx(run.metrics["complex.loss"][-1], rel=1e-6)
    assert float(run.loss_fn("complex")(run.params())) == pytest.approx(res["loss"], rel=1e-6)


def test_bad_step_and_split(trained_runs):
    run = Run.open(trained_runs["single"])
    with pytest.raises(LandscapeError, match="step 7 is not a checkpoint"):
        run.params(7)
    with pytest.raises(LandscapeError, match="unknown split 'hard'"):
        run.split("hard")


def test_split_objective_is_the_loss_and_gives_a_ggn_below_the_hessian(trained_runs):
    from landscape.curvature.ggn import GGNOperator
    from landscape.curvature.hessian import HessianOperator
    from landscape.curvature.spectral import lanczos

    run = Run.open(trained_runs["looped"])
    params = run.params(-1, dtype=torch.float64)
    objective = run.split_objective(step=-1)
    assert len(run.split("probe")) == objective.n_examples
    assert float(objective.loss(params)) == pytest.approx(float(run.loss_fn()(params)),
                                                          rel=1e-12)
    ggn = lanczos(GGNOperator(objective, params), k_top=1, tol=1e-8)
    hess = lanczos(HessianOperator(run.loss_fn(), params), k_top=1, k_bottom=1, tol=1e-8)
    assert ggn.converged and ggn.top_values[0] > 0 > hess.bottom_values[0]


def test_the_optimiser_of_our_own_runs_also_where_it_was_not_stored(trained_runs, tmp_path):
    import shutil

    import h5py

    from landscape.curvature.stability import OptimizerRecord
    from landscape.runfile import store

    run = Run.open(trained_runs["single"])
    tc = run.recipe.train
    adamw = OptimizerRecord("AdamW", beta1=tc.beta1, beta2=tc.beta2, eps=1e-8,
                            weight_decay=tc.weight_decay)
    assert run.optimizer_at(-1) == adamw  # what the trainer stored
    old = tmp_path / "old.h5"  # a run written before optimisers were stored
    shutil.copyfile(trained_runs["single"], old)
    shutil.copytree(store.sidecar_dir(trained_runs["single"]), store.sidecar_dir(old))
    with h5py.File(old, "a") as f:
        del f.attrs["optimizers"]
    assert Run.open(old).optimizer_at(-1) == adamw  # from the recipe, as before
    assert adamw.edge(0.01) == pytest.approx(38 / 0.01)  # beta1 = 0.9


def _sharpness(lambda_max=2.0):
    return schema.Sharpness(lambda_max=lambda_max, lr=0.1, threshold=20.0, adam_lambda_max=1.0,
                            adam_threshold=380.0, adam_step=3)


def test_a_part_never_computed_is_not_probed_and_a_damaged_one_is_stale(trained_runs,
                                                                        tmp_path):
    path = store.copy_run(trained_runs["single"], tmp_path / "r.h5")
    run = Run.open(path)
    step = int(run.steps[-1])
    assert run.part("sharpness") is None and run.part("pca") is None
    for read in (lambda: run.part("sharpness", required=True), run.hessian, run.geometry,
                 run.valley, lambda: run.part("pca", required=True)):
        with pytest.raises(NotProbed, match="landscape probe"):
            read()
    schema.write(path, _sharpness(), step)
    assert run.part("sharpness", required=True).lambda_max == 2.0
    assert run.hessian()["sharpness"].threshold == 20.0
    # another version's group: complete, but without a field this version needs
    group = schema.Sharpness.group(step)
    store.commit(path, lambda tx: (tx.delete(group), tx.put(group, {}, {"complete": True,
                                                                         "lr": 0.1})))
    for read in (lambda: run.part("sharpness"), run.hessian):
        with pytest.raises(StaleError, match="--force") as e:
            read()
        assert not isinstance(e.value, NotProbed)
