"""Path-safe, unique slugs from names read from result files (untrusted: ``../x``, ``/etc``).

A slug names files a board writes (``plots/bars_<slug>.png``, ``tasks/<slug>.html``), so each
part is slugified; a part slugify changed gets a short hash of the raw name, so that names
which slugify alike (``Lung`` and ``lung``, ``a/b`` and ``a-b``) still get different slugs.
"""

from __future__ import annotations

import hashlib
import re

from ctbench.safe_paths import slugify

SEP = "--"
_RUNS = re.compile(r"-{2,}")


def slug_part(name: object) -> str:
    """``name`` itself when it is already path-safe, else its slug plus ``-<8 hex of the raw
    name>``. Never contains ``--`` (the separator of parts), so joined parts stay apart."""
    raw = str(name)
    slug = _RUNS.sub("-", slugify(raw))
    return slug if slug == raw else f"{slug}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def join(*parts: object) -> str:
    """Parts made path-safe by :func:`slug_part`, joined by ``--``."""
    return SEP.join(slug_part(p) for p in parts)


def unique(slugs: list[str], taken: set[str] | None = None) -> list[str]:
    """``slugs`` with ``-2``, ``-3``... added to repeats and to slugs already in ``taken``, in
    order; an added suffix never produces a slug that appears elsewhere in the list."""
    reserved = set(slugs) | set(taken or ())
    used = set(taken or ())
    out = []
    for slug in slugs:
        s, n = slug, 2
        while s in used or (s != slug and s in reserved):
            s, n = f"{slug}-{n}", n + 1
        used.add(s)
        out.append(s)
    return out
