"""bench/model_cache.py: benches keep a model's outputs under a name that changes with it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from model_cache import cache_key, model_digest  # noqa: E402


def test_the_key_follows_the_weights_not_only_the_name(tmp_path):
    run = tmp_path / "run-1"
    run.mkdir()
    (run / "weights.npz").write_bytes(b"first weights")
    (run / "notes.txt").write_text("not part of the model")
    first = cache_key(str(run))
    assert first == f"{str(run).replace('/', '_')}-{model_digest(str(run))}"
    (run / "notes.txt").write_text("changed")
    assert cache_key(str(run)) == first
    (run / "weights.npz").write_bytes(b"retrained weights")
    assert cache_key(str(run)) != first


def test_a_key_names_every_model_and_a_shipped_one_by_its_bundle():
    key = cache_key("pretrained:tissue", "pretrained:brain")
    tissue, brain = key.split("+")
    assert tissue.startswith("pretrained_tissue-") and brain.startswith("pretrained_brain-")
    assert len(tissue.rsplit("-", 1)[1]) == 12
    assert tissue.rsplit("-", 1)[1] != brain.rsplit("-", 1)[1]


def test_a_missing_model_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        model_digest(str(tmp_path / "missing.keras"))
