"""A BIDS dataset as a data source: its images found by entities, its metadata from
``participants.tsv`` (and ``sessions.tsv``), masks and label maps from a derivatives folder.

The index is a small parser of BIDS file names (``sub-01_ses-2_acq-fast_T1w.nii.gz``:
entity key-value pairs, then the suffix) over ``sub-*/[ses-*/]DATATYPE/``; it reads
no image and no sidecar. ``bench/bids_index.py`` compares it with pybids on a
500-participant layout (the README gives the figures and why this parser is used).

A data spec selects the images with a ``[bids]`` table instead of ``[files]``::

    name = "my-study"
    format = "bids"
    root = "/data/my-study"
    [bids]
    images = { T1w = "T1w", T2w = "T2w" }   # channel name = suffix; the first leads
    datatype = "anat"                        # the default
    filters = { ses = ["01", "02"], acq = "mprage" }   # any entity: a value or a list
    participants = ["01", "07"]              # the default: every participant
    derivatives = "derivatives/phantoms"     # where mask and label files are
    mask = "desc-brain_mask"                 # file = image entities + "_" + this
    label = "dseg"
    [labels]
    background = 0
    csf = 1

``--spec bids --root DIR`` is that spec with T1w images alone. Manifest rows are
images: ``sample`` is the file name's entities (``sub-01_ses-2``), ``subject`` the
participant label (so splits keep every session of a participant together),
``session`` and every other entity a column, and the participants.tsv columns
(``age``, ``sex`` and the rest; a sessions.tsv column wins over a participants.tsv
column of the same name).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from brain_tf.data.spec import DataSpec
from brain_tf.errors import SpecError

EXTENSIONS = (".nii.gz", ".nii")
#: Entity keys in BIDS order; manifest columns use the long names of sub and ses.
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "mod", "echo",
                "flip", "inv", "mt", "part")
COLUMN = {"sub": "subject", "ses": "session"}
_BIDS_KEYS = {"images", "datatype", "filters", "participants", "derivatives", "mask", "label"}
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


@dataclass(frozen=True)
class BidsFile:
    """One indexed file: its path, entities (key -> label), suffix and datatype."""

    path: Path
    entities: tuple[tuple[str, str], ...]
    suffix: str
    datatype: str

    @property
    def entity(self) -> dict[str, str]:
        return dict(self.entities)

    def stem(self, skip=()) -> str:
        """The entities as a file-name prefix (``sub-01_ses-2``), leaving out ``skip``."""
        return "_".join(f"{k}-{v}" for k, v in self.entities if k not in skip)


def parse_name(name: str) -> tuple[tuple[tuple[str, str], ...], str] | None:
    """``(entities, suffix)`` of a BIDS image file name, or None when it is not one."""
    ext = next((e for e in EXTENSIONS if name.endswith(e)), None)
    if ext is None:
        return None
    parts = name[: -len(ext)].split("_")
    pairs = []
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not key.isalnum() or not value.isalnum():
            return None
        pairs.append((key, value))
    if not pairs or pairs[0][0] != "sub" or not parts[-1].isalnum():
        return None
    return tuple(pairs), parts[-1]


def require_bids(root: Path) -> Path:
    """``root`` if it is a BIDS dataset folder, else a one-line SpecError naming it."""
    root = Path(root)
    if not root.is_dir():
        raise SpecError(f"{root}: no such folder; give a BIDS dataset folder")
    if not (root / "dataset_description.json").is_file():
        raise SpecError(f"{root}: not a BIDS dataset (no dataset_description.json); give the "
                        "dataset's top folder, the one holding sub-*/ and participants.tsv")
    return root


def index_files(root: Path, datatype: str = "anat", participants=None) -> list[BidsFile]:
    """Every image file of ``datatype`` under ``root/sub-*/[ses-*/]`` whose name parses,
    sorted; ``participants`` (labels without ``sub-``) limits the folders read."""
    files = []
    wanted = None if participants is None else {f"sub-{p}" for p in participants}
    with os.scandir(root) as top:
        subjects = sorted(e.name for e in top if e.name.startswith("sub-") and e.is_dir())
    for sub in subjects:
        if wanted is not None and sub not in wanted:
            continue
        folders = [root / sub / datatype]
        with os.scandir(root / sub) as entries:
            folders += [root / sub / e.name / datatype for e in entries
                        if e.name.startswith("ses-") and e.is_dir()]
        for folder in folders:
            if not folder.is_dir():
                continue
            with os.scandir(folder) as entries:
                for e in entries:
                    parsed = parse_name(e.name)
                    if parsed is not None and parsed[0][0] == ("sub", sub[4:]):
                        files.append(BidsFile(Path(e.path), parsed[0], parsed[1], datatype))
    return sorted(files, key=lambda f: str(f.path))


def participant_labels(root: Path) -> list[str]:
    """The labels of the ``sub-*`` folders of a dataset (without ``sub-``)."""
    with os.scandir(root) as top:
        return sorted(e.name[4:] for e in top if e.name.startswith("sub-") and e.is_dir())


def check_participants(root: Path, labels) -> list[str]:
    """``labels`` without a ``sub-`` prefix, each a participant of the dataset, else a
    SpecError naming the missing label and the dataset."""
    have = participant_labels(root)
    wanted = [str(p)[4:] if str(p).startswith("sub-") else str(p) for p in labels]
    for label in wanted:
        if label not in have:
            shown = ", ".join(have[:10]) + (" ..." if len(have) > 10 else "")
            raise SpecError(f"{root}: participant label {label!r} not found (no sub-{label}/; "
                            f"the dataset has {shown or 'no participants'})")
    return wanted


def _read_tsv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                           dtype=str)
    except Exception as exc:
        raise SpecError(f"{path}: cannot read TSV ({type(exc).__name__}: {exc})") from None


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """Columns as numbers where every value is one; ``sex`` as M/F where it says so."""
    for column in table.columns:
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.notna().sum() == table[column].notna().sum():
            table[column] = numbers
    if "sex" in table:
        table["sex"] = table["sex"].map(
            lambda v: _SEX.get(str(v).strip().lower(), v) if pd.notna(v) else v)
    return table


def _id_table(path: Path, id_column: str, prefix: str, name: str) -> pd.DataFrame:
    """A BIDS TSV table whose ``id_column`` (``sub-01``) becomes ``name`` (``01``) in
    front of its other columns, typed."""
    table = _read_tsv(path)
    if id_column not in table:
        raise SpecError(f"{path}: no {id_column} column (has {list(table.columns)})")
    ids = table.pop(id_column).str.replace(f"^{prefix}", "", regex=True)
    table = _typed(table)
    table.insert(0, name, ids)
    return table


def participants_table(root: Path) -> pd.DataFrame:
    """participants.tsv with ``subject`` (the label without ``sub-``); empty when absent."""
    path = root / "participants.tsv"
    if not path.is_file():
        return pd.DataFrame({"subject": pd.Series(dtype=str)})
    return _id_table(path, "participant_id", "sub-", "subject")


def sessions_table(root: Path, subject: str) -> pd.DataFrame | None:
    """``sub-X/sub-X_sessions.tsv`` with ``session`` (label without ``ses-``), or None."""
    path = root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    return _id_table(path, "session_id", "ses-", "session") if path.is_file() else None


def _matches(file: BidsFile, filters: dict) -> bool:
    entity = file.entity
    for key, want in filters.items():
        values = [str(v) for v in (want if isinstance(want, list) else [want])]
        if entity.get(key) not in values:
            return False
    return True


def derivative_path(root: Path, folder: str, file: BidsFile, tail: str) -> Path:
    """The derivative of ``file`` named ``tail`` (``desc-brain_mask``, ``dseg``): the same
    folders under ``root/folder``, the image's entities, then ``_tail.nii.gz``."""
    rel = file.path.parent.relative_to(root)
    return root / folder / rel / f"{file.stem()}_{tail}.nii.gz"


@dataclass
class BidsSpec(DataSpec):
    """A data spec whose samples are the images of a BIDS dataset (see the module)."""

    bids: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None, root=None) -> "BidsSpec":
        where = str(path) if path else "data spec"
        settings = dict(data.get("bids", {}))
        unknown = set(settings) - _BIDS_KEYS
        if unknown:
            raise SpecError(f"{where}: unknown keys in [bids]: {sorted(unknown)} "
                            f"(known: {sorted(_BIDS_KEYS)})")
        if "files" in data:
            raise SpecError(f"{where}: a BIDS spec selects images with [bids], not [files]")
        images = settings.get("images", {"T1w": "T1w"})
        if isinstance(images, str):
            images = {images: images}
        settings["images"] = dict(images)
        filters = settings.get("filters", {})
        if not isinstance(filters, dict):
            raise SpecError(f"{where}: [bids] filters must be a table, e.g. "
                            "{ ses = \"01\", acq = [\"a\", \"b\"] }")
        plain = {k: v for k, v in data.items() if k not in ("format", "bids")}
        sub = "sub-{subject}/anat/sub-{subject}"
        plain["files"] = {"images": {n: f"{sub}_{s}.nii.gz" for n, s in images.items()}}
        spec = super().from_dict(plain, path=path, root=root)
        spec.bids = settings
        spec.raw = copy.deepcopy(data)
        return spec

    def files(self) -> list[BidsFile]:
        """The indexed image files of the first (leading) image suffix, filters applied."""
        root = require_bids(self.root)
        participants = self.bids.get("participants")
        if participants is not None:
            participants = check_participants(root, participants)
        lead = next(iter(self.bids["images"].values()))
        return [f for f in index_files(root, self.bids.get("datatype", "anat"), participants)
                if f.suffix == lead and _matches(f, self.bids.get("filters", {}))]

    def _scan(self, problems: list[str]) -> pd.DataFrame:
        root = require_bids(self.root)
        datatype = self.bids.get("datatype", "anat")
        participants = self.bids.get("participants")
        wanted = check_participants(root, participants if participants is not None
                                    else participant_labels(root))
        lead_name, lead = next(iter(self.bids["images"].items()))
        found = self.files()
        rows = []
        for file in found:
            row = {COLUMN.get(k, k): v for k, v in file.entities}
            row["sample"] = file.stem()
            row[f"image_{lead_name}"] = str(file.path)
            for name, suffix in list(self.bids["images"].items())[1:]:
                other = file.path.with_name(f"{file.stem()}_{suffix}{_ext(file.path)}")
                if not other.exists():
                    other = other.with_name(f"{file.stem()}_{suffix}.nii")
                row[f"image_{name}"] = str(other) if other.exists() else None
                if not other.exists() and name not in self.optional:
                    problems.append(f"{file.path}: no {suffix} image of the same entities")
            for key in ("mask", "label"):
                tail = self.bids.get(key)
                if tail:
                    folder = self.bids.get("derivatives", "derivatives")
                    target = derivative_path(root, folder, file, tail)
                    row[key] = str(target) if target.exists() else None
                    if not target.exists() and key not in self.optional:
                        problems.append(f"{file.path}: no {key} file {target}")
            rows.append(row)
        have = {r["subject"] for r in rows}
        for label in wanted if not self.bids.get("filters") else ():
            if label not in have:
                problems.append(f"{root / ('sub-' + label)}: no {lead} image in "
                                f"sub-{label}/[ses-*/]{datatype}/")
        if not rows:
            raise SpecError(f"{root}: no {lead} images under sub-*/[ses-*/]{datatype}/"
                            + (f" matching {self.bids.get('filters')}"
                               if self.bids.get("filters") else ""))
        return pd.DataFrame(rows)

    def _join_metadata(self, df: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
        table = participants_table(self.root)
        merged = df.merge(table, on="subject", how="left", suffixes=("", "_participants"))
        if "session" not in merged:
            return merged
        parts = [t.assign(subject=s) for s in merged["subject"].unique()
                 if (t := sessions_table(self.root, s)) is not None]
        if not parts:
            return merged
        sessions = pd.concat(parts, ignore_index=True)
        merged = merged.merge(sessions, on=["subject", "session"], how="left",
                              suffixes=("", "_session"))
        for column in [c for c in merged.columns if c.endswith("_session")]:
            base = column[: -len("_session")]
            merged[base] = merged[column].combine_first(merged[base])
            merged = merged.drop(columns=column)
        return merged


def _ext(path: Path) -> str:
    return next(e for e in EXTENSIONS if path.name.endswith(e))


def bids_spec(root=None, **settings) -> BidsSpec:
    """The spec of a BIDS dataset at ``root``: T1w images unless ``images`` says otherwise
    (keyword arguments are the keys of the ``[bids]`` table)."""
    return BidsSpec.from_dict({"name": "bids", "format": "bids", "bids": settings},
                              root=root if root is not None else ".")
