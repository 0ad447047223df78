"""Ranks with tie groups from paired bootstrap intervals, and mean ranks across tasks.

The rule (``RANK_RULE``) is "1 + the number of models significantly better": it never chains
ties (A~B and B~C with A>C does not put C level with A), and it needs no arbitrary threshold
beyond the 95% paired interval.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

RANK_RULE = (
    "Rank = 1 + the number of models significantly better on the main metric, where model A is "
    "significantly better than B when the patient-level paired-bootstrap 95% interval of A - B "
    "(oriented so that positive means better) lies entirely above 0. Models with equal rank form a "
    "tie group; rows are listed by rank, then by point value. Without paired predictions ranks "
    "fall back to plain point-value order and the table says 'not tested'."
)


def oriented(value: float, direction: str) -> float:
    """``value`` with larger = better (``minimize`` metrics are negated); NaN sorts last."""
    if value is None or not np.isfinite(value):
        return float("-inf")
    return float(value) if direction == "maximize" else -float(value)


def significance_ranks(better: np.ndarray) -> list[int]:
    """``better[i, j]`` is True when model i is significantly better than model j."""
    better = np.asarray(better, dtype=bool)
    return [1 + int(better[:, j].sum()) for j in range(better.shape[0])]


def point_ranks(values: Sequence[float], direction: str) -> list[int]:
    """Competition ranks (1, 2, 2, 4) by point value: the fallback without a paired test."""
    keys = [oriented(v, direction) for v in values]
    return [1 + sum(k2 > k for k2 in keys) for k in keys]


def display_order(ranks: Sequence[int], values: Sequence[float], labels: Sequence[str], direction: str) -> list[int]:
    """Row order: by rank, then by point value (best first), then by label."""
    return sorted(range(len(ranks)), key=lambda i: (ranks[i], -oriented(values[i], direction), labels[i]))


def tie_groups(ranks: Sequence[int]) -> list[list[int]]:
    """Indices sharing a rank, groups ordered by rank."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(ranks):
        groups[r].append(i)
    return [groups[r] for r in sorted(groups)]


def mean_ranks(records: Sequence[tuple[str, str, int]]) -> list[dict]:
    """Per model: mean rank over all tasks and per category, from ``(label, category, rank)``.

    Each model is averaged over the tasks it has a result on; ``tasks`` says how many, so a model
    missing hard tasks is visible rather than silently favoured.
    """
    per_model: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for label, category, rank in records:
        per_model[label][category].append(rank)
    rows = []
    for label, cats in per_model.items():
        every = [r for rs in cats.values() for r in rs]
        rows.append({
            "model": label,
            "overall": float(np.mean(every)),
            "tasks": len(every),
            "categories": {c: float(np.mean(rs)) for c, rs in sorted(cats.items())},
        })
    return sorted(rows, key=lambda r: (r["overall"], -r["tasks"], r["model"]))
