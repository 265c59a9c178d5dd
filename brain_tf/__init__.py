"""brain_tf: deep learning on brain MRI with TensorFlow/Keras 3."""

__version__ = "0.1.0"
