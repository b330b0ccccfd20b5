"""HuggingFace causal LMs: a 2-layer GPT-2 configuration trained here (no network)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

transformers = pytest.importorskip(
    "transformers", reason="the hf extra is not installed (pip install 'looped-landscape[hf]')")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="the hf extra (safetensors)")

import landscape  # noqa: E402
from landscape.cli import main  # noqa: E402
from landscape.curvature.hessian import HessianOperator  # noqa: E402
from landscape.runs.run import Run  # noqa: E402

VOCAB, T = 20, 8


def _gpt2(seed=0):
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=T, n_embd=8, n_layer=2,
                                  n_head=2, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg)


def _probe():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (6, T), generator=g)
    mask = torch.ones_like(ids)
    mask[:2, 5:] = 0  # padded tails are not scored
    return {"input_ids": ids, "attention_mask": mask}


def _train(model, rec=None, steps=3, save_to=None):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(5)
    for step in range(1, steps + 1):
        x = torch.randint(0, VOCAB, (4, T), generator=g)
        out = model(input_ids=x, labels=x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if rec is not None:
            rec.checkpoint(step, optimizer=opt, metrics={"loss": out.loss.item()})
        if save_to is not None:  # a folder of checkpoints, tied weights saved once
            safetensors_torch.save_model(model, str(save_to / f"step_{step}.safetensors"))
    return model


def _hf_loss(model, probe):
    """HuggingFace's own loss with the padded positions' labels ignored."""
    labels = probe["input_ids"].masked_fill(probe["attention_mask"] == 0, -100)
    return model(**probe, labels=labels).loss


def test_recorder_on_a_gpt2_rebuilds_it_with_eager_attention(tmp_path):
    model = _gpt2()
    probe = _probe()
    path = tmp_path / "gpt2.h5"
    with landscape.Recorder(path, model, probe=probe) as rec:  # the factory from its config
        _train(model, rec)
    run = Run.open(path)  # landscape.runs.huggingface is this package's code: no trust needed
    assert run.spec["factory"] == "landscape.hf:causal_lm" and run.spec["loss"] == "next_token"
    rebuilt = run.model(-1)
    assert rebuilt.config._attn_implementation == "eager"
    model.eval()
    params = run.params(-1)
    torch.testing.assert_close(run.loss_fn()(params), _hf_loss(model, probe))
    # Hessian-vector products in float64 against double backward through HF's own loss
    ref = _gpt2().double().eval()
    ref.load_state_dict(rebuilt.state_dict())
    ref.config._attn_implementation = "eager"
    op = HessianOperator(run.loss_fn(), run.params(-1, dtype=torch.float64),
                         dtype=torch.float64)
    names = [n for n, _ in ref.named_parameters()]
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def hf(*flat):
        from torch.func import functional_call

        # HF's own loss upcasts to float32 only; the float64 logits and the masked mean here
        logits = functional_call(ref, dict(zip(names, flat)), (), probe).logits
        keep = probe["attention_mask"][:, 1:].reshape(-1).bool()
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB),
                                               probe["input_ids"][:, 1:].reshape(-1),
                                               reduction="none")
        return ce[keep].mean()

    parts = torch.split(v, [p.numel() for p in ref.parameters()])
    vs = tuple(t.reshape(p.shape) for t, p in zip(parts, ref.parameters()))
    _, hv = torch.autograd.functional.hvp(hf, tuple(p.detach() for p in ref.parameters()), vs)
    expect = torch.cat([h.reshape(-1) for h in hv])
    got = op.matvec(v)
    torch.testing.assert_close(got, expect, rtol=1e-9, atol=1e-11)


def test_import_a_folder_of_gpt2_safetensors(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    model = _gpt2()
    model.config.to_json_file(str(ckpts / "config.json"))
    _train(model, save_to=ckpts)
    np.savez(tmp_path / "probe.npz", **{k: v.numpy() for k, v in _probe().items()})
    out = tmp_path / "imported.h5"
    r = CliRunner().invoke(main, ["import", str(ckpts), "--model", "landscape.hf:causal_lm",
                                  "--kwargs", json.dumps({"config": str(ckpts / "config.json")}),
                                  "--probe", str(tmp_path / "probe.npz"), "--out", str(out),
                                  "-q"])
    assert r.exit_code == 0, r.output
    run = Run.open(out)
    assert run.steps.tolist() == [1, 2, 3]
    model.eval()
    torch.testing.assert_close(run.loss_fn()(run.params(-1)), _hf_loss(model, _probe()))
    assert isinstance(run.attrs["model"]["kwargs"]["config"], dict)  # self-contained


# --- encoders and classifiers: the head's own factory and loss, never a silent rebuild ----


def _bert(head, seed=0):
    import any_model

    return {"masked_lm": any_model.hf_masked_lm, "sequence_classifier":
            any_model.hf_classifier}[head](seed)


def _bert_probe(head):
    import any_model

    return (any_model.masked_tokens if head == "masked_lm" else any_model.labelled_tokens)(8)


@pytest.mark.parametrize("head", ["masked_lm", "sequence_classifier"])
def test_recorder_picks_the_heads_factory_and_loss_and_matches_hfs_loss(head, tmp_path):
    model = _bert(head).eval()
    probe = _bert_probe(head)
    path = tmp_path / f"{head}.h5"
    with landscape.Recorder(path, model, probe=probe) as rec:  # factory and loss from class
        rec.checkpoint(0)
    run = Run.open(path)  # an own alias: no trust needed
    want_loss = {"masked_lm": "masked_lm", "sequence_classifier": "cross_entropy"}[head]
    assert run.spec["factory"] == f"landscape.hf:{head}" and run.spec["loss"] == want_loss
    assert type(run.model(-1)).__name__ == type(model).__name__
    with torch.no_grad():  # HuggingFace's own loss from labels, -100 ignored
        torch.testing.assert_close(run.loss_fn()(run.params(-1)), model(**probe).loss)


def test_causal_lm_refuses_an_encoder_and_names_the_right_factory():
    from landscape.runs import huggingface as hf

    bert = _bert("masked_lm").config.to_dict()
    with pytest.raises(landscape.LandscapeError, match="use landscape.hf:masked_lm") as e:
        hf.causal_lm(bert)
    assert "\n" not in str(e.value)
    assert type(hf.causal_lm({**bert, "is_decoder": True})).__name__ == "BertLMHeadModel"
    gpt2 = _gpt2().config.to_dict()
    with pytest.raises(landscape.LandscapeError, match="use landscape.hf:causal_lm"):
        hf.masked_lm(gpt2)
    named = {**gpt2, "architectures": ["GPT2ForSequenceClassification"]}
    with pytest.raises(landscape.LandscapeError, match="landscape.hf:sequence_classifier"):
        hf.causal_lm(named)
    assert type(hf.sequence_classifier(named)).__name__ == "GPT2ForSequenceClassification"


def test_a_head_factory_with_another_builtin_loss_is_refused(tmp_path):
    with pytest.raises(landscape.LandscapeError, match="scored by loss masked_lm"):
        landscape.Recorder(tmp_path / "x.h5", _bert("masked_lm"), probe=_bert_probe("masked_lm"),
                           loss="next_token")
    assert not (tmp_path / "x.h5").exists()


def test_import_of_a_bert_folder_as_a_causal_lm_is_one_line_and_exit_2(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    model = _bert("masked_lm")
    model.config.to_json_file(str(ckpts / "config.json"))  # architectures: BertForMaskedLM
    safetensors_torch.save_model(model, str(ckpts / "step_1.safetensors"))
    np.savez(tmp_path / "probe.npz", **{k: v.numpy() for k, v in _bert_probe("masked_lm").items()})
    args = ["import", str(ckpts), "--kwargs", json.dumps({"config": str(ckpts)}),
            "--probe", str(tmp_path / "probe.npz"), "--out", str(tmp_path / "b.h5"), "-q"]
    r = CliRunner().invoke(main, [*args, "--model", "landscape.hf:causal_lm"])
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "landscape.hf:masked_lm" in r.output and not (tmp_path / "b.h5").exists()
    r = CliRunner().invoke(main, [*args, "--model", "landscape.hf:masked_lm", "--loss",
                                  "masked_lm"])
    assert r.exit_code == 0, r.output
    assert Run.open(tmp_path / "b.h5").spec["factory"] == "landscape.hf:masked_lm"
