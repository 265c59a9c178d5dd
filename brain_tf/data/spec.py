"""Data specs: a TOML file describing one dataset layout, turned into a manifest.

A spec names where each sample's files are (with field patterns, see
:mod:`brain_tf.data.patterns`), the label values, and a metadata table. Loading
it gives a manifest: a pandas DataFrame with one row per sample (a subject's
volume, or one 2D slice) and the columns

``sample``, ``subject`` (the patient id used for splits), ``image_<name>`` per
image entry, ``label`` and ``mask`` when declared, every pattern field, and
``age``/``sex`` plus extra metadata columns when a table is declared.

Validation collects every problem (missing files, duplicate ids, samples
without metadata) and reports them together.

Example (Cam-CAN coursework layout)::

    name = "camcan"
    kind = "volume"
    root = "/data/camcan"
    [files]
    images = { T1 = "images/sub-{subject}_T1w_unbiased.nii.gz" }
    label = "segs_refs/sub-{subject}_T1w_seg.nii.gz"
    mask = "masks/sub-{subject}_T1w_brain_mask.nii.gz"
    [labels]
    background = 0
    csf = 1
    gm = 2
    wm = 3
    [metadata]
    path = "meta/meta_data_all.csv"
    id = "subject_id"
    age = "age"
    sex = "gender_code"
    sex_codes = { 1 = "M", 2 = "F" }
"""

from __future__ import annotations

import copy
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from brain_tf.config import dumps_toml
from brain_tf.data.patterns import Pattern
from brain_tf.errors import SpecError
from brain_tf.io.atomic import write_text

KINDS = ("volume", "slice")
_TOP_KEYS = {"name", "description", "kind", "root", "files", "ids", "labels", "metadata",
             "defaults", "fields", "format"}
_FILE_KEYS = {"images", "label", "mask", "optional", "channels"}
_META_KEYS = {"path", "join", "id", "age", "sex", "sex_codes", "columns", "required", "sheet"}


def normalise_id(value) -> str:
    """Ids compare as text; numeric ids also ignore leading zeros (IXI002 == 2)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


def read_table(path: Path, sheet=None) -> pd.DataFrame:
    """Read a metadata table (CSV, TSV, XLS/XLSX or JSON) with pandas."""
    if not path.exists():
        raise SpecError(f"{path}: metadata table not found; check [metadata] path and root")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t")
        if suffix in (".xls", ".xlsx"):
            return pd.read_excel(path, sheet_name=sheet or 0)
        if suffix == ".json":
            return pd.read_json(path)
    except ImportError as exc:
        raise SpecError(
            f"{path}: reading {suffix} needs an extra package ({exc}); install it "
            "(e.g. pip install xlrd for .xls, openpyxl for .xlsx) or convert the table to CSV"
        ) from None
    except Exception as exc:
        raise SpecError(f"{path}: cannot read metadata table ({type(exc).__name__}: {exc})") from None
    raise SpecError(f"{path}: unknown metadata table type {suffix!r} (use .csv, .tsv, .xls(x), .json)")


@dataclass
class DataSpec:
    """A parsed data spec. Build with :func:`brain_tf.data.load_spec` or :meth:`from_dict`."""

    name: str
    kind: str
    root: Path
    images: dict[str, str]
    label: str | None = None
    mask: str | None = None
    optional: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    subject_template: str = "{subject}"
    sample_template: str | None = None
    labels: dict[str, int] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    description: str = ""
    path: Path | None = None
    raw: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- parsing
    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None, root=None) -> "DataSpec":
        where = str(path) if path else "data spec"
        problems = []
        unknown = set(data) - _TOP_KEYS
        if unknown:
            problems.append(f"unknown top-level keys {sorted(unknown)}")
        files = data.get("files", {})
        unknown = set(files) - _FILE_KEYS
        if unknown:
            problems.append(f"unknown keys in [files]: {sorted(unknown)}")
        images = files.get("images")
        if isinstance(images, str):
            images = {"image": images}
        if not images:
            problems.append("[files] needs images = { NAME = \"PATTERN\", ... }")
        kind = data.get("kind", "volume")
        if kind not in KINDS:
            problems.append(f"kind must be one of {KINDS}, not {kind!r}")
        meta = dict(data.get("metadata", {}))
        unknown = set(meta) - _META_KEYS
        if unknown:
            problems.append(f"unknown keys in [metadata]: {sorted(unknown)}")
        if meta and ("path" not in meta or "id" not in meta):
            problems.append("[metadata] needs path and id (the table's subject-id column)")
        labels = data.get("labels", {})
        for k, v in labels.items():
            if not isinstance(v, int):
                problems.append(f"[labels] {k} must be an integer value, not {v!r}")
        patterns = list((images or {}).values()) + [files.get(k) for k in ("label", "mask")]
        for text in filter(None, patterns):
            try:
                Pattern(text).regex()
            except (ValueError, Exception) as exc:  # re.error or ValueError
                problems.append(f"bad pattern {text!r}: {exc}")
        if problems:
            raise SpecError(f"{where}: invalid spec: " + "; ".join(problems))
        ids = data.get("ids", {})
        # a root written in the spec is relative to the spec's folder; one given here
        # (e.g. typed as --root) is relative to the current folder, like any path argument
        if root is not None:
            root = Path(os.path.expanduser(str(root))).resolve()
        else:
            root = Path(os.path.expanduser(str(data.get("root", "."))))
            if not root.is_absolute() and path is not None:
                root = (Path(path).parent / root).resolve()
        return cls(
            name=data.get("name", Path(path).stem if path else "dataset"),
            kind=kind,
            root=root,
            images=dict(images),
            label=files.get("label"),
            mask=files.get("mask"),
            optional=tuple(files.get("optional", ())),
            channels=tuple(files.get("channels", ())),
            subject_template=ids.get("subject", "{subject}"),
            sample_template=ids.get("sample"),
            labels=dict(labels),
            metadata=meta,
            defaults=dict(data.get("defaults", {})),
            description=data.get("description", ""),
            path=Path(path) if path else None,
            raw=copy.deepcopy(data),
        )

    # ---------------------------------------------------------------- accessors
    @property
    def image_columns(self) -> list[str]:
        return [f"image_{name}" for name in self.images]

    @property
    def channel_names(self) -> list[str]:
        """Channel names in order: the 4D file's channels, or one per image entry."""
        return list(self.channels) if self.channels else list(self.images)

    @property
    def label_values(self) -> list[int]:
        return list(self.labels.values())

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def to_toml(self) -> str:
        data = copy.deepcopy(self.raw)
        data["root"] = str(self.root)
        return dumps_toml(data)

    def save(self, path) -> Path:
        return write_text(path, self.to_toml())

    # ---------------------------------------------------------------- manifest
    def _where(self) -> str:
        return str(self.path) if self.path else f"spec {self.name!r}"

    def _scan(self, problems: list[str]) -> pd.DataFrame:
        first_name, first_text = next(iter(self.images.items()))
        first = Pattern(first_text)
        if not self.root.is_dir():
            raise SpecError(
                f"{self._where()}: root folder {self.root} does not exist; "
                "set root in the spec or pass --root DIR"
            )
        rows = []
        for p in sorted(self.root.glob(first.glob())):
            rel = p.relative_to(self.root).as_posix()
            fields = first.match(rel)
            if fields is None:
                continue
            row = dict(fields)
            try:
                row["subject"] = Pattern(self.subject_template).format(fields)
                row["sample"] = Pattern(self.sample_template or self.subject_template).format(fields)
            except KeyError as exc:
                raise SpecError(f"{self._where()}: [ids] uses field {exc} that "
                                f"pattern {first_text!r} does not define") from None
            row[f"image_{first_name}"] = str(p)
            entries = [(f"image_{n}", t, n) for n, t in list(self.images.items())[1:]]
            entries += [(k, getattr(self, k), k) for k in ("label", "mask") if getattr(self, k)]
            for column, text, name in entries:
                try:
                    other = self.root / Pattern(text).format(fields)
                except KeyError as exc:
                    raise SpecError(f"{self._where()}: pattern {text!r} uses field {exc} "
                                    f"that {first_text!r} does not define") from None
                if other.exists():
                    row[column] = str(other)
                else:
                    row[column] = None
                    if name not in self.optional:
                        problems.append(f"sample {row['sample']}: missing {name} file {other}")
            rows.append(row)
        if not rows:
            raise SpecError(
                f"{self._where()}: no files match {first_text!r} under {self.root}; "
                "check root (or --root) and the [files] patterns"
            )
        df = pd.DataFrame(rows)
        dup = df["sample"][df["sample"].duplicated()].unique()
        for s in dup:
            problems.append(f"sample id {s!r} appears more than once; make [ids] sample unique")
        return df

    def _join_metadata(self, df: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
        meta = self.metadata
        if not meta:
            return df
        table_path = Path(meta["path"])
        if not table_path.is_absolute():
            table_path = self.root / table_path
        table = read_table(table_path, meta.get("sheet"))
        wanted = [meta["id"]] + [meta[k] for k in ("age", "sex") if k in meta]
        wanted += list(meta.get("columns", ()))
        missing = [c for c in wanted if c not in table.columns]
        if missing:
            raise SpecError(f"{table_path}: columns {missing} not found (has {list(table.columns)}); "
                            "fix [metadata] in the spec")
        table = table[wanted].copy()
        table["_key"] = table[meta["id"]].map(normalise_id)
        for key in table["_key"][table["_key"].duplicated()].unique():
            problems.append(f"{table_path}: id {key!r} has more than one row")
        table = table.drop_duplicates("_key")
        rename = {}
        if "age" in meta:
            rename[meta["age"]] = "age"
        if "sex" in meta:
            rename[meta["sex"]] = "sex"
        table = table.rename(columns=rename)
        if "sex" in table and meta.get("sex_codes"):
            codes = {normalise_id(k): v for k, v in meta["sex_codes"].items()}
            table["sex"] = table["sex"].map(lambda v: codes.get(normalise_id(v), v)
                                            if pd.notna(v) else v)
        if "age" in table:
            table["age"] = pd.to_numeric(table["age"], errors="coerce")
        join = meta.get("join", "subject")
        if join not in df.columns:
            raise SpecError(f"{self._where()}: [metadata] join column {join!r} is not a manifest "
                            f"column ({sorted(df.columns)})")
        df["_key"] = df[join].map(normalise_id)
        drop_id = [meta["id"]] if meta["id"] not in ("age", "sex") else []
        merged = df.merge(table.drop(columns=drop_id), on="_key", how="left",
                          suffixes=("", "_meta"))
        if meta.get("required", True):
            has_any = merged[[c for c in table.columns if c not in ("_key", meta["id"])]]
            lacking = merged.loc[has_any.isna().all(axis=1), join].unique()
            for key in lacking:
                problems.append(f"{join} {key}: no row in metadata table {table_path}")
            for column in ("age", "sex"):
                if column in merged:
                    blank = merged.loc[merged[column].isna() & ~merged[join].isin(lacking), join]
                    for key in blank.unique():
                        problems.append(f"{join} {key}: empty {column} in {table_path}")
        return merged.drop(columns="_key")

    def manifest(self, validate: bool = True) -> pd.DataFrame:
        """One row per sample; raises :class:`SpecError` listing every problem."""
        problems: list[str] = []
        df = self._scan(problems)
        df = self._join_metadata(df, problems)
        if problems and validate:
            shown = problems[:50]
            more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
            raise SpecError(
                f"{self._where()}: {len(problems)} problem(s) in dataset under {self.root}:\n  "
                + "\n  ".join(shown) + more
            )
        front = ["sample", "subject"] + self.image_columns
        front += [c for c in ("label", "mask", "age", "sex") if c in df.columns]
        rest = [c for c in df.columns if c not in front]
        return df[front + rest].sort_values("sample", kind="stable").reset_index(drop=True)


def shipped_specs() -> dict[str, Path]:
    """The data specs shipped with brain_tf (package data in ``brain_tf/data_specs/``;
    the repository's top-level ``data_specs`` links there)."""
    folder = Path(str(importlib.resources.files("brain_tf") / "data_specs"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def spec_path(name: str | os.PathLike) -> Path:
    """The file of a data spec: an existing path, or the shipped spec of that name
    (``camcan``, ``camcan.toml`` or ``data_specs/camcan.toml``)."""
    path = Path(name)
    if path.exists():
        return path
    shipped = shipped_specs()
    key = path.stem if path.suffix == ".toml" else path.name
    if path.parent in (Path("."), Path("data_specs")) and key in shipped:
        return shipped[key]
    raise SpecError(f"{path}: data spec file not found (and no shipped spec has that name: "
                    f"{', '.join(shipped)})")
