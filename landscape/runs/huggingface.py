"""HuggingFace causal language models (the optional extra ``looped-landscape[hf]``).

The factory :func:`causal_lm` (the alias ``landscape.hf:causal_lm``, which a run file may
name without trust) rebuilds a model from its configuration, a dict as
``config.to_dict()`` gives, with **eager attention**: probes differentiate twice, and the
fused attention kernels (SDPA, flash) have no double backward. Weights come from the run
file's checkpoints. The loss is ``next_token`` over the probe set's ``input_ids`` where
``attention_mask`` is 1 (see :mod:`landscape.runs.own_models`).

The factory takes the configuration itself, never a path: a run file is data, and its
arguments must not make the reader open other files. A ``config.json`` (or a folder
holding one) given to the Recorder or to ``landscape import`` is read there, by the
caller, and the configuration stored in the run file (:func:`inline_kwargs`).

For example::

    rec = Recorder("gpt2.h5", model, probe={"input_ids": ids, "attention_mask": mask})
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


def causal_lm(config: Mapping[str, Any]):
    """A randomly initialised causal LM of ``config`` (a dict), with eager attention.

    Only models of ``transformers``' own code: a configuration's ``auto_map`` (code from
    elsewhere) is dropped and remote code refused.

    Raises:
        LandscapeError: ``config`` is not a configuration dict (e.g. a path).
    """
    if not isinstance(config, Mapping):
        raise LandscapeError("landscape.hf:causal_lm takes the configuration itself (a JSON "
                             f"object), not {type(config).__name__}: record or import the "
                             "model again to store it in the run file")
    tf = _transformers()
    data = dict(config)
    for key in ("_attn_implementation", "auto_map"):
        data.pop(key, None)
    try:
        cfg = tf.AutoConfig.for_model(**data)
    except (KeyError, ValueError, TypeError) as e:
        raise LandscapeError(f"not a HuggingFace model configuration: {e}") from None
    cfg._attn_implementation = EAGER
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation=EAGER,
                                                trust_remote_code=False)
    return model.eval()


def config_kwargs(model) -> dict:
    """The factory arguments that rebuild ``model`` (its configuration as a dict)."""
    data = model.config.to_dict()
    data.pop("_attn_implementation", None)
    data.pop("_attn_implementation_autoset", None)
    return {"config": json.loads(json.dumps(data, default=str))}
