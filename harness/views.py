"""Feature views: what a global probe reads from one cached extraction.

An adapter's features are extracted and cached once (embedding, and the token grid when the
model has one); every view is computed from that cache entry, never re-extracted:

- ``cls``: the embedding as the model card defines it (CLS token, pooled map, ...);
- ``mean``: the mean of the token grid over its positions, ``(C,)``;
- ``cls+mean``: the two concatenated, ``(E + C,)`` (the DINOv2 linear-probe protocol);
- ``tokens``: the grid as a set of ``(positions, C)`` vectors, for attentive probes.

A model offers the token views only when its card declares tokens (``token_dim``); a case
cached without tokens is refused with a message naming the model and the case.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import CTBenchError
from .types import Features

VIEWS = ("cls", "mean", "cls+mean", "tokens")
TOKEN_VIEWS = frozenset({"mean", "cls+mean", "tokens"})
VECTOR_VIEWS = ("cls", "mean", "cls+mean")  # one vector per case


def needs_tokens(view: str) -> bool:
    """Whether ``view`` is computed from the token grid."""
    return view in TOKEN_VIEWS


def views_of(card: Any) -> tuple[str, ...]:
    """The views a model offers: ``cls`` always, the token views when its card declares tokens."""
    return VIEWS if card.token_dim else ("cls",)


def token_set(f: Features) -> np.ndarray:
    """The grid ``(C, d1, d2, d3)`` as float16 ``(d1*d2*d3, C)`` vectors (one row per position)."""
    c = f.tokens.shape[0]
    return np.ascontiguousarray(np.asarray(f.tokens, dtype=np.float16).reshape(c, -1).T)


def _mean(f: Features) -> np.ndarray:
    c = f.tokens.shape[0]
    return np.asarray(f.tokens, dtype=np.float32).reshape(c, -1).mean(axis=1)


def view_inputs(feats: Sequence[Features], view: str, case_ids: Sequence[str] | None = None,
                model: str = "the model") -> np.ndarray:
    """Probe inputs of ``view`` for ``feats``: float32 ``(n, d)`` for the vector views, an object
    array of float16 ``(positions, C)`` arrays for ``tokens`` (grids may differ between cases)."""
    if view not in VIEWS:
        raise CTBenchError(f"unknown feature view {view!r}; choose from {', '.join(VIEWS)}")
    if view == "cls":
        return np.stack([f.embedding for f in feats]).astype(np.float32, copy=False)
    ids = list(case_ids) if case_ids is not None else [str(i) for i in range(len(feats))]
    for f, case in zip(feats, ids):
        if f.tokens is None:
            raise CTBenchError(f"{model} gave no token grid for case {case!r}: the {view!r} view needs tokens; "
                               f"use --view cls (or a model whose card declares tokens)")
    if view == "tokens":
        out = np.empty(len(feats), dtype=object)
        for i, f in enumerate(feats):
            out[i] = token_set(f)
        return out
    means = np.stack([_mean(f) for f in feats])
    if view == "mean":
        return means
    return np.concatenate([np.stack([f.embedding for f in feats]).astype(np.float32), means], axis=1)
