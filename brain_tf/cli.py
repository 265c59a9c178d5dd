"""The ``brain-tf`` command line.

    brain-tf TASK train --spec X.toml        train a task (see brain-tf --help for the tasks)
    brain-tf TASK evaluate --run RUN         test-split metrics of a run
    brain-tf TASK predict --model RUN IN...  predict new files with a run or a SavedModel
    brain-tf synth LAYOUT --out DIR          write a synthetic twin of a dataset layout
    brain-tf manifest --spec X.toml          list a dataset's samples (and check it)
    brain-tf split --spec X.toml --out F     patient-level train/val/test split to CSV
    brain-tf shard --spec X.toml --out DIR   preprocessed subjects to TFRecord shards
    brain-tf demo                            the quick-start job on synthetic data

Errors a user can cause print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from brain_tf.errors import BrainTFError

COMMANDS = {}
#: --strategy values (brain_tf.distribute.STRATEGIES, without importing TensorFlow)
STRATEGY_CHOICES = ("default", "mirrored", "multiworker")


def command(name, help_text):
    """Register ``fn(args)`` as sub-command ``name``; ``fn.add_arguments(parser)`` adds flags."""
    def wrap(fn):
        COMMANDS[name] = (fn, help_text)
        return fn
    return wrap


def _spec_args(p):
    p.add_argument("--spec", required=True, help="data spec TOML (see data_specs/)")
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
        from brain_tf.io.atomic import atomic_path

        with atomic_path(args.out) as tmp:
            manifest.to_csv(tmp, index=False)
        print(f"wrote {len(manifest)} samples of {manifest['subject'].nunique()} subjects "
              f"to {args.out}")
    else:
        print(manifest.to_string(max_rows=40, max_colwidth=60))


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
    fractions = dict(zip(("train", "val", "test"), args.fractions))
    out = split_subjects(manifest, fractions, seed=args.seed, stratify=args.stratify)
    save_splits(out, args.out)
    counts = out.groupby("split")["subject"].nunique().to_dict()
    print(f"wrote {args.out}: subjects per split {counts}")


def _split_args(p):
    _spec_args(p)
    p.add_argument("--out", required=True, help="CSV to write (sample, subject, split)")
    p.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15),
                   metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--subjects", type=int, default=12, help="number of subjects (patients)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs="+", help="image size (3 numbers, 2 for slices)")
    p.add_argument("--spacing", type=float, nargs="+", help="voxel size in mm")


_synth.add_arguments = _synth_args


@command("shard", "write a dataset's preprocessed subjects to compressed TFRecord shards")
def _shard(args):
    from brain_tf.data.shards import write_shards

    preprocess, where = _preprocess_config(args)
    index = write_shards(args.spec, args.out, preprocess, root=args.root,
                         subjects_per_shard=args.subjects_per_shard, source=where)
    print(f"wrote {index['num_subjects']} subjects in {len(index['shards'])} shards to "
          f"{args.out} (preprocessing from {where})")


def _preprocess_config(args) -> tuple[dict, str]:
    """The ``[preprocess]`` table of --config (a TOML or run config) or of a task preset."""
    from brain_tf.errors import ConfigError

    if args.config:
        from brain_tf.config import load_toml

        config = load_toml(args.config)
        if "preprocess" not in config:
            raise ConfigError(f"{args.config}: no [preprocess] table; pass a task config "
                              "(e.g. a run's config.toml) or use --task/--preset")
        return config["preprocess"], args.config
    if not args.task:
        raise ConfigError("shard needs the preprocessing to apply: --task TASK [--preset P] "
                          "or --config FILE")
    from brain_tf.tasks import TASKS

    if args.task not in TASKS:
        raise ConfigError(f"unknown task {args.task!r}; choose from {', '.join(sorted(TASKS))}")
    return TASKS[args.task].config(args.preset)["preprocess"], f"{args.task} {args.preset}"


def _shard_args(p):
    _spec_args(p)
    p.add_argument("--out", required=True, help="folder for the shards and index.json")
    p.add_argument("--task", help="take the preprocessing from this task's preset")
    p.add_argument("--preset", default="default", help="the task preset (default: default)")
    p.add_argument("--config", help="TOML with a [preprocess] table (e.g. a run's config.toml)")
    p.add_argument("--subjects-per-shard", type=int, default=8,
                   help="subjects per TFRecord file (small shards read faster by index)")


_shard.add_arguments = _shard_args


@command("tissue-volumes", "CSF/GM/WM volumes (ml, fractions) per subject from label maps")
def _tissue_volumes(args):
    from brain_tf.tasks import tissue_volumes

    return tissue_volumes.run(args)


def _tissue_volumes_args(p):
    from brain_tf.tasks import tissue_volumes

    tissue_volumes.add_arguments(p)


_tissue_volumes.add_arguments = _tissue_volumes_args


@command("demo", "the quick start: synthetic BraTS data, train the tumour U-Net, evaluate, predict")
def _demo(args):
    from brain_tf.demo import run_demo

    run_demo(out=args.out, runs=args.runs, subjects=args.subjects, epochs=args.epochs)


def _demo_args(p):
    p.add_argument("--out", default="demo_data", help="folder for synthetic data and predictions")
    p.add_argument("--runs", default="models", help="where run folders go")
    p.add_argument("--subjects", type=int, default=10)
    p.add_argument("--epochs", type=int, help="override the preset's epochs")


_demo.add_arguments = _demo_args


def _task_parsers(sub) -> None:
    from brain_tf.tasks import TASKS

    for name, task in TASKS.items():
        tp = sub.add_parser(name, help=task.description, description=task.description)
        actions = tp.add_subparsers(dest="action", metavar="ACTION", required=True)
        train = actions.add_parser("train", help="train on a dataset and save a run folder")
        train.add_argument("--spec", help="data spec TOML (default: the preset's)")
        train.add_argument("--root", help="dataset folder (overrides the spec's root)")
        train.add_argument("--preset", default="default", choices=sorted(task.presets),
                           help="configuration preset ('small' trains in minutes on a CPU)")
        train.add_argument("--epochs", type=int)
        train.add_argument("--stop-at-epoch", type=int, help="stop after this epoch")
        train.add_argument("--batch-size", type=int)
        train.add_argument("--splits", help="CSV of sample,subject,split to reuse a split")
        train.add_argument("--seed", type=int)
        train.add_argument("--run-dir", help="run folder (default models/TASK/TIMESTAMP)")
        train.add_argument("--config", help="TOML file of settings merged over the preset")
        train.add_argument("--shards", help="read subjects from this 'brain-tf shard' folder")
        train.add_argument("--strategy", choices=STRATEGY_CHOICES,
                           help="tf.distribute strategy: one device, the local GPUs "
                                "(mirrored) or several machines set up by TF_CONFIG "
                                "(multiworker)")
        train.add_argument("--mixed-precision", action="store_true", default=None,
                           help="mixed float16 compute (faster on GPUs with tensor cores)")
        train.set_defaults(_fn=_task_train(task))
        evaluate = actions.add_parser("evaluate", help="test-split metrics of a run")
        evaluate.add_argument("--run", required=True, help="run folder")
        evaluate.add_argument("--root", help="dataset folder (if it moved since training)")
        evaluate.set_defaults(_fn=lambda a, t=task: t.evaluate(a.run, root=a.root))
        predict = actions.add_parser("predict", help="predict files with a trained run")
        predict.add_argument("--model", required=True, help="run folder or saved_model/ folder")
        predict.add_argument("inputs", nargs="+", help="input files (NIfTI or images)")
        predict.add_argument("--out", required=True, help="output folder")
        predict.add_argument("--uncertainty", action="store_true",
                             help="MC-dropout uncertainty (models built with MC dropout)")
        if "masks" in inspect.signature(task.predict).parameters:
            predict.add_argument("--mask", nargs="+", dest="masks", metavar="MASK",
                                 help="brain mask NIfTI per input, in the same order")
        predict.set_defaults(_fn=_task_predict(task))


def _task_predict(task):
    def run(args):
        extra = {"masks": args.masks} if getattr(args, "masks", None) else {}
        return task.predict(args.model, args.inputs, args.out, uncertainty=args.uncertainty,
                            **extra)
    return run


def _task_train(task):
    def run(args):
        overrides: dict = {}
        if args.config:
            from brain_tf.config import load_toml

            overrides = load_toml(args.config)
        data = overrides.setdefault("data", {})
        training = overrides.setdefault("training", {})
        for key, value in (("spec", args.spec), ("root", args.root), ("splits_csv", args.splits),
                           ("seed", args.seed), ("shards", args.shards)):
            if value is not None:
                data[key] = value
        for key in ("epochs", "stop_at_epoch", "batch_size", "strategy", "mixed_precision"):
            if getattr(args, key) is not None:
                training[key] = getattr(args, key)
        config = task.config(args.preset, overrides)
        return task.train(config, run_dir=args.run_dir)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brain-tf", description="Deep learning on brain MRI (TensorFlow/Keras 3).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _task_parsers(sub)
    for name, (fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(fn, "add_arguments", lambda _p: None)(p)
        p.set_defaults(_fn=fn)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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
