"""Leaderboards: result files -> validated, ranked, uncertain, published reports.

Pipeline: ``schema`` (validate and migrate result.json) -> ``collect`` (find and group) ->
``scoring`` + ``paired`` (patient-level paired bootstrap on saved predictions) -> ``ranking``
(tie groups, mean ranks) -> ``board`` (the Board) -> ``plots`` / ``render_md`` /
``render_html`` / ``export`` / ``publish`` (outputs, written atomically through ``files``).
``cli`` holds the typer sub-app ``ctbench leaderboard build|publish``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ctbench.errors import CTBenchError

from .board import Board, Table, build_board
from .collect import collect
from .publish import publish as publish_site
from .ranking import RANK_RULE

FORMATS = ("md", "html", "csv", "json")


def write_board(board: Board, fmt: str, out: Path | str) -> list[Path]:
    """Write ``board`` in format ``fmt`` (md, html, csv, json) under ``out``; returns the files."""
    from .export import write_csv, write_json
    from .render_html import write_html
    from .render_md import write_markdown

    writers: dict[str, Callable[[Board, Path | str], list[Path]]] = {
        "md": write_markdown, "html": write_html, "csv": write_csv, "json": write_json,
    }
    if fmt not in writers:
        raise CTBenchError(f"unknown leaderboard format {fmt!r}; use one of {', '.join(FORMATS)}")
    return writers[fmt](board, out)


__all__ = ["Board", "FORMATS", "RANK_RULE", "Table", "build_board", "collect", "publish_site", "write_board"]
