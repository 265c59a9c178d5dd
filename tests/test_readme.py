"""Every command block of README.md runs as documented, in order, on tiny synthetic data.

The blocks are read from the README (its fenced blocks), never copied here. A block with a
``brain-tf``, ``python`` or ``make`` command is a command block: one test each, named after
the heading it sits under (``tasks-1``), its commands run in order in a folder of its own
whose ``data/`` and ``models/`` are shared by all blocks, each as a subprocess with a
timeout, through the ``brain-tf`` of this Python environment (``.venv/bin/brain-tf``). A
block that parses as TOML is a configuration example: it must load with the config schema.

To finish in seconds with no data from outside, a command is changed only so:

- ``/data/NAME`` is a folder of this module's temporary directory; as a ``--root`` it holds
  the synthetic twin of the ``--spec`` layout;
- a missing ``data/NAME`` dataset is written by the README's own ``synth ... --out
  data/NAME`` command; ``synth`` writes few subjects on a coarse grid;
- ``train`` gets ``--config`` with a tiny model, patches and steps, and ``--epochs 1``;
- ``RUN_ID`` and ``RUN`` are the run that the block trained (else the last run of that task,
  else one trained here on the task's twin); a missing ``scan.nii.gz`` or scan folder of a
  glob given to ``predict`` is filled with scans like the model's training images (a small
  phantom for the shipped models); a missing ``--card`` file is written; a missing
  ``predict --config`` file is the README's TOML block that starts ``# NAME``;
- a ``TF_CONFIG`` cluster runs as one local worker per listed worker, on free localhost
  ports (the README's addresses are never contacted), each non-chief worker in a folder of
  its own (another machine) that must hold nothing of the run afterwards;
- ``make demo`` and ``make test`` are not run (CI runs ``make test``; the demo trains for 20
  epochs): ``make -n TARGET`` checks that the Makefile has the target.

Each command must exit 0 with no traceback, and leave what it names with ``--out`` (and a
``train`` a finished run folder). Each prints its wall and CPU seconds (seen with ``-s``).
"""

from __future__ import annotations

import glob
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import free_ports

from brain_tf.config import dumps_toml, load_toml, tomllib
from brain_tf.data import load_spec
from brain_tf.data.synthetic import LAYOUTS, synthesize
from brain_tf.schema import deep_merge
from brain_tf.tasks import TASKS
from brain_tf.tasks.base import SCHEMAS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TIMEOUT = 300  # seconds for one command: far more than any of them needs
BRAIN_TF = Path(sys.executable).parent / "brain-tf"

# ------------------------------------------------------------------ the tiny settings
#: synth: the README's --subjects, --shape and --spacing give way to these
SYNTH = {"camcan": ["--subjects", "12", "--spacing", "4"],
         "adni_hippocampus": ["--subjects", "6", "--spacing", "4"],
         "ixi": ["--subjects", "6", "--spacing", "5"],
         "msd_brats": ["--subjects", "5", "--shape", "32", "32", "24"],
         "phantoms": ["--subjects", "5", "--spacing", "6"],
         "kaggle_lgg": ["--subjects", "6", "--shape", "32", "32", "4"],
         "tcga_gbm_slices": ["--subjects", "8", "--shape", "32", "32"],
         "bids": ["--subjects", "2", "--shape", "40", "48", "44"]}

#: train: merged over the command's --config, by family (only the sections it has)
TINY = {
    "sampler": {"patch_size": [16, 16, 16], "patches_per_subject": 1, "max_tries": 5},
    "training": {"steps_per_epoch": 1, "batch_size": 2, "val_patches": 1, "verbose": 2},
    "inference": {"patch_size": [16, 16, 16], "overlap": 0.0},
}
TINY_MODEL = {"tumor-segmentation": {"depth": 2, "base_filters": 4},
              "tissue-segmentation": {"depth": 2, "base_filters": 4},
              "brain-extraction": {"filters": [4, 8]}}
#: presets that resample to a fine grid of the scan's own field of view
TINY_PREPROCESS = {"synth": {"spacing": [6.0, 6.0, 6.0]}}


# ------------------------------------------------------------------ reading the README
@dataclass
class Block:
    heading: str
    index: int  # among the blocks under this heading, from 1
    text: str

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-") + f"-{self.index}"


def read_blocks(path: Path = README) -> list[Block]:
    blocks, heading, counts, lines, inside = [], "top", {}, [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if inside:
                counts[heading] = counts.get(heading, 0) + 1
                blocks.append(Block(heading, counts[heading], "\n".join(lines)))
            inside, lines = not inside, []
        elif inside:
            lines.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return blocks


def statements(text: str) -> list[list[str]]:
    """A block's shell statements as word lists: comments dropped, ``\\`` continuations
    and line breaks inside quotes (TF_CONFIG's JSON) joined."""
    out, pending = [], ""
    for line in text.splitlines():
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the statement goes on
            pending += "\n"
            continue
        if words:
            out.append(words)
        pending = ""
    assert not pending.strip(), f"unfinished statement: {pending!r}"
    return out


def program(words: list[str]) -> str:
    return Path(words[0]).name if words else ""


def is_commands(block: Block) -> bool:
    return any(program(w) in ("brain-tf", "python", "python3", "make")
               for w in statements(block.text))


def toml_example(block: Block) -> dict | None:
    try:
        data = tomllib.loads(block.text)
    except tomllib.TOMLDecodeError:
        return None
    return data or None


BLOCKS = read_blocks()
COMMAND_BLOCKS = [b for b in BLOCKS if is_commands(b)]
TOML_BLOCKS = [b for b in BLOCKS if not is_commands(b) and toml_example(b)]


def named_example(name: str) -> str:
    """The TOML block of the README that starts ``# NAME``: the file a command names."""
    found = [b.text for b in TOML_BLOCKS if b.text.startswith(f"# {name}")]
    assert len(found) == 1, f"README: {len(found)} TOML blocks start '# {name}'; a command " \
        "names that file: show it in one"
    return found[0]


# ------------------------------------------------------------------ the workspace


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args[:-1] else None


def _positional(args: list[str], valued: tuple[str, ...], many: tuple[str, ...] = ()
                ) -> list[str]:
    """``args`` less every option, the value of each ``valued`` one and the values of each
    of ``many`` (up to the next option)."""
    out, skip, taking = [], 0, True
    for a in args:
        if a.startswith("-"):
            skip, taking = int(a in valued), a not in many
        elif skip:
            skip -= 1
        elif taking:
            out.append(a)
    return out


def _without(args: list[str], names: tuple[str, ...]) -> list[str]:
    """``args`` less the options ``names`` and their values (up to the next option)."""
    out, skipping = [], False
    for a in args:
        if a.startswith("--"):
            skipping = a in names
        if not skipping:
            out.append(a)
    return out


class Workspace:
    """What the blocks share: data, runs, twins; and how a README command is run here."""

    def __init__(self, root: Path):
        assert BRAIN_TF.exists(), f"{BRAIN_TF}: install brain_tf in this environment first"
        self.root = root
        for name in ("data", "models", "ext", "twins", "blocks"):
            (root / name).mkdir()
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg",
                    "TMPDIR": str(root)}
        self.runs: dict[str, Path] = {}  # task -> its last finished run

    # ---------------------------------------------------------------- running
    def run(self, argv: list[str], cwd: Path, env: dict | None = None, what: str = ""
            ) -> subprocess.CompletedProcess:
        start, cpu = time.perf_counter(), _children_cpu()
        out = subprocess.run(argv, cwd=cwd, env={**self.env, **(env or {})}, text=True,
                             capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        print(f"{time.perf_counter() - start:6.1f} s, {_children_cpu() - cpu:6.1f} s CPU: "
              f"{shlex.join(map(str, argv[1:]))}")  # shown with a failure, or with -s
        self.check(out, argv, what)
        return out

    @staticmethod
    def check(out, argv, what) -> None:
        said = f"{what}\n  ran: {shlex.join(map(str, argv))}\n  exit {out.returncode}; " \
               f"stderr:\n{out.stderr[-3000:]}\n  stdout:\n{out.stdout[-1500:]}"
        assert out.returncode == 0, said
        assert "Traceback" not in out.stderr, said

    # ---------------------------------------------------------------- data
    def twin(self, layout: str) -> Path:
        """A synthetic dataset of ``layout`` (written once, in this process)."""
        folder = self.root / "twins" / layout
        if not folder.exists():
            args = SYNTH.get(layout, ["--subjects", "4"])
            grid = {"spacing": float(_option(args, "--spacing"))} if "--spacing" in args else \
                {"shape": [int(a) for a in args[args.index("--shape") + 1:]]} \
                if "--shape" in args else {}
            synthesize(layout, folder, subjects=int(_option(args, "--subjects")), **grid)
        return folder

    def readme_dataset(self, name: str) -> None:
        """Write ``data/NAME`` with the README's own ``synth ... --out data/NAME``."""
        for block in COMMAND_BLOCKS:
            for words in statements(block.text):
                args = words[1:]
                if program(words) == "brain-tf" and args[:1] == ["synth"] \
                        and _option(args, "--out") == f"data/{name}":
                    self.run([str(BRAIN_TF)] + self.synth_args(args), self.root,
                             what=f"data/{name} for a later block ({block.id})")
                    return

    @staticmethod
    def synth_args(args: list[str]) -> list[str]:
        if args[1] not in SYNTH:  # a layout new to this file: its own grid, few subjects
            return _without(args, ("--subjects",)) + ["--subjects", "4"]
        return _without(args, ("--subjects", "--shape", "--spacing")) + SYNTH[args[1]]

    # ---------------------------------------------------------------- runs and scans
    def run_of(self, task: str, block_runs: dict) -> Path:
        if task in block_runs:
            return block_runs[task]
        if task not in self.runs:  # no block trained one yet: train one on the twin
            layout = TASKS[task].config("default").data.spec
            argv = [str(BRAIN_TF), task, "train", "--preset", "small", "--spec",
                    str(self.twin(layout) / "spec.toml")]
            self.train(argv, self.root, task, what=f"a {task} run for a later block")
        return self.runs[task]

    def train(self, argv: list[str], cwd: Path, task: str, env=None, what="",
              tiny: bool = True) -> Path:
        """Run a train command (made tiny unless already), and return its finished run."""
        argv = self.tiny(argv, cwd, task) if tiny else argv
        run_dir = _option(argv, "--run-dir")
        before = set((self.root / "models" / task).glob("*"))
        self.run(argv, cwd, env, what)
        if run_dir:
            run = cwd / run_dir
        else:
            new = set((self.root / "models" / task).glob("*")) - before
            assert len(new) == 1, f"{what}: train wrote {len(new)} new run folders: {new}"
            run = new.pop()
        assert (run / "complete.json").exists(), f"{what}: {run} is not a finished run"
        self.runs[task] = run
        return run

    @staticmethod
    def tiny(argv: list[str], cwd: Path, task: str) -> list[str]:
        """``argv`` with the tiny settings merged over its ``--config``, and one epoch."""
        preset = _option(argv, "--preset") or "default"
        family = SCHEMAS[TASKS[task].family_of(preset)]
        tiny = {k: v for k, v in TINY.items() if k in family}
        if task in TINY_MODEL and "model" in family:
            tiny["model"] = TINY_MODEL[task]
        if preset in TINY_PREPROCESS and "preprocess" in family:
            tiny["preprocess"] = TINY_PREPROCESS[preset]
        if tiny:
            given = _option(argv, "--config")
            config = cwd / "tiny.toml"
            config.write_text(dumps_toml(deep_merge(load_toml(cwd / given) if given else {},
                                                    tiny)))
            argv = argv + ["--config", str(config)]
        return argv + (["--epochs", "1"] if "training" in family else [])

    def scan_like(self, model: str, path: Path, cwd: Path) -> None:
        """Write a scan at ``path`` that ``model`` takes: the first image of its training
        data (channels stacked in a 4D file), or for a shipped model a small phantom T1."""
        import nibabel as nib

        from brain_tf.data import load_spec

        path.parent.mkdir(parents=True, exist_ok=True)
        if model.startswith("pretrained:"):
            t1 = sorted((self.twin("phantoms") / "images").glob("*_T1w.nii.gz"))[0]
            image = nib.load(t1)
            centre = [n // 2 for n in image.shape]  # 96 mm around the centre: one tile
            image.slicer[tuple(slice(c - 8, c + 8) for c in centre)].to_filename(path)
            return
        config = load_toml(cwd / model / "config.toml")["data"]
        spec = self.root / config["spec"]  # relative to the blocks' folders: data/...
        spec = load_spec(spec if spec.exists() else config["spec"], root=config.get("root"))
        columns = [f"image_{n}" for n in config.get("images") or spec.images]
        row = spec.manifest().iloc[0]
        images = [nib.load(row[c]) for c in columns]
        if len(images) == 1:
            shutil.copy(row[columns[0]], path)
        else:
            stacked = np.stack([np.asarray(i.dataobj, np.float32) for i in images], axis=-1)
            nib.Nifti1Image(stacked, images[0].affine).to_filename(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("readme"))


# ------------------------------------------------------------------ one block
class BlockRun:
    """One command block: its folder, its ``export``ed variables, the runs it trained."""

    def __init__(self, ws: Workspace, block: Block):
        self.ws, self.block = ws, block
        self.cwd = ws.root / "blocks" / block.id
        self.cwd.mkdir()
        for name in ("data", "models"):
            (self.cwd / name).symlink_to(ws.root / name)
        self.env: dict[str, str] = {}
        self.runs: dict[str, Path] = {}
        self.task: str | None = None  # the task of the last task command

    def statement(self, words: list[str]) -> None:
        what = f"README block {self.block.id}: {shlex.join(words)}"
        if words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                self.env[name] = value
        elif program(words) == "make":
            # not run: CI runs `make test`, and `make demo` trains for 20 epochs
            for target in words[1:]:
                self.ws.run(["make", "-n", target], REPO, what=what)
        elif program(words) in ("python", "python3"):
            script = words[1]
            if not (self.cwd / script).exists() and (REPO / script).exists():
                script = str(REPO / script)
            task = Path(script).stem.removeprefix("train_").replace("_", "-")
            if Path(script).stem.startswith("train_") and task in TASKS:
                self.ws.train([sys.executable, script] + words[2:], self.cwd, task, self.env,
                              what)
            else:
                self.ws.run([sys.executable, script] + words[2:], self.cwd, self.env, what)
        elif program(words) == "brain-tf":
            self.brain_tf(words[1:], what)
        else:
            pytest.fail(f"{what}: no rule to run {words[0]!r} here")

    def brain_tf(self, args: list[str], what: str) -> None:
        command = args[0]
        task = command if command in TASKS else None
        action = args[1] if task else command
        self.task = task or self.task
        args = [self.path(a, args) for a in args]
        for a in args:  # a README dataset that a later section writes
            found = re.match(r"data/([^/]+)", a)
            if found and command != "synth" and not (self.ws.root / "data" / found[1]).exists():
                self.ws.readme_dataset(found[1])
        args = [self.placeholder(a, task or self.task) for a in args]
        if action == "predict":
            for a in _positional(args[2:], ("--model", "--out", "--support"), ("--mask",)):
                self.fill(a, _option(args, "--model"))
        args = [x for a in args for x in self.expand(a)]
        card = _option(args, "--card")
        if card and not (self.cwd / card).exists():
            (self.cwd / card).write_text("# a model card\n")
        given = _option(args, "--config")
        if action == "predict" and given and not (self.cwd / given).exists():
            (self.cwd / given).write_text(named_example(given))
        if command == "synth":
            args = self.ws.synth_args(args)
        if command == "bids" and "participant" in args and "--spacing" not in args:
            args += ["--spacing", "4"]  # the shipped models on a coarse grid: seconds
        argv = [str(BRAIN_TF)] + args
        if action == "train" and self.env.get("TF_CONFIG"):
            self.workers(argv, task, what)
        elif action == "train":
            self.runs[task] = self.ws.train(argv, self.cwd, task, self.env, what)
        else:
            self.ws.run(argv, self.cwd, self.env, what)
        out = _option(args, "--out")
        if out:
            written = self.cwd / out
            assert written.exists() and (written.is_file() or any(written.iterdir())), \
                f"{what}: wrote nothing to {out}"

    def path(self, arg: str, args: list[str]) -> str:
        """``/data/NAME/...`` in the workspace; a ``--root`` there holds the twin of the
        ``--spec`` layout (the same twin under every name)."""
        if not arg.startswith("/data/"):
            return arg
        local = self.ws.root / "ext" / arg.removeprefix("/data/")
        spec = _option(args, "--spec")
        if _option(args, "--root") == arg and spec in LAYOUTS and not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            local.symlink_to(self.ws.twin(spec))
        return str(local)

    def placeholder(self, arg: str, task: str | None) -> str:
        found = re.search(r"models/([^/]+)/RUN_ID", arg)
        if found:
            run = self.ws.run_of(found[1], self.runs)
            if run.parent == self.ws.root / "models" / found[1]:
                return arg.replace("RUN_ID", run.name)
            return arg.replace(found[0], str(run))
        if arg == "RUN":
            assert task, f"README block {self.block.id}: RUN with no task before it"
            return str(self.ws.run_of(task, self.runs))
        return arg

    def fill(self, arg: str, model: str) -> None:
        """A predict input that is missing, or a glob whose folder is missing: scans that
        the model takes."""
        if any(c in arg for c in "*?["):
            if not (self.cwd / arg.split("*")[0].rpartition("/")[0]).exists():
                for name in ("a", "b"):
                    self.ws.scan_like(model, self.cwd / arg.replace("*", name), self.cwd)
        elif arg.endswith((".nii", ".nii.gz")) and not (self.cwd / arg).exists():
            self.ws.scan_like(model, self.cwd / arg, self.cwd)

    def expand(self, arg: str) -> list[str]:
        """A glob expanded as the shell does (no match: the pattern itself)."""
        if not any(c in arg for c in "*?[") or arg.startswith("-"):
            return [arg]
        return sorted(glob.glob(arg, root_dir=self.cwd)) or [arg]

    def workers(self, argv: list[str], task: str, what: str) -> None:
        """The same command on each worker of TF_CONFIG's cluster, here on localhost: the
        chief (worker 0) in the block's folder, each other worker in a folder of its own
        (another machine: the same data) that must hold nothing of the run afterwards."""
        count = len(json.loads(self.env["TF_CONFIG"])["cluster"]["worker"])
        cluster = {"worker": [f"localhost:{p}" for p in free_ports(count)]}

        def env(index):
            return {**self.env, "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}})}

        argv = self.ws.tiny(argv, self.cwd, task)
        others = []
        try:
            for i in range(1, count):
                home = self.cwd / f"worker{i}"
                home.mkdir()
                (home / "data").symlink_to(self.ws.root / "data")
                others.append((home, subprocess.Popen(
                    argv, cwd=home, env={**self.ws.env, **env(i)}, text=True,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
            self.runs[task] = self.ws.train(argv, self.cwd, task, env(0), f"{what} (worker 0)",
                                           tiny=False)
            for i, (home, proc) in enumerate(others, 1):
                out, err = proc.communicate(timeout=TIMEOUT)
                self.ws.check(subprocess.CompletedProcess(argv, proc.returncode, out, err),
                              argv, f"{what} (worker {i})")
                left = [p.name for p in home.iterdir() if p.name != "data"]
                assert not left, f"{what}: worker {i} left {left} in its folder"
        finally:
            for _, proc in others:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()


# ------------------------------------------------------------------ the tests
def test_the_readme_has_command_and_config_blocks():
    assert len(COMMAND_BLOCKS) >= 10 and TOML_BLOCKS
    command = re.compile(r"^\s*(\$\s*)?\S*(brain-tf|python3?|make)\s", re.MULTILINE)
    for block in BLOCKS:  # a block that is neither must not hide a command
        if block not in COMMAND_BLOCKS and block not in TOML_BLOCKS:
            assert not command.search(block.text), f"README block {block.id} is not read " \
                "as commands: start each command line with the command"


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[b.id for b in TOML_BLOCKS])
def test_readme_config_example_loads(block, tmp_path):
    example = toml_example(block)
    if "format" in example or "files" in example:  # a data spec, not a run's config
        path = tmp_path / "spec.toml"
        path.write_text(block.text)
        spec = load_spec(path)
        assert spec.name == example["name"] and spec.labels == example["labels"]
        assert str(spec.root) == example["root"]
        if example.get("format") == "bids":
            assert list(spec.images) == list(example["bids"]["images"])
        return
    loaded = 0
    for task in TASKS.values():
        for preset in task.presets:
            schema = SCHEMAS[task.family_of(preset)]
            if not set(example) <= set(schema):
                continue
            config = task.config(preset, example)
            for section, values in example.items():
                table = getattr(config, section)
                for key, value in values.items():
                    got = table[key] if isinstance(table, dict) else getattr(table, key)
                    assert got == value, (task.name, preset, section, key)
            loaded += 1
    assert loaded, f"README block {block.id}: no task preset has its sections {list(example)}"


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=[b.id for b in COMMAND_BLOCKS])
def test_readme_commands_run(block, workspace):
    run = BlockRun(workspace, block)
    for words in statements(block.text):
        run.statement(words)
