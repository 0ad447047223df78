"""Display text shared by every output format; values are rounded here and only here."""

from __future__ import annotations

import math

from ctbench.portable import portable_text

from .board import Board, Cell, Row, Table


def public(text: str) -> str:
    """Free text from a result (a note, a failure reason) with local paths made portable: what
    a page that may be published shows."""
    return portable_text(text)

FLAG_LEGEND = {
    "random init": "random-initialisation control (no pre-trained weights)",
    "reference": "a baseline or control whose model card says it learnt from nothing (supervision \"none\")",
    "contaminated": "the model card lists this task's dataset, or a collection it is drawn from, among its pre-training data",
    "seeds": "mean over several probe seeds",
    "seed given": "seed-conditioned: the model encodes the region around a point the dataset gives per case "
                  "(e.g. a reader's click near the finding), so it is told where to look",
}


def num(v: float | None, digits: int = 3) -> str:
    """``v`` rounded for display; ``n/a`` where undefined."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def with_ci(cell: Cell) -> str:
    """``0.812 [0.750, 0.871]`` (interval left out when unknown)."""
    if cell.ci_low is None or cell.ci_high is None:
        return num(cell.value)
    return f"{num(cell.value)} [{num(cell.ci_low)}, {num(cell.ci_high)}]"


def rank_text(row: Row) -> str:
    """``=2`` for a rank shared by a tie group, ``2`` otherwise."""
    return f"={row.rank}" if row.tie_size > 1 else str(row.rank)


def flags(row: Row, table: Table) -> list[str]:
    out = []
    if row.random_init:
        out.append("random init")
    if row.reference:
        out.append("reference")
    if row.contaminated:
        out.append("contaminated")
    if row.seed_given:
        out.append("seed given")
    if len(row.seeds) > 1:
        out.append(f"{len(row.seeds)} seeds")
    return out


def heading(table: Table) -> str:
    """Task title; a table that stands apart from the main one adds what identifies it (task
    and dataset version, split, protocol, trial budget), so no two headings are the same."""
    if table.primary:
        return table.title
    parts = [f"task v{table.version}", f"split {table.split_hash[:8]}", f"protocol {table.protocol_version}"]
    if table.dataset_version:
        parts.insert(1, f"dataset v{table.dataset_version}")
    if table.trials is not None:
        parts.append(f"{table.trials} trials")
    return f"{table.title} ({', '.join(parts)})"


def direction_text(direction: str) -> str:
    return "higher is better" if direction == "maximize" else "lower is better"


def caption(table: Table) -> str:
    """One line saying what was compared, on what, and how ties were decided."""
    test = (f"paired patient-level bootstrap, {table.n_boot} resamples" if table.tested
            else "not tested (no paired predictions)")
    return (
        f"main metric {table.main_metric} ({direction_text(table.direction)}); category {table.category}; "
        f"task version {table.version}; split {table.split_hash[:12]}; protocol {table.protocol_version}; "
        + (f"task options {table.options_tag}; " if table.options_tag else "") +
        f"{table.n_cases} test cases from {table.n_patients} patients; ties: {test}"
    )


def tie_summary(table: Table) -> str:
    """``tie groups: {a, b} share rank 2`` or ``no ties``."""
    groups: dict[int, list[str]] = {}
    for r in table.rows:
        groups.setdefault(r.rank, []).append(r.label)
    shared = [f"{{{', '.join(v)}}} share rank {k}" for k, v in sorted(groups.items()) if len(v) > 1]
    return "tie groups: " + "; ".join(shared) if shared else "no ties"


def probe_heading(table: Table) -> str:
    """``linear probe on cls`` for a table of one (family, view); ``best probe per model (chosen
    on validation)`` for a summary."""
    return table.probe.title if table.probe is not None else "best probe per model (chosen on validation)"


def summary_text(table: Table) -> str:
    """What a summary table shows and how each model's probe was chosen."""
    probes = ", ".join(t.probe.short for t in table.probes if t.probe is not None)
    return (f"Each model once, with the probe family and feature view ({probes}) whose best validation "
            f"{table.main_metric} is best for that model: the choice uses validation values only, then the "
            f"chosen probe's test value is shown. The table of each probe is ranked on its own below; "
            f"probes are never ranked against each other.")


def seconds(v: float | None) -> str:
    """``0.12 s`` (three significant digits); ``n/a`` where unknown."""
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3g} s"


def has_fit_times(table: Table) -> bool:
    return any(r.fit_s is not None for r in table.rows)


def extra_header(table: Table) -> list[str]:
    """Columns after the metrics: the chosen probe and its validation value (summaries), and the
    median fit seconds per tuning trial (where recorded)."""
    out = ["probe", f"validation {table.main_metric}"] if table.is_summary else []
    return out + (["fit per trial (median)"] if has_fit_times(table) else [])


def extra_cells(row: Row, table: Table) -> list[str]:
    out = [row.probe.short, num(row.validation)] if table.is_summary else []
    return out + ([seconds(row.fit_s)] if has_fit_times(table) else [])


def table_header(table: Table) -> list[str]:
    return ["rank", "model", f"{table.main_metric} (95% CI)", *table.metric_names[1:], *extra_header(table), "flags"]


def table_cells(table: Table) -> list[list[str]]:
    """Display rows of a task table in board order."""
    out = []
    for r in table.rows:
        others = [with_ci(r.metrics[m]) for m in table.metric_names[1:]]
        out.append([rank_text(r), r.label, with_ci(r.main), *others, *extra_cells(r, table),
                    ", ".join(flags(r, table))])
    return out


def provenance_cells(table: Table) -> list[list[str]]:
    """Per row: weights sha256, split hash, seeds, ctbench version, git sha, created, files."""
    out = []
    for r in table.rows:
        p = r.provenance
        out.append([
            r.label, p["weights_sha256"], p["split_hash"], ", ".join(map(str, r.seeds)),
            ", ".join(p["ctbench_version"]), ", ".join(p["git_sha"]), p["created"], ", ".join(p["results"]),
        ])
    return out


PROVENANCE_HEADER = ["model", "weights sha256", "split hash", "seeds", "ctbench", "git sha", "created", "result files"]


def row_kind(row: Row) -> str:
    """``random`` (random-init control), ``reference`` (card supervision none) or ``model``."""
    return "random" if row.random_init else "reference" if row.reference else "model"


def count(n: int | None) -> str:
    """``86.4M``, ``1.2B``, ``350k``: a parameter count for a table cell; ``n/a`` when unknown."""
    if n is None:
        return "n/a"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _dims(v: object, unit: str = "") -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return "\u00d7".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) + unit
    return f"{v:g}{unit}" if isinstance(v, (int, float)) else str(v)


def input_text(card: dict) -> str:
    """``224\u00d7224\u00d7160 at 1.5\u00d71.5\u00d73 mm``: the model's input grid as its card states it."""
    size, spacing = _dims(card.get("input_size")), _dims(card.get("spacing_mm"), " mm")
    if size and spacing:
        return f"{size} at {spacing}" if size != spacing else size
    return size or spacing or "n/a"


def card_text(card: dict) -> dict[str, str]:
    """Display text of the model-card columns: parameters, licence, supervision, pre-training, input."""
    data = card.get("pretraining_datasets") or []
    return {
        "parameters": count(card.get("parameters")),
        "licence": card.get("licence") or "n/a",
        "supervision": card.get("supervision") or "n/a",
        "pre-training data": ", ".join(data) if data else "none listed",
        "input size": input_text(card),
    }


CARD_COLUMNS = ["parameters", "licence", "supervision", "pre-training data", "input size"]


def _commit(sha: str | None) -> str:
    """The first 12 hex digits of a commit, keeping a ``-dirty`` mark."""
    sha = sha or "unknown"
    return sha[:12] + ("-dirty" if sha.endswith("-dirty") and len(sha) > 18 else "")


def provenance_items(row: Row, table: Table) -> list[tuple[str, str]]:
    """Per row, label and text: ctbench version and commit, adapter, weights, protocol, split,
    budget, precision, bootstrap, seeds, created; result files only as paths relative to the
    results folder (a published page holds no local path)."""
    p = row.provenance
    adapter = p.get("adapter") or {}
    adapter_text = " ".join(x for x in (adapter.get("package"), adapter.get("version")) if x) or "not recorded"
    if adapter.get("commit"):
        adapter_text += f" (commit {_commit(adapter['commit'])})"
    weights = "random (random-initialisation control)" if row.random_init else p["weights_sha256"]
    if p.get("weights_revision"):
        weights += f" (revision {p['weights_revision']})"
    budget = p["trials"] if "trials" in p else table.trials
    items = [
        ("ctbench", f"{', '.join(p['ctbench_version'])} (commit {', '.join(map(_commit, p['git_sha']))})"),
        ("adapter", adapter_text),
        ("weights sha256", weights),
        ("protocol", str(p.get("protocol_version") or table.protocol_version)),
        ("split hash", p["split_hash"]),
        ("budget", "nothing tuned" if budget is None else f"{budget} Optuna trials"
         + (f", probe {p['probe']}" if p.get("probe") else "")),
        ("precision", p.get("precision") or "not recorded"),
        ("bootstrap", f"{p['bootstrap']} resamples" if p.get("bootstrap") else "not recorded"),
        ("seeds", ", ".join(map(str, row.seeds))),
        ("created", p["created"]),
    ]
    local = [f for f in p["results"] if not _is_local(f)]
    if local:
        items.append(("result files", ", ".join(local)))
    return items


def _is_local(path: str) -> bool:
    """An absolute or home-relative path (never shown on a page that may be published)."""
    return path.startswith(("/", "~", "\\")) or (len(path) > 2 and path[1] == ":" and path[2] in "\\/")


def provenance_summary(row: Row) -> str:
    """One short line for a collapsed provenance cell: ctbench version, commit, precision."""
    p = row.provenance
    return f"ctbench {', '.join(p['ctbench_version'])} \u00b7 {p['git_sha'][0][:7]}" + (
        f" \u00b7 {p['precision']}" if p.get("precision") else "")


def winners(table: Table) -> list[str]:
    """Labels of the rank-1 tie group: the task's winner(s)."""
    return [r.label for r in table.rows if r.rank == 1]


def chance_text(table: Table) -> str:
    """``chance level of auroc: 0.500 (a random score ...)``, or why no line is drawn."""
    if table.chance is None:
        return (f"no chance line: {table.main_metric} has no chance level that holds for every data set; "
                f"compare with the reference rows")
    return f"chance level of {table.main_metric}: {num(table.chance.value)} ({table.chance.reason})"


def mean_rank_header(board: Board) -> list[str]:
    cats = sorted({c for r in board.mean_ranks for c in r["categories"]})
    return ["model", "overall mean rank", "tasks", *cats]


def mean_rank_cells(board: Board) -> list[list[str]]:
    cats = mean_rank_header(board)[3:]
    return [
        [r["model"], num(r["overall"], 2), str(r["tasks"]), *(num(r["categories"].get(c), 2) for c in cats)]
        for r in board.mean_ranks
    ]


def footer_lines(board: Board) -> list[str]:
    """The provenance footer: who built the board from what, when, and how ranks were decided."""
    p = board.provenance
    pb = p["paired_bootstrap"]
    return [
        f"Built {p['built']} by ctbench {p['builder_ctbench_version']} (git {p['builder_git_sha'] or 'unknown'}, "
        f"protocol {p['builder_protocol_version']}) from {p['results']} result files.",
        f"Results written by ctbench {', '.join(p['result_ctbench_versions'])} "
        f"(git {', '.join(p['result_git_shas'])}); protocol version(s) {', '.join(p['protocol_versions'])}; "
        f"created {p['results_created_first']} to {p['results_created_last']}"
        + (f"; {n} upgraded from an older result schema" if (n := p["upgraded_from_older_schema"]) else "")
        + ".",
        f"Paired bootstrap: {pb['resamples']} {pb['unit']}-level resamples (seed {pb['seed']}), "
        f"{int(pb['level'] * 100)}% intervals. {board.rank_rule}",
        "Values are computed from result files and rounded only for display.",
    ]


def tuning_alt(table: Table) -> str:
    """Alt text of a task's tuning-curve figure: what is drawn, for which models and probes."""
    tables = table.probes or [table]
    labels = [r.label for r in table.rows if any(tr.label == r.label and tr.tuning for t in tables for tr in t.rows)]
    probes = [t.probe.short for t in tables if t.probe is not None and any(r.tuning for r in t.rows)]
    return (f"tuning curves, one panel per model ({', '.join(labels)}): best validation {table.main_metric} "
            f"so far (solid) and expected best of n trials (dashed) against Optuna trials"
            + (f", one colour per probe ({', '.join(probes)})" if probes else ""))


def tuning_caption(table: Table) -> str:
    """Caption of a task's tuning-curve figure: how to read it."""
    return (f"Tuning curves: validation {table.main_metric} against the number of Optuna trials. Solid: best so "
            f"far in trial order; dashed: expected best of n trials drawn from the budget's trials (Dodge et al. "
            f"2019). A curve still rising at the budget means more tuning could change the ranking.")
