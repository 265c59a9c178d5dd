"""brain_tf: deep learning on brain MRI with TensorFlow/Keras 3."""

__version__ = "0.1.0"

# Register brain_tf's Keras objects so a saved .keras model loads after `import brain_tf`.
from brain_tf import losses, metrics, schedules  # noqa: E402,F401
from brain_tf.models import layers  # noqa: E402,F401
