"""Training: callbacks, run folders, export."""

from brain_tf.training.callbacks import StopAtEpoch, run_callbacks
from brain_tf.training.run import RunFolder, SavedModelPredictor, load_keras_model

__all__ = ["RunFolder", "SavedModelPredictor", "StopAtEpoch", "load_keras_model",
           "run_callbacks"]
