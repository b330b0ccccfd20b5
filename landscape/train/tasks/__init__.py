"""The tasks: a Markov language graded by Information Content, and algorithmic tasks.

``generate(cfg)`` turns a task config into :class:`~landscape.train.tasks.base.TaskData`;
the config's ``name`` picks the task.
"""

from __future__ import annotations

from landscape.errors import LandscapeError
from landscape.train.tasks.algorithmic import TASK_NAMES as ALGORITHMIC_TASKS
from landscape.train.tasks.algorithmic import AlgorithmicConfig
from landscape.train.tasks.algorithmic import generate as _generate_algorithmic
from landscape.train.tasks.base import IGNORE, Split, TaskData
from landscape.train.tasks.markov import MarkovConfig
from landscape.train.tasks.markov import generate as _generate_markov

TaskConfig = MarkovConfig | AlgorithmicConfig
TASK_NAMES = ("markov", *ALGORITHMIC_TASKS)

__all__ = ["IGNORE", "Split", "TaskData", "TaskConfig", "TASK_NAMES", "generate",
           "task_config_class", "MarkovConfig", "AlgorithmicConfig"]


def task_config_class(name: str) -> type:
    """The config dataclass of task ``name``."""
    if name == "markov":
        return MarkovConfig
    if name in ALGORITHMIC_TASKS:
        return AlgorithmicConfig
    raise LandscapeError(f"unknown task {name!r} (tasks: {', '.join(TASK_NAMES)})")


def generate(cfg: TaskConfig) -> TaskData:
    """Generate the data of a task config (deterministic in the config)."""
    if isinstance(cfg, MarkovConfig):
        return _generate_markov(cfg)
    return _generate_algorithmic(cfg)
