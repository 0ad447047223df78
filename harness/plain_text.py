"""Output meant to be read by scripts or copied: never wrapped, never truncated.

On a terminal the CLI draws rich tables; piped (a log, ``| less``, ``| grep``) rich would fit
them into 80 columns, folding names and breaking paths. There the listings print plain aligned
columns instead, and lines holding a path or a command are printed whole (``soft_wrap``).
"""

from __future__ import annotations

from typing import Callable, Sequence

from rich.console import Console
from rich.markup import escape

__all__ = ["aligned", "print_whole", "print_listing", "escape"]


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """``header`` and ``rows`` as lines of left-aligned columns two spaces apart, each column as
    wide as its widest cell; nothing is cut, and the last column is not padded."""
    table = [list(map(str, header)), *[[str(c).replace("\n", " ") for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(header))]
    return ["  ".join([c.ljust(w) for c, w in zip(r[:-1], widths)] + r[-1:]) for r in table]


def print_whole(console: Console, text: str, markup: bool = True) -> None:
    """One line (or several, split only at ``\\n``) that is never wrapped or cropped: for paths,
    commands and anything else meant to be copied. Escape paths inside ``markup`` text with
    :func:`escape` (a ``[`` in a path would otherwise read as markup)."""
    console.print(text, soft_wrap=True, markup=markup, highlight=False)


def print_listing(console: Console, title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                  style: Callable[[int, str], str] | None = None, title_left: bool = False) -> None:
    """A titled table: rich on a terminal (cells escaped, then ``style(column, markup)`` may
    colour them), aligned plain lines when piped (nothing folded or cut)."""
    if not console.is_terminal:
        print_whole(console, "\n".join([title, *aligned(header, rows)]), markup=False)
        return
    from rich.table import Table

    table = Table(title=escape(title), title_justify="left" if title_left else "center")
    for col in header:
        table.add_column(col, overflow="fold")
    for row in rows:
        cells = [escape(str(v)) for v in row]
        table.add_row(*[style(i, c) for i, c in enumerate(cells)] if style else cells)
    console.print(table)
