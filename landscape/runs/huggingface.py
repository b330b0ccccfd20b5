"""HuggingFace models (the optional extra ``looped-landscape[hf]``): three heads.

Each factory rebuilds a model from its configuration, a dict as ``config.to_dict()``
gives, with **eager attention** (probes differentiate twice, and the fused attention
kernels, SDPA and flash, have no double backward); weights come from the run file's
checkpoints. Each has a stable alias that a run file may name without trust, and the
built-in loss that scores it (:mod:`landscape.runs.own_models`):

=================================  ========================  ==========================
alias                              builds                    loss over the probe set
=================================  ========================  ==========================
``landscape.hf:causal_lm``         a decoder (GPT-2, Llama)  ``next_token`` (``input_ids``
                                                             where ``attention_mask``)
``landscape.hf:masked_lm``         an encoder's MLM head     ``masked_lm`` (``labels``,
                                   (BERT, RoBERTa)           ``-100`` not scored)
``landscape.hf:sequence_classifier``  a classification head  ``cross_entropy`` (``labels``
                                                             ``[N]``, ``-100`` skipped)
=================================  ========================  ==========================

A factory refuses a configuration of another head, in one line naming the right one:
``causal_lm`` never rebuilds an encoder (BERT) as a decoder (``BertLMHeadModel``) unless
its configuration says ``is_decoder``. The head is read from the configuration's
``architectures`` where it names one, else from its model type (:func:`head_of`); the
Recorder picks the factory from the model's class (:func:`factory_for`).

The factory takes the configuration itself, never a path: a run file is data, and its
arguments must not make the reader open other files. A ``config.json`` (or a folder
holding one) given to the Recorder or to ``landscape import`` is read there, by the
caller, and the configuration stored in the run file (:func:`inline_kwargs`).

For example::

    rec = Recorder("gpt2.h5", model, probe={"input_ids": ids, "attention_mask": mask})
    rec = Recorder("bert.h5", bert_mlm, probe={"input_ids": ids, "labels": labels})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from landscape.errors import LandscapeError

EAGER = "eager"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise LandscapeError("HuggingFace models need the extra: pip install "
                             "'looped-landscape[hf]' (transformers, safetensors)") from None
    return transformers


def read_config(config: Mapping[str, Any] | str | Path) -> dict:
    """A configuration dict from a dict, a ``config.json`` or a folder holding one.

    For the caller's own arguments only (the Recorder's, ``landscape import``'s): never
    called with arguments read from a run file.
    """
    if isinstance(config, Mapping):
        return dict(config)
    p = Path(config)
    if p.is_dir():
        p = p / "config.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LandscapeError(f"cannot read the model configuration {p}: {e}") from None


def inline_kwargs(kwargs: Mapping[str, Any]) -> dict:
    """The factory's arguments as a run file stores them: a ``config`` path read in."""
    out = dict(kwargs)
    if isinstance(out.get("config"), (str, Path)):
        out["config"] = read_config(out["config"])
    return out


HEADS: dict[str, tuple[str, str, str]] = {
    "causal_lm": ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "next_token"),
    "masked_lm": ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "masked_lm"),
    "sequence_classifier": ("AutoModelForSequenceClassification",
                            "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                            "cross_entropy"),
}
"""``{head: (auto class, transformers' mapping of model types to classes, loss)}``."""

ALIAS = "landscape.hf:"


def factory_name(head: str) -> str:
    """The alias of a head's factory, e.g. ``landscape.hf:masked_lm``."""
    return ALIAS + head


def loss_of(factory: str) -> str | None:
    """The built-in loss that scores the models of an own HuggingFace factory (else None)."""
    head = factory[len(ALIAS):] if isinstance(factory, str) and factory.startswith(ALIAS) else ""
    return HEADS[head][2] if head in HEADS else None


def _classes(head: str) -> dict[str, str]:
    """``{model type: class name}`` of the head, from transformers' auto mappings."""
    from transformers.models.auto import modeling_auto

    return dict(getattr(modeling_auto, HEADS[head][1]))


def _head_of_class(name: str) -> str | None:
    """The head whose classes include ``name`` (the first, in :data:`HEADS` order)."""
    return next((h for h in HEADS if name in _classes(h).values()), None)


def _named_head(config: Mapping[str, Any]) -> str | None:
    """The head that the configuration's ``architectures`` names (None: it names none)."""
    named = [h for h in map(_head_of_class, config.get("architectures") or []) if h]
    return named[0] if named else None


def head_of(config: Mapping[str, Any]) -> str | None:
    """The head a configuration is for: named by ``architectures``, else by its type.

    A model type with both a causal and a masked head (BERT, RoBERTa) is an encoder
    unless its configuration says ``is_decoder``. None: transformers has none of the three.
    """
    kind = config.get("model_type")
    if _named_head(config):
        return _named_head(config)
    if kind in _classes("causal_lm") and (kind not in _classes("masked_lm")
                                          or config.get("is_decoder")):
        return "causal_lm"
    return next((h for h in ("masked_lm", "sequence_classifier") if kind in _classes(h)), None)


def factory_for(model) -> str:
    """The alias of the factory that rebuilds ``model`` (a HuggingFace model), by class.

    Raises:
        LandscapeError: the model is none of the three heads.
    """
    _transformers()
    heads = [h for h in HEADS if type(model).__name__ in _classes(h).values()]
    head = heads[0] if len(heads) == 1 else head_of(model.config.to_dict())
    if head is None or (heads and head not in heads):
        raise LandscapeError(f"{type(model).__name__} is not a causal LM, masked LM or "
                             "sequence classifier: give factory='pkg.mod:build' that rebuilds "
                             "it, and a loss")
    return factory_name(head)


def _build(head: str, config: Mapping[str, Any]):
    """A randomly initialised model of ``config`` with the head ``head``, eager attention.

    Only models of ``transformers``' own code: a configuration's ``auto_map`` (code from
    elsewhere) is dropped and remote code refused.
    """
    name = factory_name(head)
    if not isinstance(config, Mapping):
        raise LandscapeError(f"{name} takes the configuration itself (a JSON object), not "
                             f"{type(config).__name__}: record or import the model again to "
                             "store it in the run file")
    tf = _transformers()
    data = dict(config)
    for key in ("_attn_implementation", "auto_map"):
        data.pop(key, None)
    _check_head(head, data)
    try:
        cfg = tf.AutoConfig.for_model(**data)
    except (KeyError, ValueError, TypeError) as e:
        raise LandscapeError(f"not a HuggingFace model configuration: {e}") from None
    cfg._attn_implementation = EAGER
    auto = getattr(tf, HEADS[head][0])
    model = auto.from_config(cfg, attn_implementation=EAGER, trust_remote_code=False)
    return model.eval()


def _check_head(head: str, config: Mapping[str, Any]) -> None:
    """Refuse a configuration of another head, naming the factory that builds it.

    A configuration fits a head that transformers has for its model type, unless its
    ``architectures`` name another head, or it is an encoder asked to be a causal LM.
    """
    kind, named = config.get("model_type"), _named_head(config)
    right = head_of(config)
    encoder = head == "causal_lm" and right == "masked_lm"
    if kind in _classes(head) and named in (None, head) and not encoder:
        return
    what = f"a {kind} configuration" + (
        f" ({', '.join(map(str, config['architectures']))})" if named else "")
    if right is None or right == head:
        raise LandscapeError(f"{factory_name(head)}: transformers has no such head for {what}")
    why = " is an encoder's, not a decoder's" if encoder else " is for another head"
    raise LandscapeError(f"{factory_name(head)}: {what}{why}; use {factory_name(right)} "
                         f"with loss {HEADS[right][2]}")


def causal_lm(config: Mapping[str, Any]):
    """A randomly initialised causal LM (a decoder) of ``config`` (a dict).

    Raises:
        LandscapeError: ``config`` is not a configuration dict (e.g. a path), or is one of
            an encoder or of another head (the message names its factory).
    """
    return _build("causal_lm", config)


def masked_lm(config: Mapping[str, Any]):
    """A randomly initialised masked LM (an encoder with its MLM head) of ``config``.

    Raises:
        LandscapeError: ``config`` is not a configuration dict, or one of another head.
    """
    return _build("masked_lm", config)


def sequence_classifier(config: Mapping[str, Any]):
    """A randomly initialised sequence classifier of ``config`` (``num_labels`` classes).

    Raises:
        LandscapeError: ``config`` is not a configuration dict, or one of another head.
    """
    return _build("sequence_classifier", config)


def config_kwargs(model) -> dict:
    """The factory arguments that rebuild ``model`` (its configuration as a dict)."""
    data = model.config.to_dict()
    data.pop("_attn_implementation", None)
    data.pop("_attn_implementation_autoset", None)
    return {"config": json.loads(json.dumps(data, default=str))}
