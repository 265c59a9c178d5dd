"""Training on several devices or machines with ``tf.distribute``, and mixed precision.

See :mod:`brain_tf.distribute.strategy` (choosing the strategy, the chief),
:mod:`brain_tf.distribute.loop` (the multi-worker training loop) and
:mod:`brain_tf.distribute.precision` (float32, bfloat16, float16).
"""

from brain_tf.distribute.loop import distributed_fit, shard_by_data
from brain_tf.distribute.precision import (
    float32_outputs, in_precision, precision_policy, resolve_precision, training_precision,
)
from brain_tf.distribute.strategy import (
    STRATEGIES,
    config_strategy,
    get_strategy,
    is_chief,
    is_multi_worker,
    strategy_name,
    tf_config,
)

__all__ = [
    "STRATEGIES", "config_strategy", "distributed_fit", "float32_outputs", "get_strategy",
    "in_precision", "is_chief", "is_multi_worker", "precision_policy", "resolve_precision",
    "shard_by_data", "strategy_name", "tf_config", "training_precision",
]
