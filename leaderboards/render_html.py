"""HTML pages from the Jinja2 templates in ``templates/`` (autoescaped: every name from a result
file is text, never markup) with the one stylesheet and script in ``static/``.

Two shapes: the site (:mod:`.publish`) links ``static/`` and ``plots/`` relatively; the one-file
board (``leaderboard.html``) carries the stylesheet, the script and the figures inline, so it
opens anywhere on its own.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from . import format as fmt
from .board import Board, Table
from .files import write_text
from .overview import overview
from .plots import all_figures

HTML_FILE = "leaderboard.html"
STATIC_FILES = ("ctbench.css", "ctbench.js")


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The template environment: package templates, autoescape on, undefined names refused."""
    env = Environment(loader=PackageLoader("ctbench.leaderboards", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["fmt"] = fmt
    env.filters["kinds"] = lambda rows: {fmt.row_kind(r) for r in rows}
    env.filters["public"] = fmt.public
    env.filters["breakable"] = lambda name: Markup(escape(name).replace("_", Markup("_<wbr>")))
    return env


def static_text(name: str) -> str:
    """A file of ``static/`` (the stylesheet or the script), as installed with the package."""
    return files("ctbench.leaderboards").joinpath("static", name).read_text(encoding="utf-8")


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, for pages that must stand alone."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _render(template: str, board: Board, images: dict[str, str], *, root: str, inline: bool, **extra) -> str:
    tabled = {t.slug for t in board.tables}
    context = {
        "board": board, "ov": overview(board), "images": images, "root": root,
        "inline": {"css": static_text("ctbench.css"), "js": static_text("ctbench.js")} if inline else None,
        "loose_curves": [c for c in board.curves if c.slug not in tabled and f"curve:{c.slug}" in images],
        "links": None, "page_title": "ctbench leaderboard",
    }
    return environment().get_template(template).render(**(context | extra))


def index_page(board: Board, images: dict[str, str], links: dict[str, str]) -> str:
    """The site's ``index.html``: overview table, task list with winners, mean ranks per category.
    ``images``/``links``: figure keys and table slugs -> relative URLs."""
    return _render("index.html", board, images, root="", inline=False, links=links)


def task_page(board: Board, table: Table, images: dict[str, str], root: str = "../") -> str:
    """One task's page: ranked table with card facts, failures and provenance, and its figures."""
    return _render("task.html", board, images, root=root, inline=False, table=table,
                   page_title=f"ctbench: {fmt.heading(table)}")


def board_html(board: Board, figs: dict[str, bytes] | None = None) -> str:
    """The whole board as one self-contained page (inline stylesheet, script and figures)."""
    figs = all_figures(board) if figs is None else figs
    return _render("board.html", board, {k: data_uri(v) for k, v in figs.items()}, root="", inline=True)


def write_html(board: Board, out: Path | str) -> list[Path]:
    """Write ``leaderboard.html`` under ``out``."""
    return [write_text(out, HTML_FILE, board_html(board))]
