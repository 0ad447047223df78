"""A static site folder ready to host anywhere (any web server, GitHub Pages, object storage).

``index.html`` (mean ranks, heatmap, links), ``tasks/<slug>.html`` (one self-contained page per
table), ``results.json`` (the board plus every validated result it was built from),
``leaderboard.csv`` and ``mean_ranks.csv``. Pages use relative links only.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import format as fmt
from .board import Board
from .collect import Entry
from .export import _strict, write_csv
from .files import write_text
from .plots import all_figures
from .render_html import footer, overview, page, task_section

RESULTS_FILE = "results.json"
TASKS_DIR = "tasks"


def publish(board: Board, entries: list[Entry], out: Path | str) -> list[Path]:
    """Write the site under ``out`` (files it owns are replaced, others left alone)."""
    out = Path(out)
    figs = all_figures(board)
    links = {}
    for t in board.tables:
        links[fmt.heading(t)] = f"{TASKS_DIR}/{t.slug}.html"
    written = []
    index = page("ctbench leaderboard", "<h1>ctbench leaderboard</h1>" + overview(board, figs, links) + footer(board))
    written.append(write_text(out, "index.html", index))
    for t in board.tables:
        body = f'<p><a href="../index.html">&larr; all tasks</a></p>{task_section(t, figs, "h1")}{footer(board)}'
        written.append(write_text(out, f"{TASKS_DIR}/{t.slug}.html", page(f"ctbench: {t.title}", body)))
    payload = {
        "board": board.to_dict(),
        "results": [{"path": str(e.path), **e.result.model_dump(mode="json")} for e in entries],
    }
    written.append(write_text(out, RESULTS_FILE, json.dumps(_strict(payload), indent=2, default=str, allow_nan=False)))
    written += write_csv(board, out)
    write_text(out, ".nojekyll", "")  # GitHub Pages: serve the files as they are
    return written
