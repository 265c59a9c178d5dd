"""brain_tf: deep learning on brain MRI with TensorFlow/Keras 3."""

__version__ = "0.1.0"

import os

# TensorFlow's C++ start-up chatter is hidden unless the user asks for it
# (TF_CPP_MIN_LOG_LEVEL=0 shows it again).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Register brain_tf's Keras objects so a saved .keras model loads after `import brain_tf`.
from brain_tf import losses, metrics, schedules  # noqa: E402,F401
from brain_tf.models import layers  # noqa: E402,F401
