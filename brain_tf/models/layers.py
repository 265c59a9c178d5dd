"""Custom layers shared by the model builders (registered for .keras saving)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="brain_tf")
class MCDropout(keras.layers.Dropout):
    """Dropout that stays active at inference (Monte Carlo dropout).

    Each call samples a new mask, so repeated predictions of one input differ
    and their spread estimates the model's uncertainty. With ``rate=0`` it is
    the identity.
    """

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)
