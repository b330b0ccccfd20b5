"""The Trainer and Lightning callbacks: a real trainer.train() / Trainer.fit, then probed."""

import sys

import numpy as np
import pytest
import torch
from own_model import D, build, data

from landscape.errors import LandscapeError
from landscape.runs import callbacks
from landscape.runs.run import Run

VOCAB, T = 20, 8


def _probe_settings():
    from landscape.probe import HessianSettings, ProbeSettings

    return ProbeSettings(steps="last", geometry=None, hessian=HessianSettings(
        k_top=2, k_bottom=1, slq_runs=2, slq_steps=8, trace_hvps=8, exact="always",
        dtype="float64"))


def _check_probed(path, trust_code=False):
    from landscape.probe import probe

    assert probe(path, _probe_settings(), trust_code=trust_code) == [Run.open(path).steps[-1]]
    h = Run.open(path).hessian(-1)
    eig = h["exact"].eigvals  # the Lanczos top pair agrees with the exact spectrum
    np.testing.assert_allclose(h["top"].values, eig[::-1][:2], rtol=1e-6)


# --- the probe set from evaluation batches --------------------------------------------


def test_probe_from_batches_takes_the_first_examples_of_either_form():
    x, y = data(10)
    pairs = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]
    px, py = callbacks.probe_from_batches(pairs, 6)
    assert torch.equal(px, x[:6]) and torch.equal(py, y[:6])
    dicts = [{"input_ids": x[:4], "attention_mask": torch.ones(4, 6), "labels": y[:4]}]
    got = callbacks.probe_from_batches(dicts, 3)
    assert set(got) == {"input_ids", "attention_mask"} and torch.equal(got["input_ids"], x[:3])
    assert set(callbacks.probe_from_batches([{"x": x, "targets": y}], 2)) == {"x", "targets"}
    with pytest.raises(LandscapeError, match="no batches"):
        callbacks.probe_from_batches([], 4)
    with pytest.raises(LandscapeError, match=r"\(inputs, targets\) or dicts"):
        callbacks.probe_from_batches([x], 4)


def test_every_must_be_a_positive_step_count(tmp_path):
    with pytest.raises(LandscapeError, match="every must be >= 1"):
        callbacks._Recording(tmp_path / "x.h5", None, 0, 4, {})


@pytest.mark.parametrize("make, extra", [(callbacks.trainer_callback, "hf"),
                                         (callbacks.lightning_callback, "lightning")])
def test_a_missing_package_names_the_extra(monkeypatch, tmp_path, make, extra):
    for name in ("transformers", "lightning", "lightning.pytorch"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    callbacks._hf_callback_class.cache_clear()
    callbacks._lightning_callback_class.cache_clear()
    try:
        with pytest.raises(LandscapeError, match=rf"looped-landscape\[{extra}\]"):
            make(tmp_path / "x.h5")
    finally:
        callbacks._hf_callback_class.cache_clear()
        callbacks._lightning_callback_class.cache_clear()


# --- HuggingFace Trainer ----------------------------------------------------------------


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, T), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(T, dtype=torch.long),
                "labels": self.ids[i]}


@pytest.mark.slow  # about 15 s: transformers' Trainer and accelerate import on first use
def test_trainer_callback_records_a_trainer_run_that_probes(tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason="the hf extra is not installed (pip install "
                               "'looped-landscape[hf]')")
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate "
                                             "(pip install 'looped-landscape[hf]')")
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=T, n_embd=8, n_layer=1,
                                  n_head=2, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=5, per_device_train_batch_size=4,
        per_device_eval_batch_size=4, learning_rate=1e-2, logging_steps=1, save_strategy="no",
        eval_strategy="steps", eval_steps=2, report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens(32, 1),
                                   eval_dataset=_Tokens(12, 2))
    path = tmp_path / "hf.h5"
    trainer.add_callback(callbacks.trainer_callback(path, trainer=trainer, every=2,
                                                    examples=6))
    trainer.train()

    run = Run.open(path)
    assert list(run.steps) == [0, 2, 4, 5]  # the start, every 2 steps, the last step
    assert run.attrs["status"] == "complete"
    probe_ids = run.probe_set()["input_ids"]
    np.testing.assert_array_equal(probe_ids, _Tokens(12, 2).ids[:6].numpy())
    np.testing.assert_allclose(run.params(-1)["transformer.wte.weight"].numpy(),
                               trainer.model.transformer.wte.weight.detach().numpy())
    m = run.metrics
    assert np.isfinite(m["loss"][1:]).all() and np.isnan(m["loss"][0])  # no loss at step 0
    assert np.isfinite(m["eval_loss"][1:3]).all()  # evaluated at steps 2 and 4
    assert np.all(np.diff(m["lr"]) <= 0)  # the linear schedule's rate, as stored
    assert run.attrs["optimizers"][-1]["kind"] == "AdamW"  # not accelerate's wrapper
    assert run.has_adam and run.adam_state(-1)[1] == 5  # Adam's moments at step 5
    _check_probed(path)


# --- PyTorch Lightning ------------------------------------------------------------------


def _lightning_module(pl):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build(d=D)

        def _loss(self, batch):
            x, y = batch
            logits = self.net(x)
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     y.reshape(-1))

        def training_step(self, batch, batch_idx):
            loss = self._loss(batch)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    return Module()


def test_lightning_callback_records_a_fit_that_probes(tmp_path):
    pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not "
                             "installed (pip install 'looped-landscape[lightning]')")
    torch.manual_seed(0)
    train = torch.utils.data.TensorDataset(*data(24, seed=1))
    val = torch.utils.data.TensorDataset(*data(8, seed=2))
    loader = torch.utils.data.DataLoader
    path = tmp_path / "pl.h5"
    cb = callbacks.lightning_callback(path, factory="own_model:build",
                                      factory_kwargs={"d": D}, loss="next_token", module="net",
                                      every=2,
                                      examples=5)
    trainer = pl.Trainer(max_steps=5, accelerator="cpu", devices=1, callbacks=[cb],
                         logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, val_check_interval=3,
                         log_every_n_steps=1)
    module = _lightning_module(pl)
    trainer.fit(module, loader(train, batch_size=4), loader(val, batch_size=4))

    run = Run.open(path)
    assert list(run.steps) == [0, 2, 4, 5]
    np.testing.assert_array_equal(run.probe_set()["inputs"], val.tensors[0][:5].numpy())
    np.testing.assert_allclose(run.params(-1)["head.weight"].numpy(),
                               module.net.head.weight.detach().numpy())
    m = run.metrics
    assert np.isfinite(m["loss"][1:]).all() and np.isnan(m["loss"][0])
    assert np.isfinite(m["val_loss"][-1])  # validated at step 3, before the last checkpoint
    optimizer = run.attrs["optimizers"][-1]
    assert optimizer["kind"] == "SGD" and optimizer["momentum"] == 0.9
    _check_probed(path, trust_code=True)
