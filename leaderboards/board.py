"""Assemble a leaderboard from result files: tables with tie-aware ranks, mean ranks, curves.

Results are ranked together only when they share dataset, task, task version, split hash,
protocol version, task options (``task.options_tag``: a run with non-default options, e.g.
``--beam 2``, trained another probe), dataset version and trial budget. A task whose results
span several of these gets one table each (never one mixed ranking); the table with default
options, then the most models, then the newest counts towards mean ranks and the others carry a
note saying how they differ from it. One model is better than another when the paired bootstrap
95% interval of their difference, oriented so that positive is better, lies entirely above zero.

Probe families and feature views (:mod:`.families`) are never ranked together either: where a
table's results used several (family, view), each gets its own ranked table (``Table.probes``)
and the table itself becomes their summary, each model once with the (family, view) chosen by
its validation value only; the summary is what counts towards mean ranks and the overview.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ctbench.bootstrap import patient_resamples
from ctbench.errors import CTBenchError
from ctbench.provenance import PROTOCOL_VERSION, ctbench_version, git_sha
from ctbench.safe_paths import inside

from .chance import Chance, chance_level
from .collect import BoardKey, Entry, collect, contamination, row_labels
from .families import Probe, by_probe, choose, fit_seconds, probe_of, tuning, validation_value
from .paired import Difference, align, model_draws, paired_difference, same_targets
from .ranking import RANK_RULE, display_order, mean_ranks, point_ranks, significance_ranks
from .row_facts import card_facts, failures, is_reference, run_facts
from .scoring import can_score, make_scorer
from .slugs import join as join_slug
from .slugs import slug_part, unique

KM_FILES = ("km.csv", "km.png")  # data first: redrawn with the model in its title


@dataclass
class Cell:
    """A value with its 95% interval (None where unknown)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass
class Row:
    label: str
    model: str
    weights_tag: str
    weights_sha256: str
    random_init: bool
    contaminated: bool
    seeds: list[int]
    rank: int
    tie_size: int
    main: Cell
    metrics: dict[str, Cell]
    better_than: list[str]
    provenance: dict[str, Any]
    contaminated_by: list[str] = field(default_factory=list)  # pre-training names that overlap
    card: dict[str, Any] = field(default_factory=dict)  # model-card facts (:func:`.row_facts.card_facts`)
    reference: bool = False  # a baseline or control whose card says supervision "none"
    seed_given: bool = False  # a seed-conditioned model (card.seed_conditioned): told where to look
    failures: list[str] = field(default_factory=list)  # ``case: reason`` of cases that could not be encoded
    family: str = "default"  # the probe family and feature view of this row's results (:mod:`.families`)
    view: str = "cls"
    validation: float | None = None  # the tuned probe's best validation value (mean over seeds)
    fit_s: float | None = None  # median probe fit seconds per tuning trial
    tuning: dict[str, Any] | None = None  # best_so_far / expected_max against trials (mean over seeds)

    @property
    def probe(self) -> Probe:
        return Probe(self.family, self.view)


@dataclass
class Table:
    """One ranked table: results sharing dataset, task, version, split hash, protocol, task
    options (``options_tag`` None: the task's default options), dataset version and trial budget
    (``trials``: Optuna trials per model; None where nothing was tuned, e.g. retrieval)."""

    dataset: str
    task: str
    version: str
    category: str
    main_metric: str
    direction: str
    split_hash: str
    protocol_version: str
    rows: list[Row]
    metric_names: list[str]
    tested: bool
    n_cases: int
    n_patients: int
    n_boot: int
    primary: bool = True
    notes: list[str] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    km: list[tuple[str, str]] = field(default_factory=list)  # (row label, file path)
    options_tag: str | None = None
    options: dict[str, Any] | None = None  # the task options of these results, as recorded
    trials: int | None = None
    dataset_version: str | None = None
    slug_suffix: str = ""  # ``-2``... where two tables' names would otherwise give one slug
    chance: Chance | None = None  # the main metric's chance level (:mod:`.chance`), None where it has none
    family: str | None = None  # the (family, view) of every row; None: a summary over ``probes``
    view: str | None = None
    probes: list["Table"] = field(default_factory=list)  # one ranked table per (family, view) of a summary

    @property
    def probe(self) -> Probe | None:
        return None if self.family is None or self.view is None else Probe(self.family, self.view)

    @property
    def is_summary(self) -> bool:
        """True for a table showing each model's validation-chosen (family, view) of ``probes``."""
        return bool(self.probes)

    @property
    def slug(self) -> str:
        """``dataset--task[--opts]``; a non-primary table adds what sets it apart (task version,
        split, protocol, trial budget, dataset version) so that every slug is unique. Path-safe:
        names from result files are slugified (see :mod:`.slugs`), as slugs name files."""
        base = join_slug(self.dataset, self.task, *([self.options_tag] if self.options_tag else []))
        if not self.primary:
            base += (f"--v{slug_part(self.version)}-{slug_part(self.split_hash[:8])}"
                     f"-p{slug_part(self.protocol_version)}" + _budget_suffix(self.trials, self.dataset_version))
        return base + self.slug_suffix

    @property
    def title(self) -> str:
        """``dataset / task``, with `` [opts<hash>]`` for non-default task options."""
        return f"{self.dataset} / {self.task}" + (f" [{self.options_tag}]" if self.options_tag else "")


@dataclass
class Curve:
    """Label efficiency: main metric against training fraction, one series per model."""

    dataset: str
    task: str
    main_metric: str
    series: dict[str, list[dict[str, float | None]]]
    slug: str = ""  # the slug of the table on the same task, version, split, protocol, options, budget
    options_tag: str | None = None
    trials: int | None = None

    @property
    def title(self) -> str:
        """``dataset / task``, with `` [opts<hash>]`` for non-default task options."""
        return f"{self.dataset} / {self.task}" + (f" [{self.options_tag}]" if self.options_tag else "")


@dataclass
class Board:
    tables: list[Table]
    mean_ranks: list[dict]
    curves: list[Curve]
    provenance: dict[str, Any]
    rank_rule: str = RANK_RULE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (table slugs included)."""
        out = asdict(self)
        for t, d in zip(self.tables, out["tables"], strict=True):
            d["slug"] = t.slug
            for sub, sd in zip(t.probes, d["probes"], strict=True):
                sd["slug"] = sub.slug
        return out


def build_board(source: Path | str | list[Entry], n_boot: int = 1000, seed: int = 0) -> Board:
    """Validate every result under ``source`` and turn them into a ranked board."""
    entries = collect(source) if isinstance(source, (str, Path)) else list(source)
    root = Path(source) if isinstance(source, (str, Path)) else None
    labels = row_labels(entries)
    groups: dict[BoardKey, list[Entry]] = defaultdict(list)
    for e in entries:
        groups[e.board_key].append(e)
    tables: dict[BoardKey, Table] = {}
    curves: dict[BoardKey, Curve] = {}
    for key in sorted(groups, key=BoardKey.sort_key):
        full = [e for e in groups[key] if e.train_fraction == 1.0]
        if full:
            tables[key] = _probe_tables(full, labels, root, n_boot, seed)
        curve = _curve(groups[key], labels)
        if curve is not None:
            curves[key] = curve
    _mark_primary(list(tables.values()))
    _unique_slugs(list(tables.values()))
    for t in tables.values():
        for sub in t.probes:  # a probe's table follows its summary: same standing, slug + probe
            sub.primary = t.primary
            sub.slug_suffix = t.slug_suffix + "--" + join_slug(sub.family, sub.view)
    for key, curve in curves.items():
        opts = [key.options_tag] if key.options_tag else []
        curve.slug = tables[key].slug if key in tables else (
            join_slug(key.dataset, key.task, *opts, key.split_hash[:8])
            + f"{_budget_suffix(key.trials, key.dataset_version)}-fractions")
    untabled = [c for k, c in curves.items() if k not in tables]
    for curve, slug in zip(untabled, unique([c.slug for c in untabled], {t.slug for t in tables.values()}),
                           strict=True):
        curve.slug = slug
    tables, curves = list(tables.values()), list(curves.values())
    ranks = mean_ranks([(r.label, t.category, r.rank) for t in tables if t.primary for r in t.rows])
    return Board(tables, ranks, curves, _provenance(entries, n_boot, seed))


def _budget_suffix(trials: int | None, dataset_version: str | None) -> str:
    """``-t20-d1``: trial budget and dataset version for slugs (left out where unknown)."""
    budget = f"-t{trials}" if trials is not None else ""
    return budget + (f"-d{slug_part(dataset_version)}" if dataset_version else "")


def _unique_slugs(tables: list[Table]) -> None:
    """Give tables whose slugs coincide a ``-2``, ``-3``... suffix: slugs name their files."""
    for t in tables:
        t.slug_suffix = ""
    for t, slug in zip(tables, unique([t.slug for t in tables]), strict=True):
        t.slug_suffix = slug[len(t.slug):]


def _by_label(entries: list[Entry], labels: dict, notes: list[str]) -> dict[str, list[Entry]]:
    """Entries per row label, one per seed (the newest wins when a seed appears twice)."""
    out: dict[str, dict[int, Entry]] = defaultdict(dict)
    for e in sorted(entries, key=lambda e: e.result.created):
        label = labels[(e.model_tag, e.weights_tag)]
        if e.seed in out[label]:
            notes.append(f"{label}: seed {e.seed} has several results; the newest ({e.relpath}) is used")
        out[label][e.seed] = e
    return {k: [v[s] for s in sorted(v)] for k, v in sorted(out.items())}


def _metric_cell(entries: list[Entry], name: str) -> Cell:
    vals = [e.result.metrics[name] for e in entries if name in e.result.metrics]
    if not vals:
        return Cell(None)
    if len(vals) == 1:
        return Cell(vals[0].value, vals[0].ci_low, vals[0].ci_high)
    points = [v.value for v in vals if v.value is not None]
    return Cell(float(np.mean(points)) if points else None)  # no honest CI from per-seed CIs


def _table(entries: list[Entry], labels: dict, root: Path | None, n_boot: int, seed: int) -> Table:
    first = entries[0].result
    info = first.task
    notes: list[str] = []
    rows_in = _by_label(entries, labels, notes)
    names = list(rows_in)
    others = {m for es in rows_in.values() for e in es for m in e.result.metrics} - {info.main_metric}
    metric_names = [info.main_metric, *sorted(others)]
    cells = {k: {m: _metric_cell(es, m) for m in metric_names} for k, es in rows_in.items()}
    paired = _paired(rows_in, info, n_boot, seed) if can_score(info) else None
    if paired is not None:
        ranks, better, comparisons, draws, n_cases, n_patients, fewest, y_test, n_classes = paired
        tested = True
        for k in names:
            if len(rows_in[k]) > 1:  # several seeds: the CI comes from the mean-over-seeds draws
                ok = draws[k].draws[np.isfinite(draws[k].draws)]
                lo, hi = np.quantile(ok, [0.025, 0.975]) if len(ok) else (None, None)
                cells[k][info.main_metric] = Cell(draws[k].point, _f(lo), _f(hi))
        if n_cases < fewest:
            notes.append(f"paired comparison on the {n_cases} test cases every model has")
    else:
        tested, comparisons, y_test, n_classes = False, [], None, None
        better = np.zeros((len(names), len(names)), dtype=bool)
        ranks = point_ranks([cells[k][info.main_metric].value for k in names], info.direction)
        counts, patients = first.split.counts, first.split.patients
        n_cases, n_patients = counts.get("test", counts.get("all", 0)), patients.get("test", patients.get("all", 0))
        notes.append(f"not tested: ranks follow point values ({info.category} predictions cannot be read back)")
    values = [cells[k][info.main_metric].value for k in names]
    order = display_order(ranks, values, names, info.direction)
    rows = []
    for i in order:
        k, es = names[i], rows_in[names[i]]
        r = es[-1].result
        overlap = sorted({name for e in es for name in contamination(e)})
        rows.append(Row(
            label=k, model=es[-1].model_tag, weights_tag=es[-1].weights_tag, weights_sha256=r.model.weights.sha256,
            random_init=r.model.weights.random_init, contaminated=bool(overlap),
            seeds=[e.seed for e in es], rank=ranks[i], tie_size=ranks.count(ranks[i]),
            main=cells[k][info.main_metric], metrics=cells[k],
            better_than=[names[j] for j in range(len(names)) if better[i, j]],
            provenance=_row_provenance(es, root), contaminated_by=overlap, card=card_facts(r),
            reference=is_reference(r), seed_given=bool(r.model.card.seed_conditioned), failures=failures(r), family=probe_of(r).family, view=probe_of(r).view,
            validation=validation_value(es), fit_s=fit_seconds(es), tuning=tuning(es),
        ))
    km = [(k, str(path)) for k, es in rows_in.items() if info.category == "survival"
          for path in [_km_file(es[0].folder)] if path is not None]
    return Table(info.dataset, info.name, info.version, info.category, info.main_metric, info.direction,
                 first.split.hash, first.protocol_version, rows, metric_names, tested, n_cases, n_patients,
                 n_boot, notes=notes, comparisons=comparisons, km=km, options_tag=info.options_tag,
                 options=info.options, trials=first.trials_budget, dataset_version=info.dataset_version,
                 chance=chance_level(info.main_metric, y_test, n_classes, (first.protocol or {}).get("chance")))


def _probe_tables(entries: list[Entry], labels: dict, root: Path | None, n_boot: int, seed: int) -> Table:
    """The table of one board key: ranked as one where every result used one (family, view);
    else a summary of each model's validation-chosen (family, view), holding one ranked table
    per (family, view) in ``probes``."""
    groups = by_probe(entries)
    tables = {}
    for probe, es in groups.items():
        tables[probe] = _table(es, labels, root, n_boot, seed)
        tables[probe].family, tables[probe].view = probe
    if len(tables) == 1:
        return next(iter(tables.values()))
    direction = entries[0].result.task.direction
    per_probe = {p: _by_label(es, labels, []) for p, es in groups.items()}
    chosen, notes = choose(per_probe, direction)
    summary = _table([e for c in chosen.values() for e in c.entries], labels, root, n_boot, seed)
    summary.probes = list(tables.values())
    summary.notes = notes + summary.notes
    return summary


def _paired(rows_in: dict[str, list[Entry]], info, n_boot: int, seed: int):
    """Paired bootstrap of the main metric between every pair of rows on their common cases.

    Returns (ranks, better matrix, comparisons, draws per row, cases, patients, the fewest cases
    of one result, the aligned test targets, classes of a multi-class task), or None when the
    predictions cannot be re-scored. Predictions are turned into one row per case first
    (``Scorer.cases``; e.g. retrieval's per-query rows summed per case).
    """
    names, where = list(rows_in), f"{info.dataset}/{info.name}"
    scorer = make_scorer(info, rows_in[names[0]][0].predictions)
    if scorer is None:
        return None
    per_case = {k: [scorer.cases(e.predictions) for e in es] for k, es in rows_in.items()}
    fewest = min(len(f) for fs in per_case.values() for f in fs)
    patients, aligned = align(per_case, where)
    arrays = {k: [scorer.arrays(f) for f in fs] for k, fs in aligned.items()}
    y0 = arrays[names[0]][0][0]
    for k, fs in arrays.items():
        if not all(same_targets(y0, y) for y, _ in fs):
            raise CTBenchError(f"{where}: {k!r} has other targets than {names[0]!r} for the same cases; "
                               f"the results were not computed on the same labels - re-run one of them")
    samples = patient_resamples(patients, n_boot, seed)
    draws = {k: model_draws(scorer.metric, y0, [p for _, p in fs], samples) for k, fs in arrays.items()}
    better = np.zeros((len(names), len(names)), dtype=bool)
    comparisons = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            d = paired_difference(draws[a], draws[names[j]])
            verdict = decide(d, info.direction)
            comparisons.append({"a": a, "b": names[j], **asdict(d), "covers_zero": d.covers_zero,
                                "verdict": verdict})
            better[i, j], better[j, i] = verdict == 1, verdict == -1
    n_classes = None
    if info.kind == "multiclass":
        p0 = np.asarray(arrays[names[0]][0][1])
        n_classes = p0.shape[1] if p0.ndim == 2 else None
    return (significance_ranks(better), better, comparisons, draws, len(patients), len(set(patients)), fewest,
            y0, n_classes)


def decide(d: Difference, direction: str) -> int:
    """1 when A is better than B, -1 when B is better, 0 when indistinguishable.

    Decided from the interval, not the point: the paired 95% interval of A - B, oriented so that
    positive means better (negated for a minimised metric), must lie entirely above zero for A
    (entirely below for B). An undefined interval decides nothing.
    """
    lo, hi = (d.ci_low, d.ci_high) if direction == "maximize" else (-d.ci_high, -d.ci_low)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _km_file(folder: Path) -> Path | None:
    """The Kaplan-Meier figure beside a survival result (``km.png``), else its data (``km.csv``);
    one that is a symlink leading out of the result's folder is ignored (never read into a board)."""
    return next((folder / f for f in KM_FILES if (folder / f).is_file() and _stays_in(folder, f)), None)


def _stays_in(folder: Path, name: str) -> bool:
    try:
        inside(folder, name)
    except CTBenchError:
        return False
    return True


def _f(v) -> float | None:
    return None if v is None else float(v)


def _row_provenance(entries: list[Entry], root: Path | None) -> dict[str, Any]:
    rs = [e.result for e in entries]
    return {
        **run_facts(rs[-1]),
        "weights_sha256": rs[-1].model.weights.sha256,
        "split_hash": rs[-1].split.hash,
        "ctbench_version": sorted({r.ctbench_version for r in rs}),
        "git_sha": sorted({r.git_sha or "unknown" for r in rs}),
        "created": max(r.created for r in rs).isoformat(),
        "results": [e.relpath for e in entries],  # relative to the results folder: boards get published
    }


def _mark_primary(tables: list[Table]) -> None:
    per_task: dict[tuple[str, str], list[Table]] = defaultdict(list)
    for t in tables:
        per_task[(t.dataset, t.task)].append(t)
    for same in per_task.values():
        if len(same) == 1:
            continue
        newest = lambda t: max(r.provenance["created"] for r in t.rows)  # noqa: E731
        same.sort(key=lambda t: (t.options_tag is None, len(t.rows), newest(t)), reverse=True)
        head = same[0]
        for t in same[1:]:
            t.primary = False
            t.notes.append(
                f"not ranked with the main {head.title} table: {'; '.join(_differences(head, t))}. Results "
                f"with another task version, split, protocol, task options, dataset version or trial "
                f"budget are not comparable; excluded from mean ranks"
            )


def _differences(head: Table, t: Table) -> list[str]:
    """``trial budget 50 here, 20 in the main table`` for every key field where ``t`` differs."""
    def budget(n: int | None) -> str:
        return "none (nothing tuned)" if n is None else f"{n} trials"

    fields = [
        ("task version", head.version, t.version),
        ("split", head.split_hash[:12], t.split_hash[:12]),
        ("protocol", head.protocol_version, t.protocol_version),
        ("task options", head.options_tag or "default", t.options_tag or "default"),
        ("dataset version", head.dataset_version or "unknown", t.dataset_version or "unknown"),
        ("trial budget", budget(head.trials), budget(t.trials)),
    ]
    return [f"{name} {mine} here, {main} in the main table" for name, main, mine in fields if main != mine]


def _curve(entries: list[Entry], labels: dict) -> Curve | None:
    if len({e.train_fraction for e in entries}) < 2:
        return None
    info = entries[0].result.task
    series: dict[str, list[dict[str, float | None]]] = defaultdict(list)
    cells: dict[tuple[str, float], list[Entry]] = defaultdict(list)
    several = len({probe_of(e.result) for e in entries}) > 1  # one line per model and probe, never pooled
    for e in entries:
        label = labels[(e.model_tag, e.weights_tag)] + (f" ({probe_of(e.result).short})" if several else "")
        cells[(label, e.train_fraction)].append(e)
    for (label, frac), es in sorted(cells.items()):
        c = _metric_cell(es, info.main_metric)
        series[label].append({"fraction": frac, "value": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high})
    return Curve(info.dataset, info.name, info.main_metric, dict(series), options_tag=info.options_tag,
                 trials=entries[0].result.trials_budget)


def _provenance(entries: list[Entry], n_boot: int, seed: int) -> dict[str, Any]:
    rs = [e.result for e in entries]
    return {
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "builder_ctbench_version": ctbench_version(),
        "builder_git_sha": git_sha(),
        "builder_protocol_version": PROTOCOL_VERSION,
        "results": len(rs),
        "result_ctbench_versions": sorted({r.ctbench_version for r in rs}),
        "result_git_shas": sorted({r.git_sha or "unknown" for r in rs}),
        "protocol_versions": sorted({r.protocol_version for r in rs}),
        "upgraded_from_older_schema": sum(r.migrated_from_schema is not None for r in rs),
        "results_created_first": min(r.created for r in rs).isoformat(),
        "results_created_last": max(r.created for r in rs).isoformat(),
        "paired_bootstrap": {"resamples": n_boot, "seed": seed, "unit": "patient", "level": 0.95},
    }
