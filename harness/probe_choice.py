"""Which probe family reads which feature view: ``--probe`` and ``--view`` resolved for a task
category and a model.

A global category (classification, regression, survival) declares the families it offers
(``families``); a model offers the views its card allows (:func:`ctbench.views.views_of`).
Without ``--probe`` a run fits the category's default family (``linear``) on ``cls``, the main
number every board has ranked so far; ``--probe NAME`` fits that family on its natural view
(``tokens`` for ``attentive``, else ``cls``) or on ``--view``; ``all`` (for either) expands to
every combination the category and the model support, and says which it skipped. Each
``(family, view)`` is its own result: its own study, its own result folder, never ranked with
another. Categories without families (dense tasks, report generation, retrieval) keep their own
probe and take no ``--probe``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import CTBenchError
from .family_task import FamilyProbeTask
from .probes import DEFAULT_FAMILY, FAMILY, FAMILIES
from .views import VIEWS, needs_tokens, views_of

ALL = "all"


@dataclass(frozen=True)
class ProbeChoice:
    """One probe family on one feature view; ``family`` None: the task's own probe."""

    family: str | None
    view: str | None

    @property
    def tag(self) -> str | None:
        """The result folder's and study's suffix, e.g. ``knn-cls``, ``linear-cls-mean``;
        ``None`` for the default (``linear`` on ``cls``) and for a task's own probe."""
        if self.family is None or (self.family, self.view) == (DEFAULT_FAMILY, "cls"):
            return None
        return f"{self.family}-{self.view.replace('+', '-')}"


def _family_task(task: Any) -> bool:
    """Whether ``task`` (class or instance) is a :class:`FamilyProbeTask`."""
    return issubclass(task if isinstance(task, type) else type(task), FamilyProbeTask)


def families_of(task: Any) -> tuple[str, ...]:
    """The probe families a task (class or instance) offers; empty when it has its own probe."""
    return tuple(task.families) if _family_task(task) else ()


def unsupported_reason(task: Any, family: str) -> str:
    """Why ``task``'s category does not offer ``family`` (its own words when it gives them)."""
    reasons = task.unsupported_families if _family_task(task) else {}
    return reasons.get(family, "not offered by this category")


def resolve(task: Any, card: Any, probe: str | None, view: str | None, model: str,
            task_name: str) -> tuple[list[ProbeChoice], list[str]]:
    """The ``(family, view)`` runs asked for, and a line per combination ``all`` skipped.

    An explicit family or view the category or model cannot serve is a CTBenchError naming the
    model, the task and the choices."""
    offered = families_of(task)
    category = getattr(task, "category", "?")
    if not offered:
        if probe is not None or view is not None:
            if probe == ALL:
                return [ProbeChoice(None, None)], []  # a grid over every category: its own probe
            raise CTBenchError(f"task {task_name!r} ({category}) has its own probe; --probe and --view apply "
                               f"to classification, regression and survival tasks")
        return [ProbeChoice(None, None)], []
    if probe is not None and probe != ALL and probe not in FAMILY:
        raise CTBenchError(f"unknown probe family {probe!r} for task {task_name!r}; choose from "
                           f"{', '.join(offered)} or all")
    if probe is not None and probe != ALL and probe not in offered:
        raise CTBenchError(f"task {task_name!r} ({category}) does not offer the {probe!r} probe "
                           f"({unsupported_reason(task, probe)}); choose from {', '.join(offered)} or all")
    if view is not None and view != ALL and view not in VIEWS:
        raise CTBenchError(f"unknown feature view {view!r}; choose from {', '.join(VIEWS)} or all")
    model_views = views_of(card)
    if view not in (None, ALL) and view not in model_views:
        raise CTBenchError(f"model {model!r} has no token grid (its card declares none), so it cannot give the "
                           f"{view!r} view for task {task_name!r}; its views: {', '.join(model_views)}")
    wanted = [DEFAULT_FAMILY] if probe is None else list(offered) if probe == ALL else [probe]
    choices, skipped = [], []
    for family in wanted:
        fam_views = FAMILY[family].views
        if view is None:
            views = [fam_views[0]]
        elif view == ALL:
            views = list(fam_views)
        elif view not in fam_views:
            if probe == ALL:
                skipped.append(f"{family}: reads {', '.join(fam_views)}, not {view!r}")
                continue
            raise CTBenchError(f"the {family!r} probe reads the {' / '.join(fam_views)} view, not {view!r} "
                               f"(task {task_name!r}, model {model!r})")
        else:
            views = [view]
        for v in views:
            if v in model_views:
                choices.append(ProbeChoice(family, v))
            elif probe == ALL or view == ALL:
                skipped.append(f"{family} on {v}: model {model!r} declares no token grid")
            else:
                raise CTBenchError(f"model {model!r} has no token grid (its card declares none), so the {family!r} "
                                   f"probe cannot read the {v!r} view for task {task_name!r}; its views: "
                                   f"{', '.join(model_views)}")
    if probe == ALL:
        skipped += [f"{f}: {unsupported_reason(task, f)}" for f in FAMILIES if f not in offered]
    if not choices:
        raise CTBenchError(f"no probe of {probe or DEFAULT_FAMILY!r} on view {view or 'its natural one'!r} fits model "
                           f"{model!r} on task {task_name!r}: " + "; ".join(skipped))
    return choices, skipped


def loads_tokens(choice: ProbeChoice) -> bool:
    """Whether the run must load the token grids from the cache."""
    return choice.view is not None and needs_tokens(choice.view)
