"""System E's Siamese embedding: losses, balanced batches, few-shot scoring, the siamese
preset end to end (a held-out sequence, reloading, predict --support)."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from brain_tf.cli import build_parser
from brain_tf.config import dump_toml
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import ConfigError
from brain_tf.evaluation.fewshot import (
    centroids, fewshot_draws, fewshot_summary, nearest, pca_2d,
)
from brain_tf.tasks import TASKS

TASK = TASKS["slice-classification"]

# four 2D unit vectors: classes 0, 0, 1, 1
E = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], np.float32)
Y = np.array([0, 0, 1, 1])


# ------------------------------------------------------------------------------ losses
def test_contrastive_loss_by_hand():
    from brain_tf.losses import ContrastiveLoss

    # squared distances: 01 0.8, 02 2, 03 4, 12 0.4, 13 3.2, 23 2 (pairs 01 and 23 same class)
    hinge = lambda d2: max(0.0, 1.0 - np.sqrt(d2)) ** 2  # noqa: E731
    expected = (0.8 + hinge(2) + hinge(4) + hinge(0.4) + hinge(3.2) + 2.0) / 6
    assert expected == pytest.approx((0.8 + (1 - np.sqrt(0.4)) ** 2 + 2.0) / 6)
    value = float(ContrastiveLoss(margin=1.0)(Y, E))
    assert value == pytest.approx(expected, abs=1e-5)
    # a larger margin also pushes the pair 0-2 (distance sqrt 2 < 1.5)
    wider = (0.8 + (1.5 - np.sqrt(2)) ** 2 + (1.5 - np.sqrt(0.4)) ** 2 + 2.0) / 6
    assert float(ContrastiveLoss(margin=1.5)(Y, E)) == pytest.approx(wider, abs=1e-5)


def test_triplet_loss_by_hand():
    from brain_tf.losses import TripletSemiHardLoss

    d = {(0, 1): np.sqrt(0.8), (0, 2): np.sqrt(2), (0, 3): 2.0, (1, 2): np.sqrt(0.4),
         (1, 3): np.sqrt(3.2), (2, 3): np.sqrt(2)}
    # (anchor, positive): semi-hard negative (farther than the positive, the closest such)
    # (0,1) -> 2; (1,0) -> 3; (3,2) -> 1; (2,3): no negative farther than sqrt 2, so the
    # farthest negative, 0 (at exactly sqrt 2)
    losses = [1.0 + d[0, 1] - d[0, 2], 1.0 + d[0, 1] - d[1, 3], 1.0 + d[2, 3] - d[0, 2],
              1.0 + d[2, 3] - d[1, 3]]
    value = float(TripletSemiHardLoss(margin=1.0)(Y, E))
    assert value == pytest.approx(np.mean(np.maximum(losses, 0)), abs=1e-5)
    # margin 0.2: only the triplet (2, 3, 0) is violated, by the margin itself
    assert float(TripletSemiHardLoss(margin=0.2)(Y, E)) == pytest.approx(0.2 / 4, abs=1e-5)


def test_semi_hard_mining_picks_the_negative_it_should():
    from brain_tf.losses import semi_hard_negatives

    d = np.array([[0.0, 0.5, 0.3, 0.7, 0.9],
                  [0.5, 0.0, 0.2, 0.4, 0.45],
                  [0.3, 0.2, 0.0, 0.25, 0.1],
                  [0.7, 0.4, 0.25, 0.0, 0.6],
                  [0.9, 0.45, 0.1, 0.6, 0.0]], np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    chosen = np.asarray(semi_hard_negatives(d, labels))
    expected = np.full((5, 5), -1)
    expected[0, 1] = 3  # negatives 2 (0.3, harder than the positive), 3 (0.7), 4 (0.9)
    expected[1, 0] = 4  # every negative closer than the positive (0.5): the farthest
    expected[2, 3] = 0  # positive 0.25: only 0 (0.3) is farther
    expected[2, 4] = 1  # positive 0.1: 1 (0.2) and 0 (0.3) are farther, 1 is closer
    expected[3, 2] = 1  # positive 0.25: 1 (0.4) and 0 (0.7)
    expected[3, 4] = 0  # positive 0.6: only 0 (0.7)
    expected[4, 2] = 1  # positive 0.1: 1 (0.45) and 0 (0.9)
    expected[4, 3] = 0  # positive 0.6: only 0 (0.9)
    np.testing.assert_array_equal(chosen, expected)


def test_losses_by_name_reload_from_config():
    import keras

    from brain_tf import losses

    loss = losses.get("TripletSemiHardLoss", margin=0.3)
    assert isinstance(loss, losses.TripletSemiHardLoss) and loss.margin == 0.3
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is losses.TripletSemiHardLoss and again.margin == 0.3
    pair = losses.get("brain_tf>ContrastiveLoss", margin=0.5)
    assert losses.ContrastiveLoss.from_config(pair.get_config()).margin == 0.5
    with pytest.raises(ConfigError, match="margin must be positive"):
        losses.get("ContrastiveLoss", margin=0.0)


# ------------------------------------------------------------------------------ batches
def test_class_balanced_batches():
    from brain_tf.pipeline import class_balanced_dataset

    images = [np.full((4, 4, 1), i, np.float32) for i in range(20)]
    labels = np.array([0] * 3 + [1] * 7 + [2] * 10)
    batches = list(class_balanced_dataset(images, labels, per_class=4, classes_per_batch=2,
                                          seed=3).take(6))
    for x, y in batches:
        items = x.numpy()[:, 0, 0, 0].astype(int)
        y = y.numpy()
        assert len(items) == 8 and len(set(y[:4])) == 1 and len(set(y[4:])) == 1
        assert y[0] != y[4]
        np.testing.assert_array_equal(labels[items], y)  # each slice with its own class
        for half in (items[:4], items[4:]):  # distinct slices while the class has enough
            assert len(set(half)) == min(4, (labels == labels[half[0]]).sum())
    again = list(class_balanced_dataset(images, labels, per_class=4, classes_per_batch=2,
                                        seed=3).take(6))
    for (a, _), (b, _) in zip(batches, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # seeded
    val = class_balanced_dataset(images, labels, per_class=4, seed=3, batches=2)
    first, second = ([x.numpy() for x, _ in val] for _ in range(2))
    assert len(first) == 2 and first[0].shape[0] == 12  # all three classes
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # validation: the same batches every pass


# ------------------------------------------------------------------------------ few-shot
def test_centroids_and_nearest_by_hand():
    centres, present = centroids([[0, 0], [2, 0], [0, 2], [5, 5]], [0, 0, 1, 1], 3)
    np.testing.assert_allclose(centres[:2], [[1, 0], [2.5, 3.5]])
    assert present.tolist() == [True, True, False]
    order, distances = nearest([[1, 1]], centres[:2])
    assert order.tolist() == [[0, 1]]
    np.testing.assert_allclose(distances, [[1.0, np.hypot(1.5, 2.5)]])


def test_fewshot_scoring_on_a_hand_made_embedding():
    # 4 patients x 4 classes x 3 slices; classes 0 and 1 sit on their own axis with a
    # small per-slice spread, classes 2 and 3 exactly on one point: every query of classes
    # 0-2 is right and every query of class 3 is labelled 2 (the tie goes to the lower
    # class), whatever the draw
    rng = np.random.default_rng(0)
    patients, labels, points = [], [], []
    for p in range(4):
        for c in range(4):
            for _ in range(3):
                patients.append(f"P{p}")
                labels.append(c)
                points.append(np.eye(4)[min(c, 2)] * 10 + rng.normal(0, 0.1, 4) * (c < 2))
    points = np.array(points)
    draws, predictions = fewshot_draws(points, labels, patients, 4, shots=(1, 5), draws=6,
                                       support_fraction=0.5, seed=7)
    assert len(draws) == 12 and set(draws["k"]) == {1, 5}
    for row in draws.itertuples():
        support, query = set(row.support_patients.split(";")), set(row.query_patients.split(";"))
        assert not support & query and support | query == {"P0", "P1", "P2", "P3"}
        assert len(support) == 2 and row.queries == 24
    subjects = np.array(patients)
    for row in predictions.itertuples():  # only query patients' slices are labelled
        assert subjects[row.index] in draws.loc[draws["draw"] == row.draw,
                                                "query_patients"].iloc[0].split(";")
    assert len({r.support_patients for r in draws.itertuples()}) > 1  # draws differ
    metrics = fewshot_summary(predictions, ["a", "b", "c", "d"], held_out=["d"],
                              classifier_accuracy=0.9)
    for k in (1, 5):
        assert metrics[f"k{k}_accuracy"] == pytest.approx(0.75)
        assert metrics[f"k{k}_accuracy_std"] == pytest.approx(0.0)
        assert metrics[f"k{k}_seen_accuracy"] == pytest.approx(1.0)
        assert metrics[f"k{k}_held_out_accuracy"] == pytest.approx(0.0)
        assert metrics[f"k{k}_per_class"] == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}
    assert metrics["baseline_accuracy"] == 0.25 and metrics["classifier_accuracy"] == 0.9
    assert metrics["held_out_classes"] == ["d"] and metrics["draws"] == 6
    again, _ = fewshot_draws(points, labels, patients, 4, shots=(1, 5), draws=6, seed=7)
    pd.testing.assert_frame_equal(draws, again)  # seeded


def test_pca_2d_recovers_the_main_axes():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(0, 5, 200), rng.normal(0, 1, 200), rng.normal(0, 0.01, 200)]
    x = x @ np.linalg.qr(rng.normal(size=(3, 3)))[0]  # rotate: the axes are not the columns
    points = pca_2d(x)
    assert points.shape == (200, 2)
    np.testing.assert_allclose(points.std(axis=0), [5, 1], rtol=0.15)
    assert abs(np.corrcoef(points.T)[0, 1]) < 1e-6


# ------------------------------------------------------------------------------ the preset
# A tiny ResNet layout (width 8, one block per stage) for 160 steps. Slices are 64x64: at
# 32x32 and this few steps nothing here tells the sequences apart (the small classifier on
# the same 32x32 twin: sequence accuracy 0.30, chance 0.25).
TINY = {"preprocess": {"shape": [64, 64]}, "model": {"width": 8, "blocks": [1, 1, 1, 1]},
        "target": {"held_out": ["DWI"], "per_class": 6, "embedding_dim": 16},
        "training": {"epochs": 8, "batch_size": 18, "steps_per_epoch": 20, "verbose": 0},
        "fewshot": {"draws": 10}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("siamese")
    spec = synthesize("tcga_gbm_slices", root / "data", subjects=24, seed=1, shape=(64, 64))
    config = TASK.config("siamese", {
        **TINY, "data": {"spec": str(spec), "seed": 0,
                         "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}}})
    return root, TASK.train(config, run_dir=str(root / "run"))


def test_a_held_out_sequence_is_told_apart_few_shot(trained):
    from brain_tf.tasks.siamese import FAMILY
    from brain_tf.training.runner import open_run

    _, run = trained
    for name in ("model.keras", "saved_model/saved_model.pb", "embedding_pca.png",
                 "fewshot_draws.csv", "learning_curves.png", "complete.json"):
        assert (run / name).exists(), name
    _, ctx = open_run(TASK, run.path)
    train_rows, _ = FAMILY.labelled(ctx, ctx.rows("train"), trained_only=True)
    assert len(train_rows) == 12 * 18 and "DWI" not in set(train_rows["sequence"])
    metrics = run.load_json("metrics.json")
    assert metrics["held_out_classes"] == ["DWI"] and metrics["baseline_accuracy"] == 0.25
    # 6 test patients x 24 slices, DWI included; support and query patients per draw
    assert metrics["items"] == 144 and metrics["subjects"] == 6
    # DWI never took part in training or validation; with 5 labelled slices per class its
    # slices are still labelled DWI at twice the chance rate or more (measured here 0.82;
    # at 1 slice 0.68; the three seen sequences 0.50 and 0.43)
    assert metrics["k5_held_out_accuracy"] >= 2 * metrics["baseline_accuracy"]
    assert metrics["k1_held_out_accuracy"] > metrics["baseline_accuracy"] + 0.2
    assert metrics["k5_seen_accuracy"] > metrics["baseline_accuracy"] + 0.15
    table = pd.read_csv(run / "test_items.csv")
    assert table["held_out"].sum() == 36 and (table.loc[table["held_out"], "class"] == "DWI").all()
    draws = pd.read_csv(run / "fewshot_draws.csv")
    queried = draws[draws["k"] == 5]["queries"].sum()
    assert table["k5_queried"].sum() == queried


def test_model_reloads_equal_in_a_fresh_process(trained, tmp_path):
    from brain_tf.training.run import SavedModelPredictor

    root, run = trained
    model = run.load_model()
    x = np.random.default_rng(0).uniform(0, 255, (5, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    embeddings = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    code = (
        "import sys, numpy as np, keras, tensorflow as tf\n"
        "import brain_tf.objects\n"
        "x = np.load(sys.argv[1])\n"
        "m = keras.saving.load_model(sys.argv[2])\n"
        "sm = tf.saved_model.load(sys.argv[3])\n"
        "np.save(sys.argv[4], np.stack([m.predict(x, verbose=0), sm.embed(tf.constant(x))"
        ".numpy(), sm.serve(tf.constant(x)).numpy()]))\n"
        "print(type(m.loss).__name__, m.loss.margin)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy"),
                          str(run / "model.keras"), str(run / "saved_model"),
                          str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["TripletSemiHardLoss", "0.2"]
    for reloaded in np.load(tmp_path / "y.npy"):  # keras, embed, serve
        np.testing.assert_allclose(reloaded, embeddings, atol=1e-5)
    np.testing.assert_allclose(SavedModelPredictor(run.path)(x), embeddings, atol=1e-5)


def _support_folder(root, out):
    """Three slices per sequence of one patient, its T2 slices renamed to a new class."""
    files = sorted((root / "data").glob("*_Glioma_GBM_*.jpg"))
    patient = files[0].name.split("_")[4]
    out.mkdir()
    chosen = []
    for sequence in ("DWI", "T1", "T1C", "T2"):
        for path in [f for f in files if f"_{sequence}_" in f.name
                     and f"_{patient}_" in f.name][:3]:
            name = path.name.replace("_T2_", "_SWI_")
            shutil.copy(path, out / name)
            chosen.append((name, "SWI" if sequence == "T2" else sequence))
    queries = [f for f in files if f"_{patient}_" not in f.name][:12]
    return chosen, queries


def test_predict_with_a_support_set(trained, tmp_path):
    root, run = trained
    chosen, queries = _support_folder(root, tmp_path / "support")
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "slice-classification", "predict",
         "--model", str(run.path), "--support", str(tmp_path / "support"),
         *map(str, queries), "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cli = pd.read_csv(tmp_path / "cli" / "predictions.csv")
    assert list(cli.columns) == ["file", "predicted", "distance", "runner_up",
                                 "runner_up_distance"]
    assert cli["file"].tolist() == [str(q) for q in queries]
    assert (cli["predicted"] != cli["runner_up"]).all()
    assert (cli["distance"] <= cli["runner_up_distance"]).all()
    # by hand: centroids of the support embeddings, nearest and second nearest
    from brain_tf.io import load_image
    from brain_tf.preprocess.slices import preprocess_slice

    model = run.load_model()
    embed = lambda paths: model.predict(np.stack(  # noqa: E731
        [preprocess_slice(load_image(p), None, {"shape": [64, 64], "rgb": True})[0]
         for p in paths]), verbose=0)
    classes = ["DWI", "SWI", "T1", "T1C"]
    support = embed([tmp_path / "support" / name for name, _ in chosen])
    centres = np.stack([support[[c == name for _, c in chosen]].mean(0) for name in classes])
    d = np.linalg.norm(embed(queries)[:, None] - centres[None], axis=-1)
    order = np.argsort(d, axis=1)
    assert cli["predicted"].tolist() == [classes[i] for i in order[:, 0]]
    assert cli["runner_up"].tolist() == [classes[i] for i in order[:, 1]]
    np.testing.assert_allclose(cli["distance"], np.sort(d, axis=1)[:, 0], atol=1e-4)
    np.testing.assert_allclose(cli["runner_up_distance"], np.sort(d, axis=1)[:, 1], atol=1e-4)
    # the same support set as a CSV of file, class (files relative to the CSV)
    pd.DataFrame({"file": [f"support/{n}" for n, _ in chosen],
                  "class": [c for _, c in chosen]}).to_csv(tmp_path / "support.csv",
                                                           index=False)
    table = pd.read_csv(TASK.predict(run / "model.keras", queries, tmp_path / "csv",
                                     support=tmp_path / "support.csv")[0])
    assert table["predicted"].tolist() == cli["predicted"].tolist()
    np.testing.assert_allclose(table["distance"], cli["distance"], atol=1e-4)


def test_support_set_errors(trained, tmp_path):
    from brain_tf.errors import DataError

    root, run = trained
    image = sorted((root / "data").glob("*.jpg"))[0]
    with pytest.raises(ConfigError, match="--support"):
        TASK.predict(run.path, [image], tmp_path)  # a siamese run needs a support set
    (tmp_path / "one").mkdir()
    shutil.copy(image, tmp_path / "one" / image.name)
    with pytest.raises(DataError, match="at least two classes"):
        TASK.predict(run.path, [image], tmp_path, support=tmp_path / "one")
    (tmp_path / "one" / "scan.jpg").write_bytes(image.read_bytes())
    with pytest.raises(DataError, match="not named like the dataset's files"):
        TASK.predict(run.path, [image], tmp_path, support=tmp_path / "one")


def test_held_out_must_name_a_class(trained, tmp_path):
    root, _ = trained
    config = TASK.config("siamese", {**TINY, "data": {"spec": str(root / "data/spec.toml")},
                                     "target": {"held_out": ["FLAIR"]}})
    with pytest.raises(ConfigError, match="FLAIR"):
        TASK.train(config, run_dir=str(tmp_path / "run"))
    config = TASK.config("siamese", {"data": {"spec": str(root / "data/spec.toml")},
                                     "target": {"held_out": ["DWI", "T1", "T2"]}})
    with pytest.raises(ConfigError, match="fewer than two classes"):
        TASK.train(config, run_dir=str(tmp_path / "run2"))


def test_support_flag_only_where_a_family_takes_a_support_set(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["slice-classification", "predict", "--model", "RUN",
                              "--support", "DIR", "a.jpg", "--out", "o"])
    assert args.support == "DIR"
    with pytest.raises(SystemExit):
        parser.parse_args(["lesion-segmentation", "predict", "--model", "RUN", "--support",
                           "DIR", "a.tif", "--out", "o"])


def test_preset_config_reads_back(tmp_path):
    config = TASK.config("siamese", {"target": {"held_out": ["T2"]}})
    assert config.target.label == "sequence" and config.fewshot.shots == [1, 5]
    assert config.model["name"] == "siamese_embedding"
    dump_toml(config.to_dict(), tmp_path / "config.toml")
    assert TASK.load_config(tmp_path).to_dict() == config.to_dict()
    with pytest.raises(ConfigError, match="per_class must be at least 2"):
        TASK.config("siamese", {"target": {"per_class": 1}})
    with pytest.raises(ConfigError, match="unknown key 'shot'"):
        TASK.config("siamese", {"fewshot": {"shot": [1]}})
