"""The tasks, registered by name in :data:`TASKS` (configuration only: importing them is
cheap; each task's family of hooks is imported when it runs)."""

from brain_tf.tasks import (  # noqa: F401  (each module registers its task)
    age, brain_extraction, hippocampus, lesion, sex, slice_classification, tissue, tumor,
)
from brain_tf.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task"]
