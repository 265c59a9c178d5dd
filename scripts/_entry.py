"""Shared by the scripts in this folder: run one ``brain-tf`` task command."""

import sys

from brain_tf.cli import main


def run(task: str) -> None:
    """``python scripts/train_TASK.py [train flags]``, or ``evaluate``/``predict`` followed
    by that action's flags, exactly as ``brain-tf TASK ACTION ...``."""
    args = sys.argv[1:]
    if not args or args[0] not in ("train", "evaluate", "predict"):
        args = ["train", *args]
    sys.exit(main([task, *args]))
