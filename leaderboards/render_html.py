"""Self-contained HTML: inline CSS and base64 PNG figures, one file that opens anywhere."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from . import format as fmt
from .board import Board, Cell, Table
from .files import write_text
from .plots import all_figures

HTML_FILE = "leaderboard.html"

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#d9e2ec; --band:#f5f7fa; --accent:#3b6ea8; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:#fff; }
main { max-width:1180px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:1.7rem; margin:0 0 4px; } h2 { font-size:1.25rem; margin:36px 0 6px; border-bottom:2px solid var(--line); padding-bottom:4px; }
.caption, .note, footer, .legend { color:var(--muted); font-size:.88rem; }
.note { background:#fff8e6; border-left:3px solid #e0a800; padding:4px 10px; margin:6px 0; color:#5c4a00; }
.scroll { overflow-x:auto; margin:8px 0 12px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { background:var(--band); font-weight:600; position:sticky; top:0; }
tr.g1 td { background:#fbfcfe; }
tr.random td { color:var(--muted); font-style:italic; }
td.rank { font-weight:700; color:var(--accent); width:3.5em; }
table.board td { vertical-align:top; } .ci { color:var(--muted); font-size:.8rem; }
.flag { display:inline-block; font-size:.75rem; padding:1px 7px; border-radius:9px; margin-right:4px; background:#e4e7eb; }
.flag.contaminated { background:#ffe3e3; color:#8a1c1c; } .flag.random { background:#e4e7eb; }
table.prov td { font-family:ui-monospace,Menlo,Consolas,monospace; font-size:.78rem; white-space:normal; word-break:break-all; }
img { max-width:100%; height:auto; display:block; margin:10px 0; }
.figs { display:flex; flex-wrap:wrap; gap:16px; } .figs img { max-width:560px; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
a { color:var(--accent); } footer { border-top:1px solid var(--line); margin-top:40px; padding-top:10px; }
"""


def img(png: bytes, alt: str) -> str:
    """An ``<img>`` carrying its PNG inline as base64."""
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def html_table(header: list[str], rows: list[list[str]], cls: str = "", row_classes: list[str] | None = None,
               first_class: str = "") -> str:
    """A table of already-escaped cell HTML, optionally with row classes and a first-column class."""
    first = f' class="{first_class}"' if first_class else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{rc}><td{first}>{row[0]}</td>" + "".join(f"<td>{c}</td>" for c in row[1:]) + "</tr>")
    table = f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _flag_html(text: str, table: Table) -> str:
    kind = "contaminated" if text == "contaminated" else "random" if text == "random init" else ""
    tip = f"{table.dataset} (or a collection it is drawn from) is among this model's pre-training data" if kind == "contaminated" else text
    return f'<span class="flag {kind}" title="{escape(tip)}">{escape(text)}</span>'


def _cell(c: Cell) -> str:
    """Value with its interval on a second, smaller line (keeps wide tables on screen)."""
    if c.ci_low is None or c.ci_high is None:
        return escape(fmt.num(c.value))
    return f'{escape(fmt.num(c.value))}<br><span class="ci">[{fmt.num(c.ci_low)}, {fmt.num(c.ci_high)}]</span>'


def task_table(table: Table) -> str:
    """The ranked table; tie groups banded, random controls greyed, flags as badges."""
    cells, classes, band, last = [], [], 1, None
    for r in table.rows:
        if r.rank != last:
            band, last = 1 - band, r.rank
        flags = "".join(_flag_html(f, table) for f in fmt.flags(r, table))
        tip = f"tie group of {r.tie_size}" if r.tie_size > 1 else "no tie"
        cells.append([f'<span title="{tip}">{escape(fmt.rank_text(r))}</span>', escape(r.label),
                      *(_cell(r.metrics[m]) for m in table.metric_names), flags])
        classes.append(" ".join(c for c in (f"g{band}", "random" if r.random_init else "") if c))
    return html_table(fmt.table_header(table), cells, "board", classes, first_class="rank")


def task_section(table: Table, figs: dict[str, bytes], heading: str = "h2") -> str:
    """Heading, caption, ranked table, notes, figures and per-row provenance of one task."""
    title = fmt.heading(table)
    budget = f"; probe budget {table.trials} Optuna trials per model" if table.trials is not None else ""
    parts = [f'<section id="{escape(table.slug)}"><{heading}>{escape(title)}</{heading}>',
             f'<p class="caption">{escape(fmt.caption(table) + budget)}</p>', task_table(table),
             f'<p class="caption">{escape(fmt.tie_summary(table))}.</p>']
    parts += [f'<p class="note">{escape(n)}</p>' for n in table.notes]
    keys = [f"bars:{table.slug}", f"curve:{table.slug}", *(f"km:{table.slug}:{n}" for n in range(len(table.km)))]
    shown = [img(figs[k], k) for k in keys if k in figs]
    if shown:
        parts.append(f'<div class="figs">{"".join(shown)}</div>')
    prov = [[escape(c) for c in row] for row in fmt.provenance_cells(table)]
    prov_table = html_table(fmt.PROVENANCE_HEADER, prov, "prov")
    parts.append(f"<details><summary>provenance of each row</summary>{prov_table}</details>")
    return "".join(parts) + "</section>"


def overview(board: Board, figs: dict[str, bytes], links: dict[str, str] | None = None) -> str:
    """Flag legend, mean-rank table (per category and overall) and the heatmap."""
    legend = "; ".join(f"<b>{escape(k)}</b>: {escape(v)}" for k, v in fmt.FLAG_LEGEND.items())
    parts = [f'<p class="legend">Flags: {legend}.</p>', "<h2>Mean rank</h2>",
             html_table(fmt.mean_rank_header(board), [[escape(c) for c in r] for r in fmt.mean_rank_cells(board)])]
    if "heatmap" in figs:
        parts.append(img(figs["heatmap"], "normalised scores heatmap"))
    if links:
        items = "".join(f'<li><a href="{escape(href)}">{escape(text)}</a></li>' for text, href in links.items())
        parts.append(f"<h2>Tasks</h2><ul>{items}</ul>")
    return "".join(parts)


def footer(board: Board) -> str:
    return "<footer>" + "".join(f"<p>{escape(line)}</p>" for line in fmt.footer_lines(board)) + "</footer>"


def page(title: str, body: str) -> str:
    """A complete HTML document with the inline stylesheet."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>")


def board_html(board: Board, figs: dict[str, bytes] | None = None) -> str:
    """The whole board as one self-contained page."""
    figs = all_figures(board) if figs is None else figs
    body = ["<h1>ctbench leaderboard</h1>", overview(board, figs)]
    body += [task_section(t, figs) for t in board.tables]
    tabled = {t.slug for t in board.tables}
    body += [f"<h2>Label efficiency: {escape(c.title)}</h2>{img(figs[f'curve:{c.slug}'], c.slug)}"
             for c in board.curves if c.slug not in tabled]
    body.append(footer(board))
    return page("ctbench leaderboard", "".join(body))


def write_html(board: Board, out: Path | str) -> list[Path]:
    """Write ``leaderboard.html`` under ``out``."""
    return [write_text(out, HTML_FILE, board_html(board))]
