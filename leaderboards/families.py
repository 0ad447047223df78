"""Probe families and feature views on a board: which probe a result used, which one a model's
summary row shows (chosen on validation only), and what tuning cost and gained per row.

A result names its probe in ``probe.family`` (linear, knn, mlp, attentive, ...) and the feature
view it read in ``probe.view`` (cls, mean, cls+mean, tokens); files written before families
existed read as family ``default`` on view ``cls``. Results of different (family, view) are
never ranked together: each gets its own table, and a summary table shows each model once, with
the (family, view) whose best validation value (``probe.best_validation_value``) is best for
that model. Test values play no part in that choice.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ctbench.result_schema import ResultFile

if TYPE_CHECKING:
    from .collect import Entry

DEFAULT_FAMILY, DEFAULT_VIEW = "default", "cls"
#: display and tie-break order; names not listed follow, alphabetically
FAMILY_ORDER = (DEFAULT_FAMILY, "linear", "knn", "mlp", "attentive")
VIEW_ORDER = ("cls", "mean", "cls+mean", "tokens")


class Probe(NamedTuple):
    family: str
    view: str

    @property
    def title(self) -> str:
        """``linear probe on cls``."""
        return f"{self.family} probe on {self.view}"

    @property
    def short(self) -> str:
        """``linear on cls``."""
        return f"{self.family} on {self.view}"

    def sort_key(self) -> tuple:
        def place(name: str, order: tuple[str, ...]) -> tuple[int, str]:
            return (order.index(name), "") if name in order else (len(order), name)

        return (*place(self.family, FAMILY_ORDER), *place(self.view, VIEW_ORDER))


def probe_of(result: ResultFile) -> Probe:
    """The (family, view) of a result; ``default`` on ``cls`` where the file names none."""
    probe = result.probe
    family, view = (probe.family, probe.view) if probe is not None else (None, None)
    return Probe(family or DEFAULT_FAMILY, view or DEFAULT_VIEW)


def by_probe(entries: list[Entry]) -> dict[Probe, list[Entry]]:
    """Entries grouped by their (family, view), in display order."""
    groups: dict[Probe, list[Entry]] = defaultdict(list)
    for e in entries:
        groups[probe_of(e.result)].append(e)
    return {p: groups[p] for p in sorted(groups, key=Probe.sort_key)}


def validation_value(entries: list[Entry]) -> float | None:
    """Mean over seeds of the tuned probe's best validation value (None where none is recorded)."""
    vals = [v for e in entries if e.result.probe is not None
            for v in [e.result.probe.best_validation_value] if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def fit_seconds(entries: list[Entry]) -> float | None:
    """Median fit seconds per tuning trial over every seed's trials (``probe.trial_fit_s``)."""
    secs = [s for e in entries for s in _per_trial(e.result) if s is not None]
    return float(np.median(secs)) if secs else None


def _per_trial(result: ResultFile) -> list[float | None]:
    fit = result.probe.trial_fit_s if result.probe is not None else None
    return list(fit.per_trial) if fit is not None else []


def tuning(entries: list[Entry]) -> dict[str, Any] | None:
    """The row's tuning curve, ``{"best_so_far", "expected_max", "seeds"}``: the mean over seeds
    of equal length (the curves of a row's seeds share its budget), None where none is recorded."""
    curves = [c for e in entries if e.result.probe is not None
              for c in [e.result.probe.tuning_curve] if c is not None and c.best_so_far and c.expected_max]
    if not curves:
        return None
    n = min(len(c.best_so_far) for c in curves)
    mean = {k: np.mean([getattr(c, k)[:n] for c in curves], axis=0).tolist() for k in ("best_so_far", "expected_max")}
    return {**mean, "seeds": len(curves)}


class Choice(NamedTuple):
    probe: Probe
    entries: list[Entry]
    validation: float | None


def choose(per_probe: dict[Probe, dict[str, list[Entry]]], direction: str) -> tuple[dict[str, Choice], list[str]]:
    """Per row label, the (family, view) with the best validation value (max or min as the
    task's main metric goes; ties and missing values fall to display order), and notes for
    labels that had no validation value to choose by."""
    labels = sorted({k for rows in per_probe.values() for k in rows})
    chosen: dict[str, Choice] = {}
    notes = []
    sign = 1.0 if direction == "maximize" else -1.0
    for label in labels:
        options = [Choice(p, rows[label], validation_value(rows[label])) for p, rows in per_probe.items()
                   if label in rows]
        known = [c for c in options if c.validation is not None]
        if known:
            best = max(known, key=lambda c: sign * c.validation)  # max keeps the first of equals
        else:
            best = options[0]
            notes.append(f"{label}: no validation value recorded; shown with the {best.probe.title}")
        chosen[label] = best
    return chosen, notes
