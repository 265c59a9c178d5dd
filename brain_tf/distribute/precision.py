"""Mixed precision (float16 compute, float32 variables) for the duration of a model build.

Keras layers take the global dtype policy when they are constructed, so
setting ``mixed_float16`` while a model is built and compiled, then putting
the previous policy back, gives a mixed-precision model without leaking the
policy into later code. The brain_tf model heads are float32 layers, so
outputs and losses stay float32; ``compile`` wraps the optimizer in a
``LossScaleOptimizer`` for such a model.

On GPUs with tensor cores (NVIDIA compute capability 7.0 and newer: V100,
T4, A100, H100, RTX 20xx and later) convolutions and matrix multiplications
in float16 typically run 1.5-3x faster and activations take half the memory
(larger patches or batches fit). On CPUs there is no speed-up; it is usually
slower.
"""

from __future__ import annotations

import contextlib

import keras


@contextlib.contextmanager
def precision_policy(mixed: bool):
    """Use the ``mixed_float16`` policy inside the block when ``mixed`` (restored after)."""
    if not mixed:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_outputs(model) -> bool:
    """Whether every output of ``model`` is float32."""
    return all(str(getattr(t, "dtype", "float32")) == "float32"
               for t in keras.tree.flatten(model.outputs))
