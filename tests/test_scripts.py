"""scripts/train_*.py: each one runs its own task's command line."""

import runpy
import sys
from pathlib import Path

import pytest

from brain_tf.tasks import TASKS

SCRIPTS = sorted((Path(__file__).parents[1] / "scripts").glob("train_*.py"))


def test_one_script_per_task():
    names = {p.stem.removeprefix("train_").replace("_", "-") for p in SCRIPTS}
    assert names == set(TASKS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("action", ["train", "predict"])
def test_script_help_is_the_task_command(script, action, monkeypatch, capsys):
    task = script.stem.removeprefix("train_").replace("_", "-")
    argv = ["--help"] if action == "train" else ["predict", "--help"]
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    monkeypatch.syspath_prepend(str(script.parent))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert f"brain-tf {task} {action}" in usage
