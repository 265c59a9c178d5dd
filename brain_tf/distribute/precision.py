"""The precision a model computes in: float32, bfloat16 or float16 (mixed), and "auto".

``bfloat16`` and ``float16`` are Keras' mixed policies (``mixed_bfloat16``,
``mixed_float16``): layers compute in 16 bits, their variables (the saved weights)
stay float32. The brain_tf model heads are float32 layers (``dtype="float32"``), so
softmax/sigmoid outputs, losses and metrics stay float32; ``compile`` wraps the
optimizer in a ``LossScaleOptimizer`` under float16 (bfloat16 has float32's range
and needs no loss scaling).

Keras layers take the global dtype policy when they are constructed, so
:func:`precision_policy` sets it while a model is built and compiled and puts the
previous one back: nothing leaks into later code. :func:`in_precision` rebuilds a
model in another precision with the same weights (a model trained in one precision
predicts in any).

What each computes on (measured figures: ``bench/sliding_window.py``,
``bench/train_step.py`` and the README):

- ``float32``: everywhere; the reference.
- ``bfloat16``: CPUs with AMX or AVX-512 BF16 (``amx_bf16`` / ``avx512_bf16`` in
  ``/proc/cpuinfo``: Intel Xeon since Cooper Lake / Sapphire Rapids, AMD Zen 4 and
  later), where TensorFlow's oneDNN kernels use them, and NVIDIA GPUs of compute
  capability 8.0 or newer (A100, H100, RTX 30xx and later). Elsewhere it is refused.
- ``float16``: GPUs only (TensorFlow has no float16 kernels for some CPU ops, such
  as 3D max pooling); fast on tensor cores (compute capability 7.0 and newer).
- ``auto``: bfloat16 where :data:`AUTO_BFLOAT16` allows it and the machine has it,
  float32 elsewhere (:func:`resolve_precision`); for now float32.
"""

from __future__ import annotations

import contextlib
import functools

import keras

from brain_tf.errors import ConfigError

PRECISIONS = ("float32", "bfloat16", "float16", "auto")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

#: Whether "auto" picks bfloat16 (where the hardware has it), for training and for
#: prediction, decided by measurement (bench/precision_agreement.py) against the bar "at
#: most 0.1 % of predicted voxels change, no Dice moves by more than 0.002, a small
#: preset trained in bfloat16 reaches its float32 figures". The shipped models meet it
#: (on the MNI template pretrained:brain changes 0.018-0.034 % of its voxels in bfloat16,
#: pretrained:tissue refined 0.010-0.039 %), but a tumour small run changed 0.11-0.34 % of
#: the tumour voxels of ten phantoms, and the small preset trained in bfloat16 fell short of
#: float32 on the same split; so "auto" is float32 for both.
AUTO_BFLOAT16 = {"train": False, "predict": False}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def gpu_capabilities() -> tuple:
    """Compute capability ``(major, minor)`` of each visible GPU (``()`` without one)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append(tuple(details.get("compute_capability") or (0, 0)))
    return tuple(found)


def supported(precision: str) -> tuple[bool, str]:
    """Whether this machine computes in ``precision``, and why not (empty when it does)."""
    if precision == "float32":
        return True, ""
    gpus = gpu_capabilities()
    if precision == "float16":
        return (True, "") if gpus else (False, "float16 needs a GPU (TensorFlow has no "
                                               "float16 kernels for 3D pooling on CPUs) and "
                                               "this machine has none")
    if gpus:
        if all(cc >= (8, 0) for cc in gpus):
            return True, ""
        return False, ("bfloat16 needs GPUs of compute capability 8.0 or newer; this "
                       f"machine has {', '.join('%d.%d' % cc for cc in gpus)}")
    if cpu_flags() & {"amx_bf16", "avx512_bf16"}:
        return True, ""
    return False, "bfloat16 needs a CPU with AMX or AVX-512 BF16 (or a GPU of compute " \
                  "capability 8.0 or newer); this one has neither"


def bfloat16_supported() -> bool:
    return supported("bfloat16")[0]


def resolve_precision(precision: str | None, purpose: str = "train",
                      where: str = "--precision") -> str:
    """The precision to compute in: ``precision`` itself when this machine has it (a
    one-line ConfigError when it has not), ``"auto"`` (or None) bfloat16 where it is
    supported and :data:`AUTO_BFLOAT16` allows it for ``purpose``, float32 elsewhere."""
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise ConfigError(f"{where} {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if AUTO_BFLOAT16[purpose] and bfloat16_supported() else "float32"
    ok, why = supported(precision)
    if not ok:
        hint = (" use bfloat16 (this machine has it) or float32" if bfloat16_supported()
                else " use float32 (this machine has no bfloat16 either)")
        raise ConfigError(f"{where} {precision}: {why};{hint}")
    return precision


def training_precision(training) -> str:
    """The precision asked for by a ``[training]`` section (``mixed_precision = true``
    is the older spelling of ``precision = "float16"``)."""
    if getattr(training, "mixed_precision", False):
        return "float16"
    return getattr(training, "precision", "float32")


@contextlib.contextmanager
def precision_policy(precision: str | bool):
    """Use the Keras policy of ``precision`` inside the block (the previous one restored
    after). ``True`` means float16 and ``False`` float32 (the older boolean)."""
    if precision is True or precision is False:
        precision = "float16" if precision else "float32"
    policy = POLICIES[precision]
    previous = keras.config.dtype_policy()
    if previous.name == policy:
        yield
        return
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_outputs(model) -> bool:
    """Whether every output of ``model`` is float32."""
    return all(str(getattr(t, "dtype", "float32")) == "float32"
               for t in keras.tree.flatten(model.outputs))


def model_precision(model) -> str:
    """The precision a Keras model computes in (that of its first mixed layer)."""
    for layer in _all_layers(model):
        name = layer.dtype_policy.name
        for precision, policy in POLICIES.items():
            if precision != "float32" and name == policy:
                return precision
    return "float32"


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _set_policy(config: dict, policy: str) -> None:
    """Give every layer of a functional model's config ``policy``, except its output
    layers (the float32 heads) and input layers; nested models likewise."""
    outputs = {ref[0] for ref in _layer_refs(config.get("output_layers", []))}
    for layer in config.get("layers", []):
        inner = layer.get("config", {})
        if layer.get("class_name") == "InputLayer" or layer.get("name",
                                                                inner.get("name")) in outputs:
            continue
        if "layers" in inner:
            _set_policy(inner, policy)
        if "dtype" in inner:
            inner["dtype"] = policy


def _layer_refs(refs):
    """``[name, node, tensor]`` triples of a functional config's outputs, flattened."""
    if isinstance(refs, dict):
        return [t for value in refs.values() for t in _layer_refs(value)]
    if isinstance(refs, (list, tuple)) and refs and isinstance(refs[0], str):
        return [list(refs)]
    return [t for value in refs for t in _layer_refs(value)]


def in_precision(model, precision: str):
    """``model`` computing in ``precision`` with the same weights (itself when it does
    already): the model is rebuilt from its config with the precision's policy on every
    layer but the output heads, which stay float32."""
    if model_precision(model) == precision:
        return model
    import brain_tf.objects  # noqa: F401  (registers the custom layers)

    config = model.get_config()
    _set_policy(config, POLICIES[precision])
    rebuilt = model.__class__.from_config(config)
    rebuilt.set_weights(model.get_weights())
    if not float32_outputs(rebuilt):
        raise ConfigError(f"model {model.name!r} has non-float32 outputs in {precision}; its "
                          "head layers need dtype='float32'")
    return rebuilt


def runnable_here(model):
    """``model``, rebuilt in float32 when it computes in a precision this machine lacks
    (a float16 model trained on a GPU, evaluated on a CPU)."""
    if not isinstance(model, keras.Model):
        return model
    precision = model_precision(model)
    return model if supported(precision)[0] else in_precision(model, "float32")
