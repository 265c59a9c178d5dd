"""The generated task commands pass their options through to the task functions."""

import pytest

from brain_tf.cli import build_parser, main
from brain_tf.tasks import TASKS


def test_predict_passes_one_mask_per_input(monkeypatch, tmp_path):
    calls = []
    task = TASKS["tissue-segmentation"]

    def fake_predict(model, inputs, out, uncertainty=False, masks=None, support=None,
                     skip_existing=False, precision=None, write=(), config=None):
        calls.append(((model, inputs, out), {"uncertainty": uncertainty, "masks": masks,
                                             "skip_existing": skip_existing,
                                             "precision": precision, "write": list(write),
                                             "config": config}))
        return 0

    monkeypatch.setattr(task, "predict", fake_predict)
    assert main(["tissue-segmentation", "predict", "--model", "RUN", "a.nii.gz", "b.nii.gz",
                 "--mask", "ma.nii.gz", "mb.nii.gz", "--out", str(tmp_path)]) == 0
    assert calls == [(("RUN", ["a.nii.gz", "b.nii.gz"], str(tmp_path)),
                      {"uncertainty": False, "masks": ["ma.nii.gz", "mb.nii.gz"],
                       "skip_existing": False, "precision": None, "write": [],
                       "config": None})]
    calls.clear()
    assert main(["tissue-segmentation", "predict", "--model", "RUN", "a.nii.gz",
                 "--out", str(tmp_path), "--uncertainty", "--skip-existing",
                 "--precision", "bfloat16", "--write", "probseg", "--config", "c.toml"]) == 0
    assert calls == [(("RUN", ["a.nii.gz"], str(tmp_path)),
                      {"uncertainty": True, "masks": None, "skip_existing": True,
                       "precision": "bfloat16", "write": ["probseg"], "config": "c.toml"})]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_mask_option_only_where_the_task_takes_masks(name, capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([name, "predict", "--help"])
    takes_masks = name in {"tumor-segmentation", "tissue-segmentation",
                           "hippocampus-segmentation"}
    assert ("--mask" in capsys.readouterr().out) == takes_masks
