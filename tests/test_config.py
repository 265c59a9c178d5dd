"""TOML writing round-trips through the standard reader."""

import pytest

from brain_tf.config import dump_toml, load_toml
from brain_tf.errors import ConfigError


def test_round_trip(tmp_path):
    data = {"name": 'tumour "small"', "epochs": 3, "lr": 1e-4, "flags": [True, False],
            "model": {"filters": [16, 32], "norm": "instance", "extra": {"a.b": 1}},
            "skip": None, "spacing": (1.0, 2.5, 3.0)}
    path = dump_toml(data, tmp_path / "c.toml")
    back = load_toml(path)
    expected = {k: v for k, v in data.items() if v is not None}
    expected["spacing"] = [1.0, 2.5, 3.0]
    assert back == expected


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing.toml: file not found"):
        load_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot write"):
        dump_toml({"x": object()}, tmp_path / "x.toml")
