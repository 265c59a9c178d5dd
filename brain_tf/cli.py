"""The ``brain-tf`` command line.

    brain-tf synth LAYOUT --out DIR          write a synthetic twin of a dataset layout
    brain-tf manifest --spec X.toml          list a dataset's samples (and check it)
    brain-tf split --spec X.toml --out F     patient-level train/val/test split to CSV
    brain-tf demo                            the quick-start job on synthetic data

Errors a user can cause print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from brain_tf.errors import BrainTFError

COMMANDS = {}


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

    manifest = load_spec(args.spec, root=args.root).manifest()
    if args.out:
        from brain_tf.io.atomic import atomic_path

        with atomic_path(args.out) as tmp:
            manifest.to_csv(tmp, index=False)
        print(f"wrote {len(manifest)} samples of {manifest['subject'].nunique()} subjects "
              f"to {args.out}")
    else:
        print(manifest.to_string(max_rows=40, max_colwidth=60))


_manifest.add_arguments = lambda p: (_spec_args(p), p.add_argument("--out", help="CSV to write"))


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brain-tf", description="Deep learning on brain MRI (TensorFlow/Keras 3).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
