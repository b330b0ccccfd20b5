"""Our models and their training: tasks, the looped block, recipes, the trainer.

Takes in a recipe (TOML) and hands on a run file with the trajectory and the metrics:

* :mod:`landscape.train.tasks` -- the Markov language and the algorithmic tasks;
* :mod:`landscape.train.model` -- one attention block, looped or not;
* :mod:`landscape.train.archs` -- the architectures' names and recipes;
* :mod:`landscape.train.recipe` -- recipes as frozen dataclasses, TOML loading, the
  learning-rate schedule (the shipped recipes live in ``recipes/``);
* :mod:`landscape.train.split_loss` -- a model's loss on a split as a function of parameters;
* :mod:`landscape.train.trainer` -- the training loop, SHIFT's switch, resume;
* :mod:`landscape.train.distributed` -- several processes under ``torchrun``.
"""
