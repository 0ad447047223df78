"""The pre-training log ``log.jsonl``: one JSON record per iteration, appended as training goes.

A power loss can leave the last line half-written (or zero-filled); that line is the only one
a crash can damage, so on resume it is dropped with a warning and the file is rewritten
atomically. A damaged line anywhere else cannot come from an interrupted append: it is reported
as corruption (file and line number), never silently dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from ctbench.atomic import atomic_write_text
from ctbench.errors import CTBenchError

Warn = Callable[[str], None]


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _record(line: bytes) -> dict | None:
    """The iteration record of one line, or ``None`` when it is not one."""
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("iteration"), int):
        return None
    return rec


def _parse(path: Path, warn: Warn | None) -> tuple[list[tuple[dict, str]], bool]:
    """(record, its line) pairs of ``path`` and whether a torn last line was dropped."""
    lines = path.read_bytes().split(b"\n")
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip(b" \t\r")]
    out: list[tuple[dict, str]] = []
    for k, (lineno, line) in enumerate(numbered):
        rec = _record(line)
        if rec is not None:
            out.append((rec, line.decode("utf-8").rstrip("\r")))
        elif k == len(numbered) - 1:
            (warn or _stderr_warning)(
                f"{path}: line {lineno} is incomplete (an interrupted write); it is dropped "
                "(training resumes from the last checkpoint)")
            return out, True
        else:
            raise CTBenchError(
                f"{path}: line {lineno} is not a valid log record (the file is corrupt, not just cut "
                "short); delete or repair that line to resume, or start afresh with --no-resume "
                "or another --out folder")
    return out, False


def read_log(path: Path, warn: Warn | None = None) -> tuple[list[dict], bool]:
    """(records, whether a torn last line was dropped) of ``path`` (empty when absent).

    A last line that is not a record is taken for an interrupted append and dropped (``warn``
    says so); any other unreadable line raises :class:`CTBenchError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return [], False
    pairs, torn = _parse(path, warn)
    return [rec for rec, _ in pairs], torn


def truncate_log(path: Path, start: int, warn: Warn | None = None) -> list[dict]:
    """Keep the records of iterations before ``start`` (the checkpoint's iteration), as they
    were written, and rewrite ``path`` atomically with them; returns them. ``start <= 0``
    empties the log unread (a fresh start)."""
    path = Path(path)
    if not path.is_file():
        return []
    if start <= 0:
        atomic_write_text(path, "")
        return []
    pairs, _ = _parse(path, warn)
    keep = [(rec, line) for rec, line in pairs if rec["iteration"] < start]
    if not keep or keep[-1][0]["iteration"] != start - 1:
        held = f"records up to iteration {keep[-1][0]['iteration']}" if keep else "no records"
        (warn or _stderr_warning)(
            f"{path}: the checkpoint is at iteration {start} but the log holds {held} before it; "
            "the missing records were lost (training resumes from the checkpoint)")
    atomic_write_text(path, "".join(line + "\n" for _, line in keep))
    return [rec for rec, _ in keep]
