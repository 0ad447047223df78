"""Find and read every ``result.json`` under a folder (for ``load_results``, boards and bench)."""

from __future__ import annotations

from pathlib import Path

from .errors import CTBenchError
from .result_schema import RESULT_FILE, ResultFile, read_result


def find_result_files(root: Path | str) -> list[Path]:
    """Every ``result.json`` under ``root`` (or ``root`` itself when it is one), sorted."""
    root = Path(root).expanduser()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CTBenchError(f"results folder {root} does not exist; pass --results DIR holding ctbench results")
    return sorted(p for p in root.rglob(RESULT_FILE) if p.is_file())


def read_results(root: Path | str) -> list[tuple[Path, ResultFile]]:
    """``(path, validated result)`` of every result file under ``root``, sorted by path; none at
    all, or any invalid file, is an error naming the folder or the file."""
    paths = find_result_files(root)
    if not paths:
        raise CTBenchError(
            f"no {RESULT_FILE} found under {root}; run `ctbench run` or `ctbench bench` first, "
            f"or pass --results DIR"
        )
    return [(p, read_result(p)) for p in paths]
