"""The BIDS App: ``brain-tf bids BIDS_DIR OUTPUT_DIR participant|group``.

``participant`` runs brain extraction and tissue segmentation (the shipped models, or
the runs given with ``--models``; any other trained run given there adds its outputs)
over the chosen participants' images, one participant after another, each through the
cohort pipeline (:func:`brain_tf.inference.cohort.run_cohort`: the next scan is read
while one is predicted, outputs are written behind it). Images whose outputs exist are
skipped, so an interrupted run continues. A participant that fails (a corrupt image,
no image of the suffix) is reported in the log, its ``sub-X_volumes.tsv`` and the
report, and the others still run; the exit status is 1 when any failed.

``group`` gathers the per-participant tables into ``volumes.tsv`` (one row per image:
identifiers, age and sex, soft volumes, fractions, QC values, predictions, outlier
marks) and writes ``report.html`` (:mod:`brain_tf.bids.report`). Outputs follow BIDS
Derivatives (:mod:`brain_tf.bids.derivatives`).
"""

from __future__ import annotations

import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from brain_tf.bids import derivatives as deriv
from brain_tf.bids.predict import (
    load_model, load_scan, model_task, predict_extra, predict_tissue)
from brain_tf.bids.report import flag_outliers, overlay_png, write_report
from brain_tf.bids.source import (
    BidsFile, bids_spec, check_participants, parse_name, participant_labels, participants_table,
    require_bids, sessions_table)
from brain_tf.errors import BrainTFError, ConfigError
from brain_tf.inference.cohort import run_cohort

BRAIN, TISSUE = "pretrained:brain", "pretrained:tissue"
ID_COLUMNS = ["participant_id", "session_id", "source", "status", "error", "age", "sex"]


def _log(out: Path, message: str) -> None:
    """A line on stderr and in ``OUTPUT_DIR/logs/participant.log``."""
    print(message, file=sys.stderr, flush=True)
    log = out / "logs" / "participant.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    with open(log, "a") as f:
        f.write(f"{stamp} {message}\n")


def choose_models(models) -> tuple[str, str, list[str]]:
    """``(brain, tissue, extras)``: a brain-extraction or tissue run given replaces the
    shipped one; every other run is an extra."""
    brain, tissue, extras = BRAIN, TISSUE, []
    for name in models or ():
        task = model_task(name).name
        if task == "brain-extraction":
            brain = name
        elif task == "tissue-segmentation":
            tissue = name
        else:
            extras.append(name)
    return brain, tissue, extras


def _files(root: Path, label: str, suffix: str, sessions) -> list[BidsFile]:
    filters = {"ses": [str(s).removeprefix("ses-") for s in sessions]} if sessions else {}
    spec = bids_spec(root, images={suffix: suffix}, participants=[label], filters=filters)
    return spec.files()


def _metadata(root: Path, label: str) -> tuple[dict, dict]:
    """participants.tsv columns of ``label`` and its sessions.tsv rows by session."""
    table = participants_table(root)
    row = table[table["subject"] == label]
    base = {} if row.empty else row.iloc[0].drop("subject").to_dict()
    sessions = sessions_table(root, label)
    by_session = {} if sessions is None else {
        s: r.drop("session").to_dict() for s, r in sessions.set_index("session", drop=False
                                                                      ).iterrows()}
    return base, by_session


def _ids(file: BidsFile, root: Path, base: dict, by_session: dict) -> dict:
    ses = file.entity.get("ses")
    meta = {**base, **by_session.get(ses, {})}
    return {"participant_id": f"sub-{file.entity['sub']}",
            "session_id": f"ses-{ses}" if ses else None,
            "source": file.path.relative_to(root).as_posix(),
            "age": meta.get("age"), "sex": meta.get("sex")}


class Participants:
    """The participant level over one BIDS dataset (see the module)."""

    def __init__(self, bids_dir, out, models=(), suffix="T1w", sessions=None,
                 spacing=None, skip_existing=True):
        self.root = require_bids(Path(bids_dir))
        self.out = Path(out)
        if self.out.resolve() == self.root.resolve():
            raise ConfigError(f"{out}: the output folder must not be the BIDS dataset itself; "
                              "use e.g. BIDS_DIR/derivatives/brain_tf")
        self.suffix, self.sessions, self.spacing = suffix, sessions, spacing
        self.skip_existing = skip_existing
        self.brain_name, self.tissue_name, self.extras = choose_models(models)
        self.models = [self.brain_name, self.tissue_name] + self.extras
        self._loaded = None

    def loaded(self):
        if self._loaded is None:
            self._loaded = (load_model(self.brain_name, self.spacing),
                            load_model(self.tissue_name, self.spacing))
        return self._loaded

    def run(self, labels=None) -> int:
        """Every participant in ``labels`` (default: all); returns how many failed."""
        labels = check_participants(self.root, labels or participant_labels(self.root))
        deriv.write_dataset_description(self.out, self.root, self.models)
        failed, start = 0, time.perf_counter()
        for label in labels:
            t0 = time.perf_counter()
            ok = self.participant(label)
            failed += not ok
            _log(self.out, f"sub-{label}: {'done' if ok else 'FAILED'} in "
                           f"{time.perf_counter() - t0:.1f} s")
        _log(self.out, f"{len(labels) - failed} of {len(labels)} participants done in "
                       f"{time.perf_counter() - start:.1f} s" +
                       (f"; {failed} failed (see {self.out / 'logs'})" if failed else ""))
        return failed

    def participant(self, label: str) -> bool:
        base, by_session = _metadata(self.root, label)
        rows, error = [], None
        files: list[BidsFile] = []
        try:
            files = _files(self.root, label, self.suffix, self.sessions)
            if not files:
                where = self.root / f"sub-{label}"
                raise ConfigError(f"{where}: no {self.suffix} image under {where}/[ses-*/]anat"
                                  + (f" for sessions {self.sessions}" if self.sessions else ""))
            self._tissue(files)
            self._extras(files)
        except BrainTFError as exc:
            error = str(exc)
        except Exception as exc:  # one participant's failure must not stop the others
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            _log(self.out, f"sub-{label}: failed: {error}")
        # the table lists the participant's images of this run and those of earlier runs
        # (other sessions) that have their outputs
        earlier = [f for f in _files(self.root, label, self.suffix, None) if f not in files
                   and deriv.output_paths(self.out, f, self.root)["sidecar"].exists()]
        for file in sorted(files + earlier, key=lambda f: str(f.path)):
            paths = deriv.output_paths(self.out, file, self.root)
            ids = _ids(file, self.root, base, by_session)
            if paths["sidecar"].exists():
                rows.append({**ids, "status": "ok", **deriv.read_row(paths["sidecar"])})
            else:
                rows.append({**ids, "status": "failed", "error": error or "not written"})
        if not files:
            rows.append({"participant_id": f"sub-{label}", "status": "failed", "error": error,
                         "age": base.get("age"), "sex": base.get("sex")})
        table = _ordered(pd.DataFrame(rows))
        deriv.write_tsv(table, self.out / f"sub-{label}" / f"sub-{label}_volumes.tsv")
        return error is None

    def _tissue(self, files: list[BidsFile]) -> None:
        def outputs(file):
            return list(deriv.output_paths(self.out, file, self.root).values())

        def predict(volume):
            brain, tissue = self.loaded()
            return predict_tissue(brain, tissue, volume)

        def write(file, result):
            paths = deriv.output_paths(self.out, file, self.root)
            source = file.path.relative_to(self.root).as_posix()
            deriv.write_image_outputs(paths, result, source, self.models)
            grid = result.volume.file_grid
            overlay_png(result.volume.array[..., 0], grid.from_file(result.labels),
                        grid.from_file(result.mask), paths["figure"],
                        spacing=result.volume.spacing)

        run_cohort(files, lambda f: load_scan(f.path), predict, write, outputs,
                   skip_existing=self.skip_existing, name=lambda f: str(f.path))

    def _extras(self, files: list[BidsFile]) -> None:
        """Each extra run on the images whose sidecar does not list it yet."""
        for name in self.extras:
            todo = [f for f in files
                    if name not in deriv.read_sidecar(self._paths(f)["sidecar"])["Models"]
                    or not self.skip_existing]
            if not todo:
                continue
            with tempfile.TemporaryDirectory(prefix="brain_tf_bids_") as work:
                found = predict_extra(name, [f.path for f in todo],
                                      [self._paths(f)["mask"] for f in todo],
                                      [self._paths(f)["dseg"] for f in todo], Path(work))
                for file in todo:
                    paths, result = self._paths(file), found[str(file.path)]
                    sidecar = deriv.read_sidecar(paths["sidecar"])
                    if "dseg" in result:
                        shutil.move(str(result["dseg"]), paths["dseg"].with_name(
                            f"{file.stem()}_desc-{_desc(name)}_dseg.nii.gz"))
                    sidecar["Measures"].update({k: v for k, v in result.items() if k != "dseg"})
                    sidecar["Models"] = sorted(set(sidecar["Models"]) | {name})
                    deriv.write_sidecar(paths["sidecar"], sidecar)

    def _paths(self, file: BidsFile) -> dict:
        return deriv.output_paths(self.out, file, self.root)


def _desc(name: str) -> str:
    """A BIDS desc label (alphanumeric) for a model name."""
    text = Path(str(name).removeprefix("pretrained:").rstrip("/")).name
    return "".join(ch for ch in text if ch.isalnum()) or "model"


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    front = [c for c in ID_COLUMNS if c in table.columns]
    volumes = [c for c in table.columns if c.endswith("_ml") or c.endswith("_fraction")]
    rest = [c for c in table.columns if c not in front + volumes]
    return table[front + volumes + rest]


def run_group(bids_dir, out) -> Path:
    """``volumes.tsv`` (+ .json) and ``report.html`` from the participant level's tables."""
    root, out = require_bids(Path(bids_dir)), Path(out)
    tables = sorted(out.glob("sub-*/sub-*_volumes.tsv"))
    if not tables:
        raise ConfigError(f"{out}: no sub-*/sub-*_volumes.tsv; run the participant level "
                          f"first (brain-tf bids {root} {out} participant)")
    table = pd.concat([deriv.read_tsv(t) for t in tables], ignore_index=True)
    table = flag_outliers(_ordered(table))
    deriv.write_tsv(table, out / "volumes.tsv")
    figures = {}
    for source in table["source"].dropna():
        parsed = parse_name(Path(source).name)
        if parsed is not None:
            file = BidsFile(root / source, parsed[0], parsed[1], "anat")
            figures[source] = deriv.output_paths(out, file, root)["figure"]
    name = root.resolve().name
    report = write_report(table, out, figures, title=f"brain_tf: {name}")
    failed = int((table["status"] != "ok").sum())
    print(f"wrote {out / 'volumes.tsv'} ({len(table)} images, {failed} failed, "
          f"{int(table['flagged'].sum())} flagged) and {report}")
    return report


def main(bids_dir, out, level, participant_label=None, session_label=None, models=(),
         suffix="T1w", spacing=None, skip_existing=True) -> int:
    """The command line's entry: 0 when every participant finished, 1 when some failed."""
    bids_dir, out = Path(bids_dir).resolve(), Path(out).resolve()  # as typed: from here
    if level == "group":
        run_group(bids_dir, out)
        return 0
    app = Participants(bids_dir, out, models, suffix, session_label, spacing, skip_existing)
    return 1 if app.run(participant_label) else 0

