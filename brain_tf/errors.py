"""Errors a user can cause, each with a one-line message naming the file or
subject and what to do about it.

Every error raised by brain_tf for a user mistake is a :class:`BrainTFError`,
so the command line can print its message without a traceback.
"""


class BrainTFError(Exception):
    """Base class of every error brain_tf raises for a user mistake."""


class DataError(BrainTFError):
    """An input file or array is missing, unreadable or inconsistent."""


class SpecError(BrainTFError):
    """A data spec (TOML) or the dataset it describes is invalid."""


class SplitError(BrainTFError):
    """A train/validation/test split is invalid (e.g. a subject in two splits)."""


class ConfigError(BrainTFError):
    """A configuration value (model, task, pipeline option) is invalid."""


class ModelError(BrainTFError):
    """A model cannot be built, loaded or applied as asked."""
