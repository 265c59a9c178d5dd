"""Atomic writes: write to a temporary name in the target folder, then rename.

A crash (or Ctrl-C) while writing never leaves a half-written file under the
final name, and readers never see one.

A temporary name carries its writer's tag (host, process id, random part):
``.NAME.tmp-HOST-PID-XXXXXXXX.SUFFIX``. A process killed while writing cannot
remove its temporary file, so the next atomic write to the same path removes
the siblings whose writer ran on this machine and has ended (never those of
a live process, nor those written from another machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_TAG = r"(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}"


def full_suffix(path: str | os.PathLike) -> str:
    """The suffix that decides a file's format, e.g. ``.nii.gz`` or ``.csv``."""
    name = Path(path).name
    for double in (".nii.gz", ".tar.gz", ".weights.h5"):
        if name.lower().endswith(double):
            return name[-len(double):]
    return Path(name).suffix


def writer_tag() -> str:
    """``HOST-PID-XXXXXXXX``: marks a name as this process's work in progress."""
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _process_ended(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    try:  # a killed process nobody has waited for yet (a zombie) has ended too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def writer_gone(tag: str) -> bool:
    """True when the writer named by a :func:`writer_tag` ran on this machine and has ended."""
    match = re.fullmatch(_TAG, tag)
    return bool(match) and match["host"] == _HOST and _process_ended(int(match["pid"]))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _parts(path: Path) -> tuple[str, str]:
    suffix = full_suffix(path)
    return (path.name[: len(path.name) - len(suffix)] if suffix else path.name), suffix


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by ended writers; returns them."""
    path = Path(path)
    stem, suffix = _parts(path)
    pattern = re.compile(rf"\.{re.escape(stem)}\.(?:tmp-(?P<tmp>.+){re.escape(suffix)}"
                         rf"|old-(?P<old>.+))")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    prefix = f".{stem}."
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = pattern.fullmatch(entry.name)
        if match and writer_gone(match["tmp"] or match["old"]):
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffix so that writers choosing a format by
    extension (nibabel, imageio, pandas, Keras) behave as for the real name.
    Works for files and for folders (a folder written under the temporary
    name replaces an existing folder at ``path``). Temporary files of earlier
    writers of ``path`` that were killed are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    stem, suffix = _parts(path)
    tmp = path.with_name(f".{stem}.tmp-{writer_tag()}{suffix}")
    try:
        yield tmp
        if tmp.is_dir():
            if path.exists():
                old = path.with_name(f".{stem}.old-{writer_tag()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        elif tmp.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
