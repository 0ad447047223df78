"""Names read from files (dataset cards, task definitions, result files) are untrusted: before
one becomes part of a path it must be an identifier, and every path built from one must stay
inside the folder it was meant for."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CTBenchError

#: what a name from a file may look like before it is used in a path (no separators, no "..")
IDENTIFIER = r"^[a-z0-9][a-z0-9._-]*$"
_IDENTIFIER = re.compile(IDENTIFIER)
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def is_identifier(name: str) -> bool:
    """Whether ``name`` matches :data:`IDENTIFIER` and is not made of dots only."""
    return bool(_IDENTIFIER.match(name)) and name.strip(".") != ""


def slugify(name: str) -> str:
    """A path-safe form of any text: lower case, runs of other characters become ``-``,
    never empty, never ``.``/``..``."""
    slug = _UNSAFE.sub("-", str(name).lower()).strip("-.")
    return slug or "unnamed"


def inside(root: Path | str, *parts: str) -> Path:
    """``root / parts...``, refused (CTBenchError naming both) unless it resolves inside ``root``."""
    base = Path(root).expanduser().resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and not path.is_relative_to(base):
        raise CTBenchError(
            f"refusing to use {'/'.join(parts)!r}: it leads outside {base}; names from dataset cards and "
            f"result files must be plain identifiers (letters, digits, '.', '_', '-')"
        )
    return path
