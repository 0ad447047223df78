"""A static site folder ready to host anywhere (any web server, GitHub Pages as is, object storage).

``index.html`` (overview of models x tasks, task list with winners, mean ranks per category),
``tasks/<slug>.html`` (one page per table), ``static/`` (the one stylesheet and the sorting and
filtering script), ``plots/*.png``, ``results.json`` (the board plus every validated result it
was built from), ``leaderboard.csv``, ``mean_ranks.csv`` and ``.nojekyll`` (GitHub Pages serves
the files as they are). Every link is relative, so the folder can be moved or served from any
sub-path; no page embeds a local path.
"""

from __future__ import annotations

import json
from pathlib import Path

from .board import Board
from .collect import Entry
from .export import _strict, public_board, public_results, write_csv
from .files import write_bytes, write_text
from .plots import all_figures
from .render_html import STATIC_FILES, index_page, static_text, task_page

RESULTS_FILE = "results.json"
TASKS_DIR = "tasks"
PLOTS_DIR = "plots"
STATIC_DIR = "static"


def figure_name(key: str) -> str:
    """``bars:phantom--nodule`` -> ``bars_phantom--nodule.png`` (keys hold slugs: path-safe)."""
    return key.replace(":", "_") + ".png"


def publish(board: Board, entries: list[Entry], out: Path | str) -> list[Path]:
    """Write the site under ``out`` (files it owns are replaced, others left alone)."""
    out = Path(out)
    written = []
    paths: dict[str, str] = {}
    for key, png in all_figures(board).items():
        written.append(write_bytes(out, f"{PLOTS_DIR}/{figure_name(key)}", png))
        paths[key] = f"{PLOTS_DIR}/{figure_name(key)}"
    written += [write_text(out, f"{STATIC_DIR}/{name}", static_text(name)) for name in STATIC_FILES]
    links = {t.slug: f"{TASKS_DIR}/{t.slug}.html" for t in board.tables}
    written.append(write_text(out, "index.html", index_page(board, paths, links)))
    from_task = {k: f"../{v}" for k, v in paths.items()}
    for t in board.tables:
        written.append(write_text(out, links[t.slug], task_page(board, t, from_task)))
    payload = {"board": public_board(board), "results": public_results(entries)}
    written.append(write_text(out, RESULTS_FILE, json.dumps(_strict(payload), indent=2, default=str, allow_nan=False)))
    written += write_csv(board, out)
    written.append(write_text(out, ".nojekyll", ""))
    return written
