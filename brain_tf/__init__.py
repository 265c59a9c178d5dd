"""brain_tf: deep learning on brain MRI with TensorFlow/Keras 3.

Importing the package is cheap and changes nothing in the process: TensorFlow loads
only when a model, a pipeline or a run needs it. A saved ``.keras`` model reloads with
:func:`load_model` (or ``keras.saving.load_model`` after ``import brain_tf.objects``,
which registers brain_tf's losses, metrics, schedules and layers).
"""

__version__ = "0.2.0"


def load_model(path, compile: bool = True):
    """Load a ``.keras`` model saved by brain_tf (its custom objects registered)."""
    from brain_tf.training.run import load_keras_model

    return load_keras_model(path, compile=compile)
