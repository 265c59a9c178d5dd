"""The ``brain-tf`` command line.

    brain-tf TASK train --spec X.toml        train a task (brain-tf --help lists the tasks)
    brain-tf TASK evaluate --run RUN         test-split metrics of a run
    brain-tf TASK predict --model RUN IN...  predict new files with a run or a SavedModel
    brain-tf synth LAYOUT --out DIR          write a synthetic twin of a dataset layout
    brain-tf manifest --spec X.toml          list a dataset's samples (and check it)
    brain-tf split --spec X.toml --out F     patient-level train/val/test split to CSV
    brain-tf shard --spec X.toml --out DIR   preprocessed subjects to TFRecord shards
    brain-tf tissue-volumes MAPS --out F     CSF/GM/WM volumes of label maps
    brain-tf bids BIDS_DIR OUT participant   BIDS App (then ... group: volumes.tsv, report)
    brain-tf demo                            the quick-start job on synthetic data

Help and argument errors come back without loading TensorFlow: only the arguments of the
command being run are built, and tasks are configuration until they run. Errors a user
can cause print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from brain_tf import __version__
from brain_tf.errors import BrainTFError, ConfigError

COMMANDS: dict = {}


def command(name: str, help_text: str):
    """Register ``fn(args)`` as sub-command ``name``; ``fn.add_arguments(parser)`` adds flags."""
    def wrap(fn):
        COMMANDS[name] = (fn, help_text)
        return fn
    return wrap


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value
    return parse


def _spec_args(p):
    p.add_argument("--spec", required=True, help="data spec TOML, or a shipped spec's name")
    p.add_argument("--root", help="dataset folder (overrides the spec's root)")


@command("manifest", "list the samples of a dataset described by a data spec, checking every file")
def _manifest(args):
    from brain_tf.data import load_spec

    spec = load_spec(args.spec, root=args.root)
    manifest = spec.manifest()
    if args.check:
        from brain_tf.data.check import check_manifest, default_cache_path

        report = check_manifest(manifest, spec, cache=default_cache_path())
        print(f"checked {report.files} files of {report.samples} samples in "
              f"{report.seconds:.1f} s ({report.cached} unchanged since they passed): "
              "no problems")
    if args.out:
        from brain_tf.io.tables import write_table

        write_table(manifest, args.out)
        print(f"wrote {len(manifest)} samples of {manifest['subject'].nunique()} subjects "
              f"to {args.out}")
    else:
        # whole paths: a cut one cannot tell which file a sample reads
        print(manifest.to_string(max_rows=40, max_colwidth=None))


def _manifest_args(p):
    _spec_args(p)
    p.add_argument("--out", help="CSV to write")
    p.add_argument("--check", action="store_true",
                   help="also read every file whole: corrupt files, NaN voxels, grids, labels")


_manifest.add_arguments = _manifest_args


@command("split", "split a dataset by subject into train/val/test and write the split CSV")
def _split(args):
    from brain_tf.data import load_spec, save_splits, split_subjects

    manifest = load_spec(args.spec, root=args.root).manifest()
    out = split_subjects(manifest, dict(zip(("train", "val", "test"), args.fractions)),
                         seed=args.seed, stratify=args.stratify)
    save_splits(out, args.out)
    print(f"wrote {args.out}: subjects per split "
          f"{out.groupby('split')['subject'].nunique().to_dict()}")


def _split_args(p):
    _spec_args(p)
    p.add_argument("--out", required=True, help="CSV to write (sample, subject, split)")
    p.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15),
                   metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=_count(0), default=0)
    p.add_argument("--stratify", help="column to balance, e.g. age or sex")


_split.add_arguments = _split_args


@command("synth", "write a synthetic dataset in the on-disk layout of a real one, with its spec")
def _synth(args):
    from brain_tf.data import synthetic

    kwargs = {"subjects": args.subjects, "seed": args.seed, "progress": True}
    if args.shape:
        kwargs["shape"] = tuple(args.shape)
    if args.spacing:
        kwargs["spacing"] = tuple(args.spacing)
    spec = synthetic.synthesize(args.layout, args.out, **kwargs)
    print(f"wrote a synthetic {args.layout} dataset to {args.out}; spec: {spec}")


def _synth_args(p):
    from brain_tf.data.synthetic import LAYOUTS

    p.add_argument("layout", choices=LAYOUTS)
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--subjects", type=_count(1), default=12, help="number of subjects (patients)")
    p.add_argument("--seed", type=_count(0), default=0)
    p.add_argument("--shape", type=_count(1), nargs="+",
                   help="image size (3 numbers, 2 for slices)")
    p.add_argument("--spacing", type=float, nargs="+", help="voxel size in mm")


_synth.add_arguments = _synth_args


@command("shard", "write a dataset's preprocessed subjects to compressed TFRecord shards")
def _shard(args):
    from brain_tf.data.shards import write_shards

    if bool(args.config) == bool(args.task):
        raise ConfigError("shard needs the preprocessing to apply: --task TASK [--preset P] "
                          "or --config RUN/config.toml (one of them)")
    if args.config:
        from brain_tf.config import load_toml

        preprocess, where = load_toml(args.config).get("preprocess"), args.config
        if preprocess is None:
            raise ConfigError(f"{args.config}: no [preprocess] table; pass a run's config.toml "
                              "or use --task/--preset")
    else:
        preprocess = _task(args.task).config(args.preset).preprocess.to_dict()
        where = f"{args.task} {args.preset}"
    index = write_shards(args.spec, args.out, preprocess, root=args.root,
                         subjects_per_shard=args.subjects_per_shard, source=where)
    print(f"wrote {index['num_subjects']} subjects in {len(index['shards'])} shards to "
          f"{args.out} (preprocessing from {where})")


def _shard_args(p):
    _spec_args(p)
    p.add_argument("--out", required=True, help="folder for the shards and index.json")
    p.add_argument("--task", help="take the preprocessing from this task's preset")
    p.add_argument("--preset", default="default", help="the task preset (default: default)")
    p.add_argument("--config", help="TOML with a [preprocess] table (e.g. a run's config.toml)")
    p.add_argument("--subjects-per-shard", type=_count(1), default=8,
                   help="subjects per TFRecord file (small shards read faster by index)")


_shard.add_arguments = _shard_args


@command("tissue-volumes", "CSF/GM/WM volumes (ml, fractions) per subject from label maps "
         "or probability maps (soft volumes)")
def _tissue_volumes(args):
    from pathlib import Path

    from brain_tf.evaluation.volumes import (PROBSEG, probseg_beside, probseg_groups,
                                             soft_volumes_table, subject_name,
                                             tissue_volumes_table)
    from brain_tf.io.tables import write_table

    if bool(args.spec) == bool(args.labelmaps):
        raise ConfigError("tissue-volumes: give either --spec SPEC or label-map files, not both "
                          "(and not neither)")
    labels = None
    if args.spec:
        from brain_tf.data import load_spec

        spec = load_spec(args.spec, root=args.root)
        manifest, labels = spec.manifest(), spec.labels or None
        if "label" not in manifest.columns:
            raise ConfigError(f"{spec.path}: the spec has no [files] label pattern for "
                              "reference segmentations")
        items = [(str(s), str(p)) for s, p in zip(manifest["sample"], manifest["label"])
                 if isinstance(p, str) and p]
    else:
        soft = probseg_groups(args.labelmaps)
        maps = [p for p in args.labelmaps if not PROBSEG.match(os.path.basename(p))]
        if args.probseg:
            soft.update({str(Path(p).parent / subject_name(p)): probseg_beside(p) for p in maps})
            maps = []
        if soft and maps:
            raise ConfigError("tissue-volumes: give label maps or probability maps "
                              "(*_label-CLASS_probseg.nii.gz), not both")
        items = [(subject_name(p), str(p)) for p in maps]
    if not args.spec and soft:
        table = soft_volumes_table([(Path(s).name, g) for s, g in soft.items()])
    else:
        table = tissue_volumes_table(items, labels)
    write_table(table, args.out)
    names = [c[:-3] for c in table.columns if c.endswith("_ml")]
    print(f"wrote {args.out}: {len(table)} subjects; mean volumes "
          + ", ".join(f"{n} {table[f'{n}_ml'].mean():.1f} ml" for n in names))


def _tissue_volumes_args(p):
    p.add_argument("labelmaps", nargs="*", metavar="LABELMAP",
                   help="label-map NIfTI files (e.g. predicted *_seg.nii.gz), or probability "
                        "maps (*_label-CLASS_probseg.nii.gz: soft volumes)")
    p.add_argument("--probseg", action="store_true",
                   help="soft volumes from the probability maps beside each label map "
                        "(written by predict --write probseg)")
    p.add_argument("--spec", help="data spec TOML: measure its reference segmentations")
    p.add_argument("--root", help="dataset folder (overrides the spec's root)")
    p.add_argument("--out", required=True, help="CSV to write")


_tissue_volumes.add_arguments = _tissue_volumes_args


@command("export", "export a finished run: an ONNX file, or a shipped model bundle")
def _export(args):
    from pathlib import Path

    from brain_tf.training.run import RunFolder

    if not (args.onnx or args.pretrained):
        raise ConfigError("export needs --onnx FILE.onnx and/or --pretrained FOLDER")
    if args.card and not Path(args.card).is_file():
        raise ConfigError(f"{args.card}: no such model card file (--card MODEL_CARD.md)")
    run = RunFolder.open(args.run)
    run.require_complete()
    model = run.load_model(compile=False)
    if args.onnx:
        import numpy as np

        from brain_tf.inference.onnx_model import export_onnx

        shape = [1] + [int(n) for n in model.input_shape[1:]]
        tile = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        print(f"wrote {export_onnx(model, args.onnx, sample=tile)} (ONNX Runtime gives the "
              "Keras outputs within 1e-4 on a tile)")
    if args.pretrained:
        from brain_tf.training.bundle import write_bundle

        card = Path(args.card).read_text() if args.card else f"# {run.path.name}\n"
        out = write_bundle(run, args.pretrained, model, card)
        size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
        print(f"wrote {out} ({size:.1f} MB)")


def _export_args(p):
    p.add_argument("run", help="a finished run folder")
    p.add_argument("--onnx", help="ONNX file to write (needs pip install 'brain_tf[onnx]')")
    p.add_argument("--pretrained", help="bundle folder to write (float16 weights)")
    p.add_argument("--card", help="MODEL_CARD.md to put in the bundle")


_export.add_arguments = _export_args


@command("bids", "BIDS App: brain mask, tissue maps and volumes of a BIDS dataset; a QC report")
def _bids(args):
    from brain_tf.bids.app import main as bids_main

    return bids_main(args.bids_dir, args.output_dir, args.level, args.participant_label,
                     args.session_label, args.models, args.suffix, args.spacing,
                     skip_existing=not args.overwrite)


def _bids_args(p):
    p.add_argument("bids_dir", help="the BIDS dataset (holding dataset_description.json)")
    p.add_argument("output_dir", help="the derivatives folder to write")
    p.add_argument("level", choices=("participant", "group"),
                   help="participant: segment each image; group: volumes.tsv and report.html")
    p.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                   help="participants to run (without sub-; default: all)")
    p.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL",
                   help="sessions to run (without ses-; default: all)")
    p.add_argument("--models", nargs="+", default=(), metavar="MODEL",
                   help="run folders or pretrained:NAME: a brain-extraction or tissue run "
                        "replaces the shipped one; any other run (age, hippocampus, "
                        "tumour) adds its outputs")
    p.add_argument("--suffix", default="T1w", help="the images to segment (default: T1w)")
    p.add_argument("--spacing", type=float, metavar="MM",
                   help="run the models at this voxel size (coarser: faster, rougher)")
    p.add_argument("--overwrite", action="store_true",
                   help="predict images again whose outputs exist (default: skip them)")


_bids.add_arguments = _bids_args


@command("demo", "the quick start: synthetic BraTS data, train the tumour U-Net, evaluate, predict")
def _demo(args):
    from brain_tf.demo import EPOCHS, run_demo

    run_demo(out=args.out, runs=args.runs, subjects=args.subjects, epochs=args.epochs or EPOCHS)


def _demo_args(p):
    p.add_argument("--out", default="demo_data", help="folder for synthetic data and predictions")
    p.add_argument("--runs", default="models", help="where run folders go")
    p.add_argument("--subjects", type=_count(3), default=10)
    p.add_argument("--epochs", type=_count(1), help="training epochs (default 20)")


_demo.add_arguments = _demo_args


# ------------------------------------------------------------------------------ tasks
def _task(name: str):
    from brain_tf.tasks import TASKS

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose from {', '.join(sorted(TASKS))}")
    return TASKS[name]


PRECISION_CHOICES = ("float32", "bfloat16", "float16", "auto")
PRECISION_HELP = ("compute in float32 (default for train), bfloat16 (CPUs with AMX/AVX-512 "
                  "BF16, GPUs of compute capability >= 8.0; the tumour default U-Net trains "
                  "3x faster on an AMX CPU, small networks gain little), float16 (GPUs "
                  "only) or auto (default for predict: float32 for now; README: Precision); "
                  "weights, heads and losses stay float32")


def _task_arguments(tp, task) -> None:
    from brain_tf.tasks.base import SCHEMAS

    actions = tp.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train on a dataset and save a run folder")
    train.add_argument("--spec", help="data spec TOML or shipped spec name (default: the preset's)")
    train.add_argument("--root", help="dataset folder (overrides the spec's root)")
    train.add_argument("--preset", default="default", choices=sorted(task.presets),
                       help="configuration preset ('small' trains in minutes on a CPU)")
    train.add_argument("--config", help="TOML file of settings merged over the preset")
    train.add_argument("--epochs", type=_count(1))
    train.add_argument("--stop-at-epoch", type=_count(1), help="stop after this epoch")
    train.add_argument("--batch-size", type=_count(1))
    train.add_argument("--splits", help="CSV of sample,subject,split to reuse a split")
    train.add_argument("--seed", type=_count(0))
    train.add_argument("--run-dir", help="run folder (default models/TASK/TIMESTAMP); an "
                                         "unfinished run there resumes")
    train.add_argument("--force", action="store_true",
                       help="start over in --run-dir even if it holds a finished run")
    train.add_argument("--shards", help="read subjects from this 'brain-tf shard' folder")
    train.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                       help="tf.distribute strategy: one device, the local GPUs (mirrored) "
                            "or several machines set up by TF_CONFIG (multiworker)")
    train.add_argument("--precision", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    train.add_argument("--mixed-precision", action="store_const", const="float16",
                       dest="precision", help="same as --precision float16")
    train.add_argument("--tensorboard", action="store_true", default=None,
                       help="write TensorBoard logs to the run's tensorboard/ folder")
    train.add_argument("--init-weights", metavar="MODEL",
                       help="start from the weights of a trained model of the same network "
                            "(a run folder or pretrained:NAME) to fine-tune it")
    train.set_defaults(_fn=lambda a, t=task: _train(t, a))
    evaluate = actions.add_parser("evaluate", help="test-split metrics of a run")
    evaluate.add_argument("--run", required=True, help="run folder")
    evaluate.add_argument("--root", help="dataset folder (if it moved since training)")
    evaluate.set_defaults(_fn=lambda a, t=task: t.evaluate(a.run, root=a.root))
    predict = actions.add_parser("predict", help="predict files with a trained run")
    predict.add_argument("--model", required=True,
                         help="run folder, its saved_model/, or a shipped model "
                              "(pretrained:tissue, pretrained:brain)")
    predict.add_argument("inputs", nargs="+", help="input files (NIfTI or images)")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--uncertainty", action="store_true",
                         help="MC-dropout uncertainty (models built with MC dropout)")
    if task.takes_masks:
        predict.add_argument("--mask", nargs="+", dest="masks", metavar="MASK",
                             help="brain mask NIfTI per input, in the same order")
    if any("fewshot" in SCHEMAS[task.family_of(p)] for p in task.presets):
        predict.add_argument("--support", metavar="DIR_OR_CSV",
                             help="few-shot runs: labelled slices to label the inputs by, a "
                                  "folder named like the dataset's files or a CSV of file,class")
    if task.family_name == "segmentation":
        predict.add_argument("--skip-existing", action="store_true",
                             help="leave out scans whose outputs exist (continue a cohort)")
        predict.add_argument("--write", nargs="+", metavar="KIND", default=(),
                             choices=("seg", "mask", "brain", "probseg"),
                             help="outputs to write besides the model's own (probseg: one "
                                  "probability map per class, NAME_label-CLASS_probseg)")
    predict.add_argument("--precision", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    predict.add_argument("--config", metavar="TOML",
                         help="an [inference] table merged over the run's (e.g. "
                              "refine_components = 1)")
    predict.set_defaults(_fn=lambda a, t=task: t.predict(
        a.model, a.inputs, a.out, uncertainty=a.uncertainty, masks=getattr(a, "masks", None),
        support=getattr(a, "support", None), skip_existing=getattr(a, "skip_existing", False),
        precision=a.precision, write=getattr(a, "write", ()), config=a.config))


def _train(task, args):
    from brain_tf.schema import deep_merge
    from brain_tf.tasks.base import SCHEMAS

    overrides: dict = {}
    if args.config:
        from brain_tf.config import load_toml

        overrides = load_toml(args.config)
    flags = {"data": {"spec": args.spec, "root": args.root, "splits_csv": args.splits,
                      "seed": args.seed, "shards": args.shards},
             "training": {key: getattr(args, key) for key in (
                 "epochs", "stop_at_epoch", "batch_size", "strategy", "precision",
                 "tensorboard", "init_weights")}}
    sections = SCHEMAS[task.family_of(args.preset)]
    for section, values in flags.items():
        given = {key: value for key, value in values.items() if value is not None}
        if given and section not in sections:
            names = ", ".join("--" + {"splits_csv": "splits"}.get(key, key).replace("_", "-")
                              for key in given)
            raise ConfigError(f"{names}: {task.name} preset {args.preset!r} has no "
                              f"[{section}] settings (it trains no network); leave "
                              f"{'it' if len(given) == 1 else 'them'} out")
        if given:
            overrides = deep_merge(overrides, {section: given})
    config = task.config(args.preset, overrides)
    run = task.train(config, run_dir=args.run_dir, force=args.force)
    from brain_tf.distribute import is_chief

    if is_chief():
        print(f"run folder: {run.path}")
    else:  # a multi-worker run's other workers train in a folder removed at exit
        print("this worker's folder was temporary: the chief writes the run folder")
    return run


#: Commands that never load TensorFlow.
LIGHT = ("manifest", "split", "synth", "tissue-volumes")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines hidden (they are written to the
    process's stderr before its log level applies); ``TF_CPP_MIN_LOG_LEVEL=0`` shows them."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` (the command being run) the other commands get their
    names and help lines but not their arguments (which may import heavy modules)."""
    from brain_tf.tasks import TASKS

    parser = argparse.ArgumentParser(
        prog="brain-tf", description="Deep learning on brain MRI (TensorFlow/Keras 3).")
    parser.add_argument("--version", action="version", version=f"brain-tf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, task in TASKS.items():
        tp = sub.add_parser(name, help=task.description, description=task.description)
        if only in (None, name):
            _task_arguments(tp, task)
    for name, (fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only in (None, name):
            getattr(fn, "add_arguments", lambda _p: None)(p)
            p.set_defaults(_fn=fn)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # TensorFlow's C++ log lines hidden unless asked for (TF_CPP_MIN_LOG_LEVEL=0);
    # errors still come back as Python exceptions
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only=first or "").parse_args(argv)
    if first not in LIGHT:
        _import_tensorflow_quietly()
    try:
        result = args._fn(args)
    except BrainTFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
