"""The tasks: one module each, registered by name in :data:`TASKS`."""

from brain_tf.tasks import tumor  # noqa: F401  (registers the task)
from brain_tf.tasks import age, sex  # noqa: F401  (register the tasks)
from brain_tf.tasks import hippocampus, tissue  # noqa: F401  (register the tasks)
from brain_tf.tasks import lesion, slice_classification  # noqa: F401  (register the tasks)
from brain_tf.tasks.base import TASKS, Task, deep_merge

__all__ = ["TASKS", "Task", "deep_merge"]
