"""Learning-rate schedules (registered Keras objects; the step is the optimizer's
iteration count, i.e. batches seen).

- :class:`OneCycle`: system D's one-cycle policy.
- :class:`StepDecay`: multiply by ``drop`` every ``step_size`` steps.

Reducing the rate when a monitored value plateaus is
``keras.callbacks.ReduceLROnPlateau`` (system B: factor 0.5, patience 3);
it needs a float learning rate, not a schedule.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from brain_tf.errors import ConfigError


def _cosine(start, end, fraction):
    """Cosine interpolation from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * fraction))


@keras.saving.register_keras_serializable(package="brain_tf")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate: cosine warm-up then cosine annealing.

    The rate rises from ``max_learning_rate / div_factor`` to
    ``max_learning_rate`` over the first ``warmup_fraction * total_steps``
    steps, then falls to ``max_learning_rate / (div_factor * final_div_factor)``
    at ``total_steps`` and stays there. System D: ``max_learning_rate=2.5e-4``,
    ``warmup_fraction=0.3``, ``total_steps = epochs * steps_per_epoch``; the
    divisors default to PyTorch's OneCycleLR values (25 and 1e4).
    """

    def __init__(self, max_learning_rate: float, total_steps: int,
                 warmup_fraction: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, name: str = "one_cycle"):
        super().__init__()
        if max_learning_rate <= 0 or int(total_steps) < 1:
            raise ConfigError(f"OneCycle needs max_learning_rate > 0 and total_steps >= 1, got "
                              f"{max_learning_rate} and {total_steps}")
        if not 0.0 < warmup_fraction < 1.0:
            raise ConfigError(f"OneCycle warmup_fraction must be in (0, 1), got {warmup_fraction}")
        if div_factor < 1 or final_div_factor < 1:
            raise ConfigError(f"OneCycle div_factor and final_div_factor must be >= 1, got "
                              f"{div_factor} and {final_div_factor}")
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_fraction = float(warmup_fraction)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.max_learning_rate
        initial = peak / self.div_factor
        final = initial / self.final_div_factor
        warmup = self.warmup_fraction * self.total_steps
        rising = _cosine(initial, peak, ops.clip(step / warmup, 0.0, 1.0))
        falling = _cosine(peak, final, ops.clip((step - warmup) / (self.total_steps - warmup),
                                                0.0, 1.0))
        return ops.where(step < warmup, rising, falling)

    def get_config(self):
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "warmup_fraction": self.warmup_fraction, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor, "name": self.name}


@keras.saving.register_keras_serializable(package="brain_tf")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``initial_learning_rate * drop ** floor(step / step_size)``, never below
    ``min_learning_rate``."""

    def __init__(self, initial_learning_rate: float, step_size: int, drop: float = 0.5,
                 min_learning_rate: float = 0.0, name: str = "step_decay"):
        super().__init__()
        if initial_learning_rate <= 0 or int(step_size) < 1 or not 0.0 < drop <= 1.0:
            raise ConfigError(f"StepDecay needs initial_learning_rate > 0, step_size >= 1 and "
                              f"0 < drop <= 1, got {initial_learning_rate}, {step_size}, {drop}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.step_size = int(step_size)
        self.drop = float(drop)
        self.min_learning_rate = float(min_learning_rate)
        self.name = name

    def __call__(self, step):
        drops = ops.floor(ops.cast(step, "float32") / self.step_size)
        rate = self.initial_learning_rate * ops.power(self.drop, drops)
        return ops.maximum(rate, self.min_learning_rate)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "step_size": self.step_size,
                "drop": self.drop, "min_learning_rate": self.min_learning_rate, "name": self.name}
