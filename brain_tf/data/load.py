"""Loading a data spec of any format: a layout TOML (:class:`brain_tf.data.spec.DataSpec`)
or a BIDS dataset (:class:`brain_tf.bids.source.BidsSpec`). The one place that knows
both, so neither format's module imports the other."""

from __future__ import annotations

import os
from pathlib import Path

from brain_tf.config import load_toml
from brain_tf.data.spec import DataSpec, spec_path
from brain_tf.errors import SpecError

#: ``format = "bids"`` specs (and ``--spec bids``) read a BIDS dataset
BIDS = "bids"


def load_spec(path: str | os.PathLike, root: str | os.PathLike | None = None) -> DataSpec:
    """Load a data spec TOML, or a shipped one by name (``"camcan"``, see
    :func:`brain_tf.data.shipped_specs`). ``root`` overrides the spec's root folder.

    A relative ``root`` in the file is resolved against the spec file's folder, a
    relative ``root`` argument against the current folder; relative file patterns are
    resolved against the root.

    ``"bids"`` (with ``root``) or a BIDS dataset folder is the T1w images of that
    dataset (:mod:`brain_tf.bids.source`; a spec file with ``format = "bids"`` filters).
    """
    # imported here: brain_tf.bids.source builds on brain_tf.data.spec, whose package
    # (this one) would otherwise import it while it is still being imported
    from brain_tf.bids.source import BidsSpec, bids_spec

    folder = Path(path)
    named = str(path) == BIDS and not folder.exists()
    if named or (folder / "dataset_description.json").is_file():
        return bids_spec(root if root is not None or named else folder)
    path = spec_path(path)
    try:
        data = load_toml(path)
    except Exception as exc:
        raise SpecError(str(exc)) from None
    fmt = data.get("format", "layout")
    if fmt not in ("layout", BIDS):
        raise SpecError(f"{path}: format must be \"layout\" (files by pattern) or "
                        f"\"{BIDS}\" (a BIDS dataset), not {fmt!r}")
    kind = BidsSpec if fmt == BIDS else DataSpec
    return kind.from_dict(data, path=path, root=root)
