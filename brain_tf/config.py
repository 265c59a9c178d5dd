"""TOML reading and writing (configs, data specs, run folders).

Reading uses ``tomllib`` (``tomli`` on Python 3.10). Writing covers what
brain_tf stores: nested tables of strings, numbers, booleans and lists of them.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from brain_tf.errors import ConfigError
from brain_tf.io.atomic import write_text


def load_toml(path: str | os.PathLike) -> dict:
    """Read a TOML file, with the file named in any error."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def _key(k: str) -> str:
    k = str(k)
    if k and all(c.isalnum() or c in "-_" for c in k):
        return k
    return '"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, (str, os.PathLike)):
        s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{s}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        raise ConfigError("TOML has no null; drop the key or give a value")
    if hasattr(v, "item"):  # numpy scalar
        return _value(v.item())
    raise ConfigError(f"cannot write {type(v).__name__} value {v!r} to TOML")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Serialise nested dicts to TOML (``None`` values are left out)."""
    lines: list[str] = []

    def table(d: Mapping, prefix: str) -> None:
        scalars = {k: v for k, v in d.items() if v is not None and not isinstance(v, Mapping)}
        subtables = {k: v for k, v in d.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not subtables):
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in subtables.items():
            table(v, f"{prefix}.{_key(k)}" if prefix else _key(k))

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def dump_toml(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write nested dicts to a TOML file atomically."""
    return write_text(path, dumps_toml(data))


def with_defaults(config: Mapping[str, Any] | None, defaults: Mapping[str, Any],
                  what: str) -> dict:
    """``defaults`` updated with ``config``; :class:`ConfigError` naming unknown keys."""
    config = dict(config or {})
    unknown = set(config) - set(defaults)
    if unknown:
        raise ConfigError(f"{what}: unknown keys {sorted(unknown)}; "
                          f"valid keys are {sorted(defaults)}")
    return {**defaults, **config}


def from_registry(registry: Mapping[str, type], base: type, kind: str, identifier,
                  config: Mapping[str, Any]):
    """Build a registered brain_tf object from a name, ``brain_tf>Name`` or a Keras
    ``{"class_name", "config"}`` dict; instances of ``base`` are returned unchanged."""
    if isinstance(identifier, base):
        return identifier
    config = dict(config)
    if isinstance(identifier, Mapping):
        config = {**identifier.get("config", {}), **config}
        identifier = identifier.get("class_name")
    name = str(identifier).removeprefix("brain_tf>")
    if name not in registry:
        raise ConfigError(f"unknown {kind} {identifier!r}; choose one of "
                          f"{', '.join(registry)}")
    try:
        return registry[name](**config)
    except TypeError as err:
        raise ConfigError(f"bad options for {kind} {name}: {err}") from err

