"""Atomic writes whose files are readable like any other (a static site must be servable).

``ctbench.atomic`` writes through ``mkstemp``, which leaves files owner-only (0600); published
boards are meant to be read by web servers and colleagues, so the usual umask applies here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ctbench.atomic import atomic_path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(tmp: Path) -> None:
    """Give the temporary file umask permissions before it is renamed into place."""
    os.chmod(tmp, 0o666 & ~_umask())


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` atomically, with ordinary (umask) permissions."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        _publishable(tmp)
    return path


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` atomically, with ordinary (umask) permissions."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        _publishable(tmp)
    return path


def write_frame(path: Path | str, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as CSV atomically, with ordinary (umask) permissions."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
        _publishable(tmp)
    return path
