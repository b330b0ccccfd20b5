"""HuggingFace causal language models (the optional extra ``looped-landscape[hf]``).

The factory :func:`causal_lm` rebuilds a model from its configuration (a dict, as
``config.to_dict()`` gives, or the path of a ``config.json`` or of a folder holding one)
with **eager attention**: probes differentiate twice, and the fused attention kernels
(SDPA, flash) have no double backward. Weights come from the run file's checkpoints.
The loss is ``next_token`` over the probe set's ``input_ids`` where ``attention_mask``
is 1 (see :mod:`landscape.runs.own_models`).

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
    """A configuration dict from a dict, a ``config.json`` or a folder holding one."""
    if isinstance(config, Mapping):
        return dict(config)
    p = Path(config)
    if p.is_dir():
        p = p / "config.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LandscapeError(f"cannot read the model configuration {p}: {e}") from None


def causal_lm(config: Mapping[str, Any] | str | Path):
    """A randomly initialised causal LM of ``config``, with eager attention."""
    tf = _transformers()
    data = read_config(config)
    data.pop("_attn_implementation", None)
    try:
        cfg = tf.AutoConfig.for_model(**data)
    except (KeyError, ValueError, TypeError) as e:
        raise LandscapeError(f"not a HuggingFace model configuration: {e}") from None
    cfg._attn_implementation = EAGER
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation=EAGER)
    return model.eval()


def config_kwargs(model) -> dict:
    """The factory arguments that rebuild ``model`` (its configuration as a dict)."""
    data = model.config.to_dict()
    data.pop("_attn_implementation", None)
    data.pop("_attn_implementation_autoset", None)
    return {"config": json.loads(json.dumps(data, default=str))}
