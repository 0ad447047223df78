"""Every file a board writes goes through here: atomically, readable like any other file (a
static site must be servable), and only inside the output folder.

File names carry slugs built from result files, which are untrusted; :func:`target` refuses any
name that would resolve outside ``out`` (``..``, an absolute path, a symlink leading away).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ctbench.atomic import atomic_path
from ctbench.errors import CTBenchError
from ctbench.safe_paths import inside


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(tmp: Path) -> None:
    """Give the temporary file umask permissions before it is renamed into place."""
    os.chmod(tmp, 0o666 & ~_umask())


def target(out: Path | str, name: str) -> Path:
    """``out / name`` (``name`` relative, ``/``-separated), refused unless it resolves inside ``out``."""
    parts = name.split("/")
    if Path(name).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise CTBenchError(f"refusing to write {name!r} under {out}: a board only writes plain file names "
                           f"inside --out; rename the result whose name produced it")
    inside(out, *parts)
    return Path(out).joinpath(*parts)


def write_text(out: Path | str, name: str, text: str) -> Path:
    """Write ``text`` to ``out/name`` atomically, with ordinary (umask) permissions."""
    path = target(out, name)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        _publishable(tmp)
    return path


def write_bytes(out: Path | str, name: str, data: bytes) -> Path:
    """Write ``data`` to ``out/name`` atomically, with ordinary (umask) permissions."""
    path = target(out, name)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        _publishable(tmp)
    return path


def write_frame(out: Path | str, name: str, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as CSV to ``out/name`` atomically, with ordinary (umask) permissions."""
    path = target(out, name)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
        _publishable(tmp)
    return path
