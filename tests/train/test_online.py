"""Online length-generalization training: fresh batches, a curriculum, stop at mastery."""

import math

import numpy as np
import pytest
import torch
from helpers import same_run

from landscape.errors import LandscapeError
from landscape.runs.run import Run
from landscape.train.recipe import RECIPE_DIR, load_recipe
from landscape.train.tasks.algorithmic import AlgorithmicConfig, generate, online_batch
from landscape.train.trainer import Trainer, train

TASK = {"name": "parity", "train_min_len": 1, "train_max_len": 6, "test_lengths": [6, 12],
        "n_train": 64, "n_test": 64, "online": True, "curriculum_steps": 60}
MODEL = {"d_model": 16, "n_heads": 2}


def online_recipe(**train_over):
    tc = {"steps": 60, "eval_every": 10, "checkpoint_every": 30, "batch_size": 16,
          "threads": 1, **train_over}
    return load_recipe(RECIPE_DIR / "length" / "parity.toml",
                       overrides=[{"task": TASK, "model": MODEL, "train": tc}])


def test_curriculum_opens_one_length_at_a_time():
    cfg = AlgorithmicConfig("parity", train_min_len=1, train_max_len=4, online=True,
                            curriculum_steps=400)
    assert [cfg.longest_at(s) for s in (0, 99, 100, 199, 200, 300, 399, 10**6)] == \
        [1, 1, 2, 2, 3, 4, 4, 4]
    assert AlgorithmicConfig("parity", train_max_len=4).longest_at(0) == 4


def test_online_batches_are_fresh_deterministic_and_follow_the_curriculum():
    cfg = AlgorithmicConfig("copy", train_min_len=2, train_max_len=9, online=True,
                            curriculum_steps=800, seed=5)
    a, b = online_batch(cfg, 3, 32), online_batch(cfg, 3, 32)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(online_batch(cfg, 4, 32).inputs, a.inputs)  # fresh every step
    assert a.sizes.max() <= cfg.longest_at(3) == 2
    late = online_batch(cfg, 10**5, 512)
    assert late.sizes.min() >= 2 and late.sizes.max() == 9
    # the batches never replay an evaluation split's stream
    data = generate(cfg)
    assert not torch.equal(late.inputs[:64, :8], data.evals["iid"].inputs[:64, :8])


def test_online_adds_a_validation_split_apart_from_iid():
    data = generate(AlgorithmicConfig("parity", train_max_len=6, online=True))
    assert list(data.evals)[:2] == ["iid", "val"]
    assert not torch.equal(data.evals["iid"].inputs, data.evals["val"].inputs)
    assert "val" not in generate(AlgorithmicConfig("parity", train_max_len=6)).evals


@pytest.mark.parametrize("bad, match", [
    ({"curriculum_steps": -1}, "curriculum_steps"),
    ({"curriculum_steps": 10, "online": False}, "needs online"),
    ({"online": "yes"}, "online"),
])
def test_bad_online_settings(bad, match):
    with pytest.raises(LandscapeError, match=match):
        AlgorithmicConfig("parity", **{"online": True, **bad})


def test_stops_at_mastery_after_the_curriculum(tmp_path, monkeypatch):
    # accuracy is forced to 1 from the first evaluation: the stop waits for the curriculum
    from landscape.train import trainer as tr

    monkeypatch.setattr(tr, "evaluate", lambda model, split, batch=256:
                        {"loss": 0.0, "acc": 1.0, "seq_acc": 1.0})
    r = online_recipe(steps=400, stop_acc=0.95, monitor_splits=["iid", "val"])
    run = Run.open(train(r, tmp_path / "s.h5"))
    stop = [e for e in run.events if e["kind"] == "stop"]
    assert stop == [{"kind": "stop", "step": 50, "split": "iid", "acc": 1.0,
                     "stop_acc": 0.95}]  # longest_at(50) == 6: the first full-range eval
    assert run.attrs["status"] == "complete"
    assert int(run.metrics["step"][-1]) == 50 and run.steps.tolist()[-1] == 50
    assert not math.isnan(run.metrics["len_12.acc"][-1])  # the stopping eval is a full one
    with pytest.raises(LandscapeError, match="already complete"):
        train(None, tmp_path / "s.h5", resume=True)


def test_monitor_splits_evaluate_the_rest_at_checkpoints_only(tmp_path):
    run = Run.open(train(online_recipe(monitor_splits=["iid"]), tmp_path / "m.h5"))
    steps = run.metrics["step"].astype(int).tolist()
    assert steps == [0, 10, 20, 30, 40, 50, 60]
    full = ~np.isnan(run.metrics["len_12.acc"])
    assert [s for s, f in zip(steps, full) if f] == [0, 30, 60]
    assert not np.isnan(run.metrics["iid.acc"]).any()


def test_no_stop_below_the_threshold(tmp_path):
    r = online_recipe(stop_acc=1.0, steps=40)
    run = Run.open(train(r, tmp_path / "n.h5"))
    assert not [e for e in run.events if e["kind"] == "stop"]
    assert int(run.metrics["step"][-1]) == 40


@pytest.mark.parametrize("over, match", [
    ({"stop_acc": 0.9, "stop_split": "len_99"}, "not an evaluation split"),
    ({"monitor_splits": ["nope"]}, "not an evaluation split"),
    ({"stop_acc": 0.9, "stop_split": "val", "monitor_splits": ["iid"]}, "must be one of"),
])
def test_bad_stop_and_monitor_splits(tmp_path, over, match):
    with pytest.raises(LandscapeError, match=match):
        train(online_recipe(**over), tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_online_run_resumes_bit_identically(tmp_path, monkeypatch):
    r = online_recipe(monitor_splits=["iid"], checkpoint_every=20)
    full = train(r, tmp_path / "full.h5")
    real, calls = Trainer._commit, {"n": 0}

    def crash_after_two(self, final=False):
        real(self, final)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_commit", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(r, tmp_path / "cut.h5")
    monkeypatch.setattr(Trainer, "_commit", real)
    assert Run.open(tmp_path / "cut.h5").steps.tolist() == [0, 20, 40]
    train(None, tmp_path / "cut.h5", resume=True)
    same_run(full, tmp_path / "cut.h5")
