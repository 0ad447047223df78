"""Markdown leaderboard: ``leaderboard.md`` plus its figures as PNG files in ``plots/``."""

from __future__ import annotations

from html import escape
from pathlib import Path

from . import format as fmt
from .board import Board, Table
from .files import write_bytes, write_text
from .plots import all_figures

MD_FILE = "leaderboard.md"
PLOTS_DIR = "plots"
#: markdown syntax a name could carry, after backslashes and ``&<>`` are escaped
_MD_ESCAPES = (("`", "\\`"), ("|", "\\|"), ("![", "!\\["), ("](", "\\]("))


def md_text(text: object) -> str:
    """Text from result files made inert in markdown: one line, HTML special characters as
    entities (no raw ``<script>``), ``\\``, backticks and ``|`` backslash-escaped (no code spans,
    no broken table cells), ``![``/``](`` broken up (no injected images or links)."""
    flat = " ".join(str(text).splitlines())
    out = escape(flat.replace("\\", "\\\\"), quote=False)
    for raw, safe in _MD_ESCAPES:
        out = out.replace(raw, safe)
    return out


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table; every cell goes through :func:`md_text`."""
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _task_section(table: Table, images: dict[str, str]) -> list[str]:
    out = [f"## {md_text(fmt.heading(table))}", ""]
    budget = f"; probe budget {table.trials} Optuna trials per model" if table.trials is not None else ""
    out += [md_text(fmt.caption(table) + budget), "", md_table(fmt.table_header(table), fmt.table_cells(table)), ""]
    out += [f"{md_text(fmt.tie_summary(table))}.", ""]
    out += [f"> {md_text(note)}" for note in table.notes] + ([""] if table.notes else [])
    for key in (f"bars:{table.slug}", f"curve:{table.slug}", *(f"km:{table.slug}:{n}" for n in range(len(table.km)))):
        if key in images:
            out += [f"![{md_text(key)}]({images[key]})", ""]
    out += ["<details><summary>provenance</summary>", ""]
    out += [md_table(fmt.PROVENANCE_HEADER, fmt.provenance_cells(table)), "", "</details>", ""]
    return out


def markdown(board: Board, images: dict[str, str]) -> str:
    """The whole board as markdown; ``images`` maps figure keys to relative paths."""
    out = ["# ctbench leaderboard", ""]
    out += ["Flags: " + "; ".join(f"*{k}*: {v}" for k, v in fmt.FLAG_LEGEND.items()) + ".", ""]
    out += ["## Mean rank", "", md_table(fmt.mean_rank_header(board), fmt.mean_rank_cells(board)), ""]
    if "heatmap" in images:
        out += [f"![normalised scores]({images['heatmap']})", ""]
    for t in board.tables:
        out += _task_section(t, images)
    tabled = {t.slug for t in board.tables}
    for c in board.curves:
        if c.slug not in tabled:
            out += [f"## Label efficiency: {md_text(c.title)}", "", f"![curve]({images[f'curve:{c.slug}']})", ""]
    out += ["---", "", *[f"{md_text(line)}  " for line in fmt.footer_lines(board)], ""]
    return "\n".join(out)


def write_markdown(board: Board, out: Path | str) -> list[Path]:
    """Write ``leaderboard.md`` and ``plots/*.png`` under ``out``; returns the files written."""
    out = Path(out)
    written, images = [], {}
    for key, png in all_figures(board).items():
        name = key.replace(":", "_") + ".png"
        written.append(write_bytes(out, f"{PLOTS_DIR}/{name}", png))
        images[key] = f"{PLOTS_DIR}/{name}"
    return [write_text(out, MD_FILE, markdown(board, images)), *written]
