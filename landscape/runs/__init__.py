"""Runs as a user meets them: open one, record one from your loop, import checkpoints.

Takes in run files (:mod:`landscape.runfile`) and the code they name, and hands on models,
loss functions and probe sets for the probes:

* :mod:`landscape.runs.run` -- :class:`~landscape.runs.run.Run`, the reader;
* :mod:`landscape.runs.recorder` -- :class:`~landscape.runs.recorder.Recorder`, for your
  own training loop;
* :mod:`landscape.runs.importer` -- ``landscape import``: a folder of checkpoints;
* :mod:`landscape.runs.own_models` -- the factories and losses a run file names, and trust;
* :mod:`landscape.runs.huggingface` -- HuggingFace models.
"""
