"""Which ``tf.distribute`` strategy a run trains under, and which process is the chief.

``training.strategy`` in a task config (``--strategy`` on the command line):

* ``"default"``: no distribution (one device, TensorFlow's default strategy);
* ``"mirrored"``: :class:`tf.distribute.MirroredStrategy` over the local GPUs
  (or the local CPU's logical devices), one model replica per device;
* ``"multiworker"``: :class:`tf.distribute.MultiWorkerMirroredStrategy`
  across machines, configured the standard way by the ``TF_CONFIG``
  environment variable of each process.

A strategy is created once per process and reused (a multi-worker strategy
must exist before TensorFlow runs its first operation, so tasks create it
when they open the run folder, before building datasets).
"""

from __future__ import annotations

import json
import os

from brain_tf.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multiworker")

_CACHE: dict[str, object] = {}


def strategy_name(config: dict | None) -> str:
    """``config["training"]["strategy"]`` (default ``"default"``), checked."""
    name = ((config or {}).get("training") or {}).get("strategy") or "default"
    if name not in STRATEGIES:
        raise ConfigError(f"training.strategy {name!r} is unknown; choose one of "
                          f"{', '.join(STRATEGIES)}")
    return name


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc.msg}); see the README section "
                          "'Training on several GPUs or machines'") from None
    if not isinstance(value, dict):
        raise ConfigError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return value


def _check_tf_config(value: dict) -> None:
    cluster, task = value.get("cluster"), value.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError("--strategy multiworker needs TF_CONFIG with 'cluster' (lists of "
                          "host:port per job) and 'task' ({'type': 'worker', 'index': N}) set "
                          "in every process")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster or not 0 <= int(index) < len(cluster[kind]):
        raise ConfigError(f"TF_CONFIG task {task} is not in its cluster {cluster}")


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process a non-chief worker.

    The chief is the ``chief`` task, or worker 0 when the cluster has no chief
    (the standard Keras convention). Only the chief writes the run folder.
    """
    value = tf_config()
    task = value.get("task") or {}
    kind = task.get("type")
    if kind in (None, "chief"):
        return True
    if kind == "worker":
        return int(task.get("index", 0)) == 0 and "chief" not in (value.get("cluster") or {})
    return False


def get_strategy(name: str = "default"):
    """The process's :class:`tf.distribute.Strategy` of that name (created once)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name in _CACHE:
        return _CACHE[name]
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        _check_tf_config(tf_config())
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot start the multi-worker strategy ({exc}); create it "
                              "before any TensorFlow operation runs") from None
    _CACHE[name] = strategy
    return strategy


def config_strategy(config: dict | None):
    """The strategy a task config asks for (see :func:`strategy_name`)."""
    return get_strategy(strategy_name(config))


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
