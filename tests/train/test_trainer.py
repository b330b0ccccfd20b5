import math

import numpy as np
import pytest
import torch
from helpers import same_run, tiny_recipe

from landscape.errors import LandscapeError
from landscape.runfile import store
from landscape.runs.run import Run
from landscape.train.trainer import Trainer, train


def test_deterministic(tmp_path, recipe):
    same_run(train(recipe, tmp_path / "a.h5"), train(recipe, tmp_path / "b.h5"))


def test_run_contents(trained_runs):
    run = Run.open(trained_runs["single"])
    assert run.status == "complete"
    spe = 128 // 16
    np.testing.assert_array_equal(run.steps, np.arange(0, 4 * spe + 1, spe))
    assert run.metrics["step"].tolist() == run.steps.tolist()
    assert math.isnan(run.metrics["train_loss"][0]) and run.metrics["train_loss"][-1] > 0
    for split in ("simple", "complex", "all"):
        assert 0 <= run.metrics[f"{split}.acc"][-1] <= 1
        assert run.ceilings[split]["acc"] > 0
    assert run.attrs["throughput"] > 0
    assert run.layout.size == run.trajectory().shape[1]
    assert (np.diff(run.metrics["wall"]) > 0).all()
    assert run.metrics["lr"][-1] == pytest.approx(3e-3)
    # training lowers the loss on the data it sees
    assert run.metrics["all.loss"][-1] < run.metrics["all.loss"][0]


def test_checkpoint_rows_are_the_weights(trained_runs):
    run = Run.open(trained_runs["looped"])
    model = run.model(step=run.steps[2])
    assert model.loops == 3 and not model.training
    flat = run.layout.flatten(dict(model.named_parameters()))
    np.testing.assert_array_equal(flat.detach().numpy(), run.flat_params(run.steps[2]))


def test_shift_at_fixed_step(trained_runs):
    run = Run.open(trained_runs["shift"])
    (event,) = [e for e in run.events if e["kind"] == "shift"]
    assert event["step"] == 16 and event["reason"] == "fixed"
    assert run.shift_step == 16
    assert run.loops[run.steps <= 16].tolist() == [1, 1, 1]
    assert (run.loops[run.steps > 16] == 3).all()
    assert run.metrics["loops"][-1] == 3
    # before the switch, SHIFT is exactly Single-Attn with the same seed
    single = Run.open(trained_runs["single"])
    np.testing.assert_array_equal(single.trajectory()[:3], run.trajectory()[:3])


def test_shift_criterion_fires_and_records_values(tmp_path):
    r = tiny_recipe(train={"epochs": 12, "eval_every": 4, "checkpoint_every": 8},
                    shift={"enabled": True, "window": 2, "patience": 1, "delta_1": 10.0,
                           "delta_2": 1.0})
    run = Run.open(train(r, tmp_path / "s.h5"))
    (event,) = [e for e in run.events if e["kind"] == "shift"]
    # the criterion needs 2 * window = 4 evaluations with a training loss: steps 4..16
    assert event["reason"] == "criterion" and event["step"] == 16
    assert event["criterion"] == "training" and "split" not in event and "ceiling" not in event
    assert event["improvement"] < 10.0 and event["acc_rise"] < 1.0 and event["streak"] == 1
    # the values it recorded are those of the stored training metrics (training data only)
    m = run.metrics
    losses, accs = m["train_loss"][1:5], m["train_acc"][1:5]
    assert event["improvement"] == pytest.approx(
        (losses[:2].mean() - losses[2:].mean()) / losses[:2].mean())
    assert event["acc_rise"] == pytest.approx(accs[2:].mean() - accs[:2].mean())
    assert 16 in run.steps.tolist()  # a checkpoint at the switch, with loops before it
    assert run.loops[run.steps.tolist().index(16)] == 1


def test_training_accuracy_is_recorded():
    from landscape.train.trainer import Trainer

    trainer = Trainer(tiny_recipe(), "unused.h5")
    trainer._record_eval()  # step 0: nothing trained yet
    trainer._train_step()
    trainer._train_step()
    trainer._record_eval()
    row = trainer._pending["metrics"][-1]
    assert 0 <= row["train_acc"] <= 1 and np.isnan(trainer._pending["metrics"][0]["train_acc"])


def _poison(monkeypatch, rng_seed=0):
    """Evaluation metrics replaced by garbage: NaN losses and accuracies."""
    from landscape.train.trainer import Trainer

    def garbage(self, split):
        return {"loss": float("nan"), "acc": float("nan"), "seq_acc": float("nan")}

    monkeypatch.setattr(Trainer, "_evaluate", garbage)


def _switch(path):
    run = Run.open(path)
    (event,) = [e for e in run.events if e["kind"] == "shift"]
    return run, event


def test_shift_switch_never_reads_an_evaluation_split(tmp_path, monkeypatch):
    shift = {"enabled": True, "window": 2, "patience": 2, "delta_1": 0.05, "delta_2": 0.02,
             "max_fraction": 0.9}
    r = tiny_recipe(train={"epochs": 24, "eval_every": 4, "checkpoint_every": 8}, shift=shift)
    clean, event = _switch(train(r, tmp_path / "clean.h5"))
    assert event["reason"] == "criterion"  # a real decision, not the cap
    _poison(monkeypatch)
    dirty, poisoned = _switch(train(r, tmp_path / "dirty.h5"))
    assert np.isnan(dirty.metrics["simple.acc"]).all()  # the poison reached the metrics
    assert poisoned == event  # same step, same criterion values
    np.testing.assert_array_equal(clean.trajectory(), dirty.trajectory())


def test_the_poison_test_catches_a_criterion_that_reads_evaluations(tmp_path, monkeypatch):
    # the oracle variant does read the simple split: the same poison changes its switch
    shift = {"enabled": True, "criterion": "oracle", "window": 2, "patience": 1,
             "delta_1": 10.0, "delta_2": 1.0, "max_fraction": 0.9}
    r = tiny_recipe(train={"epochs": 12, "eval_every": 4, "checkpoint_every": 8}, shift=shift)
    _, event = _switch(train(r, tmp_path / "clean.h5"))
    assert event["reason"] == "criterion" and event["step"] == 16
    assert event["criterion"] == "oracle" and event["split"] == "simple"
    assert event["ceiling"] == pytest.approx(Run.open(tmp_path / "clean.h5")
                                             .ceilings["simple"]["acc"])
    _poison(monkeypatch)
    _, poisoned = _switch(train(r, tmp_path / "dirty.h5"))
    assert poisoned["reason"] == "cap" and poisoned["step"] != event["step"]


def test_shift_cap(tmp_path):
    r = tiny_recipe(shift={"enabled": True, "delta_1": 0.0, "max_fraction": 0.25})
    run = Run.open(train(r, tmp_path / "s.h5"))
    (event,) = [e for e in run.events if e["kind"] == "shift"]
    assert event["reason"] == "cap" and event["step"] == 8


def test_shift_resets_optimizer_on_request(tmp_path):
    keep = tiny_recipe(shift={"enabled": True, "at_step": 8})
    reset = tiny_recipe(shift={"enabled": True, "at_step": 8, "keep_optimizer": False})
    a = Run.open(train(keep, tmp_path / "a.h5")).trajectory()
    b = Run.open(train(reset, tmp_path / "b.h5")).trajectory()
    np.testing.assert_array_equal(a[:2], b[:2])
    assert not np.array_equal(a[2], b[2])


def test_bad_shift_split(tmp_path):
    r = tiny_recipe(shift={"enabled": True, "criterion": "oracle", "split": "hard"})
    with pytest.raises(LandscapeError, match="shift.split='hard'"):
        train(r, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_lr_schedule():
    r = tiny_recipe(train={"lr": 1.0, "warmup_steps": 10, "schedule": "cosine",
                           "final_lr_ratio": 0.1})
    assert r.lr_at(0, 100) == pytest.approx(0.1)
    assert r.lr_at(9, 100) == pytest.approx(1.0)
    assert r.lr_at(10, 100) == pytest.approx(1.0)
    assert r.lr_at(99, 100) == pytest.approx(0.1)
    assert r.lr_at(10 + 89 // 2, 100) == pytest.approx(0.55, abs=0.02)


def test_nan_loss_stops_with_message_and_keeps_file(tmp_path, monkeypatch):
    path = tmp_path / "n.h5"
    r = tiny_recipe()
    calls = {"n": 0}
    real = Trainer._train_step

    def poisoned(self):
        calls["n"] += 1
        if calls["n"] == 12:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return real(self)

    monkeypatch.setattr(Trainer, "_train_step", poisoned)
    with pytest.raises(LandscapeError, match="loss became nan at step 11"):
        train(r, path)
    run = Run.open(path)  # readable, with everything up to the last commit
    assert run.steps.tolist() == [0, 8] and run.status == "training"
    assert store.writer_holding(path) is None


def test_resume_continues_bit_identically(tmp_path, monkeypatch):
    r = tiny_recipe()
    full = train(r, tmp_path / "full.h5")
    path = tmp_path / "cut.h5"
    real = Trainer._commit
    calls = {"n": 0}

    def crash_after_two(self, final=False):
        real(self, final)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands in for a kill right after a commit

    monkeypatch.setattr(Trainer, "_commit", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(r, path)
    monkeypatch.setattr(Trainer, "_commit", real)
    assert Run.open(path).steps.tolist() == [0, 8, 16]
    train(None, path, resume=True)
    same_run(full, path)
    assert any(e["kind"] == "resume" for e in Run.open(path).events)


def test_resume_refuses_complete_and_foreign(tmp_path, trained_runs):
    with pytest.raises(LandscapeError, match="already complete"):
        train(None, trained_runs["single"], resume=True)
    r = tiny_recipe(train={"epochs": 5})
    path = tmp_path / "c.h5"
    train(tiny_recipe(train={"epochs": 1}), path)
    with pytest.raises(LandscapeError, match="already exists"):
        train(r, path)


def test_adam_second_moment_is_recorded(trained_runs):
    run = Run.open(trained_runs["looped"])
    v0, n0 = run.adam_state(0)
    assert n0 == 0 and not v0.any()
    v, n = run.adam_state(-1)
    assert n == run.steps[-1] and (v > 0).mean() > 0.9 and v.shape == (run.layout.size,)


def test_training_flops_are_counted_from_the_architecture(trained_runs):
    from landscape.train.model import forward_flops

    for arch, loops in (("single", 1), ("looped", 3)):
        run = Run.open(trained_runs[arch])
        r = run.recipe
        per_step = 3 * r.train.batch_size * forward_flops(
            r.model, int(run.task_attrs["vocab_size"]), r.task.seq_len, loops)
        assert run.metrics["flops"].tolist() == [s * per_step for s in run.metrics["step"]]
    shift = Run.open(trained_runs["shift"])  # 1 loop up to step 16, 3 after
    single, looped = (Run.open(trained_runs[a]).metrics for a in ("single", "looped"))
    last = shift.metrics["flops"][-1]
    assert last == single["flops"][-1] / 2 + looped["flops"][-1] / 2


def test_loop_count_follows_the_input_size_in_training(tmp_path):
    from landscape.train.model import forward_flops
    from landscape.train.recipe import load_recipe

    r = load_recipe(overrides=[{
        "task": {"name": "parity", "train_max_len": 3, "n_train": 64, "n_test": 16},
        "model": {"d_model": 8, "n_heads": 2, "positions": "none", "input_injection": True,
                  "loop_rule": "size"},
        "train": {"batch_size": 64, "steps": 2, "eval_every": 1, "checkpoint_every": 2}}])
    run = Run.open(train(r, tmp_path / "p.h5"))
    # one batch holds every training sample, the largest n = 3: three passes per step
    width = 3 + 2  # 3 bits, SEP, 1 answer bit
    per_step = 3 * 64 * forward_flops(r.model, 6, width, 3)
    assert run.metrics["flops"].tolist() == [0, per_step, 2 * per_step]
    model = run.model()
    from landscape.train.tasks import generate

    split = generate(r.task).evals["len_6"]
    with torch.no_grad():  # the test length 6 runs 6 passes, as T(n) = n says
        torch.testing.assert_close(model(split.inputs, sizes=split.sizes),
                                   model(split.inputs, loops=6))


def test_windows_hold_every_step_of_their_stretch(tmp_path):
    # 4 epochs of 8 steps (32), checkpoints every 8; windows at steps 4 (12 steps) and 28
    r = tiny_recipe(train={"window_steps": 12, "window_at": [4, 28]})
    run = Run.open(train(r, tmp_path / "w.h5"))
    first, last = run.windows()
    assert first.start == 4 and first.steps.tolist() == list(range(4, 16))
    assert first.updates.shape == (12, run.layout.size) and first.updates.dtype == np.float32
    assert first.lr.tolist() == [r.lr_at(s, 32) for s in range(4, 16)]
    assert first.loops.tolist() == [1] * 12 and first.complete and not first.cut
    # the updates of steps 8..15 carry checkpoint 8 to checkpoint 16 (float32 rounding)
    moved = run.flat_params(8).astype(np.float64) + first.updates[4:].astype(np.float64).sum(0)
    np.testing.assert_allclose(moved, run.flat_params(16), rtol=0, atol=2e-6)
    assert not np.allclose(run.flat_params(8), run.flat_params(16), rtol=0, atol=1e-4)
    # each step's loss is the one the metrics average over the epoch before step 16
    i = run.metrics["step"].tolist().index(16)
    assert first.loss[4:].mean() == pytest.approx(run.metrics["train_loss"][i], rel=1e-12)
    # the budget (32 steps) cuts the second window to 4 steps, and says so
    assert last.steps.tolist() == [28, 29, 30, 31] and last.planned == 4
    assert last.requested == 12 and last.cut and last.complete
    (cut,) = [e for e in run.events if e["kind"] == "window_cut"]
    assert cut == {"kind": "window_cut", "step": 28, "planned": 4, "requested": 12,
                   "total_steps": 32}


def test_a_run_killed_mid_window_resumes_to_the_same_window(tmp_path, monkeypatch):
    r = tiny_recipe(train={"epochs": 2, "window_steps": 8, "window_at": [4]})
    full = train(r, tmp_path / "full.h5")
    path = tmp_path / "cut.h5"
    real = Trainer._train_step

    def killed_at_step_10(self):
        if self.state.step == 10:
            raise KeyboardInterrupt  # stands in for a kill between two commits
        return real(self)

    monkeypatch.setattr(Trainer, "_train_step", killed_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        train(r, path)
    (partial,) = Run.open(path).windows()
    assert partial.steps.tolist() == [4, 5, 6, 7] and not partial.complete  # commit at 8
    monkeypatch.setattr(Trainer, "_train_step", real)
    train(None, path, resume=True)
    same_run(full, path)
    (a,), (b,) = Run.open(full).windows(), Run.open(path).windows()
    assert b.steps.tolist() == list(range(4, 12))
    for field in ("steps", "updates", "loss", "lr", "loops"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert (a.start, a.planned, a.requested) == (b.start, b.planned, b.requested)


def test_no_windows_by_default_and_a_window_past_the_budget_is_refused(tmp_path,
                                                                        trained_runs):
    assert Run.open(trained_runs["single"]).windows() == []
    r = tiny_recipe(train={"window_steps": 4, "window_at": [32]})
    with pytest.raises(LandscapeError, match="window at step 32 starts after the run's last"):
        train(r, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
