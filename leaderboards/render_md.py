"""Markdown leaderboard for GitHub: ``leaderboard.md`` plus its figures as PNG files in ``plots/``.

Every name read from a result file goes through :func:`md_text`, so a model or task called
``a|b`` or ``<b>x</b>`` stays one plain table cell; markup (bold winners) is added only around
text that was escaped first.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from . import format as fmt
from .board import Board, Table
from .files import write_bytes, write_text
from .overview import overview
from .plots import all_figures

MD_FILE = "leaderboard.md"
PLOTS_DIR = "plots"
#: markdown syntax a name could carry, after backslashes and ``&<>`` are escaped
_MD_ESCAPES = (("`", "\\`"), ("|", "\\|"), ("![", "!\\["), ("](", "\\]("), ("*", "\\*"), ("_", "\\_"))


def md_text(text: object) -> str:
    """Text from result files made inert in markdown: one line, HTML special characters as
    entities (no raw ``<script>``), ``\\``, backticks, ``|``, emphasis marks and brackets
    backslash-escaped (no code spans, broken table cells, injected emphasis, links or images)."""
    flat = " ".join(str(text).splitlines())
    out = escape(flat.replace("\\", "\\\\"), quote=False)
    for raw, safe in _MD_ESCAPES:
        out = out.replace(raw, safe)
    return out


def md_table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    """A GitHub-flavoured markdown table; every cell goes through :func:`md_text` unless ``raw``
    (cells built by the caller from escaped text)."""
    cell = (lambda c: c) if raw else md_text
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _kind_mark(kind: str) -> str:
    return {"random": " *(random init)*", "reference": " *(reference)*"}.get(kind, "")


def overview_table(board: Board) -> str:
    """Models x ranked tasks: main metric with its interval and rank, winners in bold with a
    star, then mean rank and the model-card columns."""
    ov = overview(board)
    header = ["model", "mean rank", *(f"{t.title} ({t.main_metric}, {fmt.direction_text(t.direction)})"
                                      for t in ov.tables), *fmt.CARD_COLUMNS]
    rows = []
    for r in ov.rows:
        cells = [md_text(r.label) + _kind_mark(r.kind), f"{fmt.num(r.mean_rank, 2)} ({r.tasks} tasks)"]
        for t in ov.tables:
            e = r.entries.get(t.slug)
            if e is None:
                cells.append("&ndash;")
                continue
            rank = f"={e.rank}" if e.tie_size > 1 else str(e.rank)
            value = md_text(fmt.with_ci(e.cell))
            cells.append(f"**&#9733; {value}** (rank {rank})" if e.winner else f"{value} (rank {rank})")
        cells += [md_text(v) for v in fmt.card_text(r.card).values()]
        rows.append(cells)
    return md_table(header, rows, raw=True)


def tasks_table(board: Board) -> str:
    """One line per table: category, main metric, winner(s) and chance level."""
    rows = [[fmt.heading(t), t.category, f"{t.main_metric} ({fmt.direction_text(t.direction)})",
             ", ".join(fmt.winners(t)) + (" (tied)" if len(fmt.winners(t)) > 1 else ""),
             str(len(t.rows)), fmt.num(t.chance.value) if t.chance else "none"] for t in board.tables]
    return md_table(["task", "category", "main metric", "winner(s)", "models", "chance level"], rows)


def _task_rows(table: Table) -> list[list[str]]:
    out = []
    for r, cells in zip(table.rows, fmt.table_cells(table), strict=True):
        out.append([*cells[:-1], str(len(r.failures)), cells[-1]])
    return out


def _ranked(table: Table) -> list[str]:
    """A ranked table with its tie groups and winners."""
    header = [*fmt.table_header(table)[:-1], "failed cases", "flags"]
    return [md_table(header, _task_rows(table)), "",
            f"{md_text(fmt.tie_summary(table))}. Winner(s): {md_text(', '.join(fmt.winners(table)))}.", ""]


def _task_section(table: Table, images: dict[str, str]) -> list[str]:
    out = [f"## {md_text(fmt.heading(table))}", ""]
    budget = f"; probe budget {table.trials} Optuna trials per model" if table.trials is not None else ""
    out += [md_text(fmt.caption(table) + budget), "", md_text(fmt.chance_text(table)), ""]
    if table.is_summary:
        out += [f"### {md_text(fmt.probe_heading(table))}", "", md_text(fmt.summary_text(table)), ""]
    elif table.probe is not None and table.family != "default":
        out += [f"Probe: {md_text(fmt.probe_heading(table))}.", ""]
    out += _ranked(table)
    out += [f"> {md_text(fmt.public(note))}" for note in table.notes] + ([""] if table.notes else [])
    for sub in table.probes:
        out += [f"### {md_text(fmt.probe_heading(sub))}", ""]
        out += [f"> {md_text(fmt.public(note))}" for note in sub.notes] + ([""] if sub.notes else [])
        out += _ranked(sub)
    captions = {f"bars:{table.slug}": f"{table.main_metric} per model", f"tuning:{table.slug}": fmt.tuning_alt(table),
                f"curve:{table.slug}": "label efficiency",
                **{f"km:{table.slug}:{n}": f"Kaplan-Meier: {label}" for n, (label, _) in enumerate(table.km)}}
    for key, alt in captions.items():
        if key in images:
            out += [f"![{md_text(alt)}]({images[key]})", ""]
    prov_header = ["model", *(label for label, _ in fmt.provenance_items(table.rows[0], table))] if table.rows else []
    prov = [[r.label, *(text for _, text in fmt.provenance_items(r, table))] for r in table.rows]
    widths = {len(p) for p in prov}
    if prov and widths == {len(prov_header)}:
        out += ["<details><summary>provenance</summary>", "", md_table(prov_header, prov), "", "</details>", ""]
    else:  # rows list different items (result files for some only): one list per row
        out += ["<details><summary>provenance</summary>", ""]
        for r in table.rows:
            items = "; ".join(f"{label}: {text}" for label, text in fmt.provenance_items(r, table))
            out += [f"- {md_text(r.label)}: {md_text(items)}"]
        out += ["", "</details>", ""]
    return out


def markdown(board: Board, images: dict[str, str]) -> str:
    """The whole board as markdown; ``images`` maps figure keys to relative paths."""
    ov = overview(board)
    out = ["# ctbench leaderboard", "",
           f"{len(ov.rows)} model(s) on {len(ov.tables)} ranked task(s); ranks from paired patient-level "
           f"bootstrap tests; &#9733; marks each task's winning tie group.", ""]
    out += ["Flags: " + "; ".join(f"*{k}*: {md_text(v)}" for k, v in fmt.FLAG_LEGEND.items()) + ".", ""]
    out += ["## Overview", "", overview_table(board), ""]
    if "heatmap" in images:
        out += [f"![rank per task: equal rank and colour = statistically tied]({images['heatmap']})", ""]
    out += ["## Tasks", "", tasks_table(board), ""]
    out += ["## Mean rank per category", "", md_table(fmt.mean_rank_header(board), fmt.mean_rank_cells(board)), ""]
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
