"""Markdown leaderboard: ``leaderboard.md`` plus its figures as PNG files in ``plots/``."""

from __future__ import annotations

from pathlib import Path

from . import format as fmt
from .board import Board, Table
from .files import write_bytes, write_text
from .plots import all_figures

MD_FILE = "leaderboard.md"
PLOTS_DIR = "plots"


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(_esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _task_section(table: Table, images: dict[str, str]) -> list[str]:
    out = [f"## {fmt.heading(table)}", ""]
    budget = f"; probe budget {table.trials} Optuna trials per model" if table.trials is not None else ""
    out += [fmt.caption(table) + budget, "", md_table(fmt.table_header(table), fmt.table_cells(table)), ""]
    out += [f"{fmt.tie_summary(table)}.", ""]
    out += [f"> {note}" for note in table.notes] + ([""] if table.notes else [])
    for key in (f"bars:{table.slug}", f"curve:{table.slug}", *(f"km:{table.slug}:{n}" for n in range(len(table.km)))):
        if key in images:
            out += [f"![{key}]({images[key]})", ""]
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
            out += [f"## Label efficiency: {c.title}", "", f"![curve]({images[f'curve:{c.slug}']})", ""]
    out += ["---", "", *[f"{line}  " for line in fmt.footer_lines(board)], ""]
    return "\n".join(out)


def write_markdown(board: Board, out: Path | str) -> list[Path]:
    """Write ``leaderboard.md`` and ``plots/*.png`` under ``out``; returns the files written."""
    out = Path(out)
    written, images = [], {}
    for key, png in all_figures(board).items():
        name = key.replace(":", "_") + ".png"
        written.append(write_bytes(out / PLOTS_DIR / name, png))
        images[key] = f"{PLOTS_DIR}/{name}"
    return [write_text(out / MD_FILE, markdown(board, images)), *written]
