"""Fail before the work, not after it: check that output folders can be created and written.

A folder is probed at its nearest existing ancestor (itself when it exists) by creating and
deleting a small file there, so a check leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import CTBenchError
from .paths import home

__all__ = ["check_writable", "check_output_folders"]

HOME_FIX = "set $CTBENCH_HOME to a folder you can write (it holds features, studies and results)"


def _nearest_existing(folder: Path) -> Path:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def check_writable(folder: str | Path, what: str, fix: str) -> None:
    """Raise :class:`CTBenchError` naming ``what`` (e.g. ``result folder (--out)``), the folder
    and ``fix`` unless ``folder`` is, or can be created as, a folder this process can write."""
    folder = Path(folder).expanduser()
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise CTBenchError(f"{what} {folder} cannot be created: {base} is a file, not a folder; {fix}")
    try:
        fd, name = tempfile.mkstemp(prefix=".ctbench-write-check-", dir=base)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        where = "" if base == folder else f" (its existing parent {base})"
        raise CTBenchError(f"{what} {folder} is not writable{where}: {e.strerror or e}; {fix}") from None


def check_output_folders(out: str | Path | None = None, *, results: bool = True, studies: bool = True) -> None:
    """Before a run, bench or extract: with ``results``, the results folder (``out``, default
    ``$CTBENCH_HOME/results``); ``$CTBENCH_HOME/features``; with ``studies``,
    ``$CTBENCH_HOME/studies`` (the default Optuna storage)."""
    if results and out:
        check_writable(out, "result folder (--out)", "pass --out a folder you can write")
    elif results:
        check_writable(home() / "results", "results folder", f"pass --out a folder you can write, or {HOME_FIX}")
    check_writable(home() / "features", "feature cache", HOME_FIX)
    if studies:
        check_writable(home() / "studies", "Optuna study folder", f"pass --storage URL, or {HOME_FIX}")
