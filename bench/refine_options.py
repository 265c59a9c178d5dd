"""``NAME=VALUE`` replacements of the refinement's options, for the benches' diagnoses and
grids (``--refine-option bias_order=0``)."""

from __future__ import annotations

import dataclasses

from brain_tf.inference.refine import RefineOptions


def parse_overrides(items, flag: str = "--refine-option") -> dict:
    """``["mrf=0.2", "partial_volume=false"]`` -> ``{"mrf": 0.2, "partial_volume": False}``."""
    defaults = RefineOptions()
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not hasattr(defaults, name):
            raise SystemExit(f"{flag} {item!r}: give NAME=VALUE with NAME one of "
                             f"{', '.join(f.name for f in dataclasses.fields(defaults))}")
        kind = type(getattr(defaults, name))
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"{flag} {name}= takes true or false, not {value!r}")
            out[name] = value.lower() == "true"
        else:
            try:
                out[name] = kind(value)
            except ValueError:
                raise SystemExit(f"{flag} {name}= takes {kind.__name__} values, not {value!r}") \
                    from None
    return out
