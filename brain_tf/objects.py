"""Importing this module registers every brain_tf Keras object (losses, metrics,
learning-rate schedules, layers), so ``keras.saving.load_model`` reads brain_tf models
with no ``custom_objects``."""

from brain_tf import losses, metrics, schedules  # noqa: F401
from brain_tf.models import layers  # noqa: F401
