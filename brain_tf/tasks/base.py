"""A task: presets over the typed config sections, and the family of hooks that runs it.

Task modules are configuration only (they import nothing heavy), so the command line
lists the tasks and checks their options without loading TensorFlow. A task names its
*family* (a module of this package with a ``FAMILY`` object, see
:class:`brain_tf.training.runner.Family`); the one runner in
:mod:`brain_tf.training.runner` trains, evaluates and predicts every task through it.

Adding a task: write a module with its presets (only the values that differ from the
section defaults in :mod:`brain_tf.schema`) and ``register(Task(...))`` it in
:mod:`brain_tf.tasks`; a new kind of task also writes a family module.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from brain_tf import schema as s
from brain_tf.errors import ConfigError

_COMMON = {"data": s.Data, "model": None, "loss": None, "metrics": None, "augment": None,
           "optimizer": s.Optimizer, "training": s.Training, "inference": s.Inference}

#: Family name -> "module:object" in this package (see the module docstring).
FAMILIES = {"segmentation": "segmentation:FAMILY", "volume": "volume:FAMILY",
            "features": "features:FAMILY", "lesion": "slices:LESION",
            "slices": "slices:CLASSES", "siamese": "siamese:FAMILY"}

#: The config sections each family reads: section name -> Section class, or None for a
#: free-form section (:data:`brain_tf.schema.FREE`).
SCHEMAS = {
    "segmentation": {**_COMMON, "preprocess": s.Preprocess, "sampler": s.Sampler,
                     "classes": s.Classes, "evaluation": s.Evaluation},
    "volume": {**_COMMON, "preprocess": s.Preprocess, "target": s.Target},
    "features": {"data": s.Data, "features": s.Features},
    "lesion": {**_COMMON, "preprocess": s.SlicePreprocess},
    "slices": {**_COMMON, "preprocess": s.SlicePreprocess, "target": s.SliceTarget},
    "siamese": {**_COMMON, "preprocess": s.SlicePreprocess, "target": s.EmbeddingTarget,
                "fewshot": s.FewShot},
}


@dataclasses.dataclass
class Task:
    """A task's name, presets and family (``preset_families`` runs some presets by
    another family, e.g. age regression's tissue-volume ``features`` preset)."""

    name: str
    description: str
    family_name: str
    presets: dict[str, dict]
    preset_families: dict[str, str] = dataclasses.field(default_factory=dict)
    takes_masks: bool = False  # predict accepts one brain mask per input (--mask)

    def family_of(self, preset: str) -> str:
        return self.preset_families.get(preset, self.family_name)

    def family(self, preset: str = "default"):
        """The family object (its module is imported on first use)."""
        module, _, name = FAMILIES[self.family_of(preset)].partition(":")
        return getattr(importlib.import_module(f"brain_tf.tasks.{module}"), name)

    def config(self, preset: str = "default", overrides: dict | None = None) -> s.RunConfig:
        """The preset merged over ``default`` (the published settings; a preset of another
        family stands alone), then ``overrides`` (e.g. a ``--config`` file), checked against
        the family's sections."""
        if preset not in self.presets:
            raise ConfigError(f"task {self.name}: unknown preset {preset!r}; choose from "
                              f"{', '.join(sorted(self.presets))}")
        merged = self.presets[preset]
        if self.family_of(preset) == self.family_name and preset != "default":
            merged = s.deep_merge(self.presets["default"], merged)
        merged = s.deep_merge(merged, overrides or {})
        merged.update(task=self.name, preset=preset)
        where = f"{self.name} preset {preset!r}" + (" with your settings" if overrides else "")
        return s.RunConfig.build(merged, SCHEMAS[self.family_of(preset)], where)

    def load_config(self, run, inference: str | None = None) -> s.RunConfig:
        """The config of a run folder (its ``config.toml``); ``inference``: a TOML file
        whose ``[inference]`` table is merged over the run's (predict's ``--config``)."""
        from brain_tf.config import load_toml

        raw = load_toml(Path(run.path if hasattr(run, "path") else run) / "config.toml")
        if raw.get("task") != self.name:
            raise ConfigError(f"{run}: a {raw.get('task')!r} run, not a {self.name} run; use "
                              f"'brain-tf {raw.get('task')}'")
        where = f"{run}/config.toml"
        if inference:
            tables = load_toml(inference)
            if set(tables) != {"inference"}:
                raise ConfigError(f"{inference}: predict --config takes an [inference] table "
                                  f"alone (found {', '.join(sorted(tables)) or 'nothing'}); "
                                  "the rest of a run's settings are those it was trained with")
            raw = s.deep_merge(raw, tables)
            where = f"{where} with {inference}"
        return s.RunConfig.build(raw, SCHEMAS[self.family_of(raw.get("preset", "default"))],
                                 where)

    # the runner's three actions for this task
    def train(self, config: s.RunConfig, run_dir=None, force: bool = False):
        from brain_tf.training import runner

        return runner.train(self, config, run_dir, force)

    def evaluate(self, run, root: str | None = None) -> dict:
        from brain_tf.training import runner

        return runner.evaluate(self, run, root=root)

    def predict(self, model, inputs, out, uncertainty: bool = False, masks=None, support=None,
                skip_existing: bool = False, precision: str | None = None, write=(),
                config: str | None = None):
        from brain_tf.training import runner

        return runner.predict(self, model, inputs, out, uncertainty, masks, support,
                              skip_existing, precision, write, config)


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task
