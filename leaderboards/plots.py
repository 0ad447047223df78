"""Leaderboard figures as PNG bytes (matplotlib, Agg canvas, no pyplot global state).

A rank heatmap (colour = rank on the task, so tied models share a colour), per-task bars with
95% CI whiskers and the metric's chance level, label-efficiency curves, tuning curves (a panel
per model, a colour per probe family and view) and one Kaplan-Meier figure per model beside
survival results, titled with that model.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ctbench.errors import CTBenchError

from .board import Board, Curve, Table
from .chance import Chance
from .format import row_kind
from .overview import overview

DPI = 100  # with the widths below, figures are shown at their pixel size (no blurry downscaling)
RANDOM_COLOUR, MODEL_COLOUR = "#b0b0b0", "#3b6ea8"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


SHADES = ("#1a7f4b", "#6fbf8e", "#c4e3cf", "#eef4f0", "#f7f7f7")  # winners .. last (see overview.Entry.shade)
KIND_COLOUR = {"model": MODEL_COLOUR, "random": RANDOM_COLOUR, "reference": "#d08c2b"}
CHANCE_COLOUR = "#b3261e"


def rank_matrix(board: Board) -> pd.DataFrame:
    """Models (mean-rank order) x primary tables: the model's rank on the task (NaN: no result)."""
    ov = overview(board)
    return pd.DataFrame({t.title: {r.label: (r.entries[t.slug].rank if t.slug in r.entries else np.nan)
                                   for r in ov.rows} for t in ov.tables}).reindex([r.label for r in ov.rows])


def heatmap(board: Board) -> bytes | None:
    """Ranks of every model on every task, coloured by rank (equal rank = statistically tied, so
    equal colour); each cell shows the rank (``=2`` shared) and the main-metric value."""
    from matplotlib.patches import Rectangle

    ov = overview(board)
    if not ov.tables or not ov.rows:
        return None
    n_rows, n_cols = len(ov.rows), len(ov.tables)
    fig = _figure(max(6.0, 1.5 * n_cols + 3.2), 0.5 * n_rows + 2.0)
    ax = fig.add_subplot()
    for i, row in enumerate(ov.rows):
        for j, t in enumerate(ov.tables):
            e = row.entries.get(t.slug)
            colour = "white" if e is None else SHADES[e.shade]
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=colour, edgecolor="white", linewidth=2))
            if e is not None:
                rank = f"={e.rank}" if e.tie_size > 1 else str(e.rank)
                ax.text(j, i, f"{rank}  {_num(e.cell.value)}", ha="center", va="center", fontsize=9,
                        color="white" if e.shade == 0 else "#1f2933", fontweight="bold" if e.winner else "normal")
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_xticks(range(n_cols), [_t(f"{t.title}\n({t.main_metric})") for t in ov.tables], rotation=20, ha="right",
                  fontsize=9)
    ax.set_yticks(range(n_rows), [_row_label(r.label, r.kind) for r in ov.rows], fontsize=9)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("Rank per task (1 = best; equal rank and colour = statistically tied)", fontsize=10)
    return _png(fig)


def _num(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _t(text: object) -> str:
    """Text from result files shown literally (a ``$`` would start matplotlib mathtext)."""
    return str(text).replace("$", r"\$")


def _row_label(label: str, kind: str) -> str:
    """The label with its kind, unless the label already says it (``model (random)``)."""
    mark = {"random": " [random init]", "reference": " [reference]"}.get(kind, "")
    return _t(label) + ("" if kind == "random" and label.endswith("(random)") else mark)


def bars(table: Table) -> bytes:
    """Horizontal bars of the main metric with 95% CI whiskers, in board order, with the
    metric's chance level as a dashed line (see :mod:`.chance`)."""
    rows = table.rows[::-1]
    fig = _figure(6.4, max(2.2, 0.45 * len(rows) + 1.5))
    ax = fig.add_subplot()
    vals = np.array([np.nan if r.main.value is None else r.main.value for r in rows], dtype=float)
    lower = [0.0 if r.main.ci_low is None or r.main.value is None else r.main.value - r.main.ci_low for r in rows]
    upper = [0.0 if r.main.ci_high is None or r.main.value is None else r.main.ci_high - r.main.value for r in rows]
    kinds = [row_kind(r) for r in rows]
    ax.barh(range(len(rows)), np.nan_to_num(vals), xerr=np.vstack([lower, upper]),
            color=[KIND_COLOUR[k] for k in kinds], hatch=[("//" if k == "random" else "") for k in kinds],
            edgecolor="white", capsize=3)
    ax.set_yticks(range(len(rows)), [f"{'=' if r.tie_size > 1 else ''}{r.rank}. {_row_label(r.label, k)}"
                                     for r, k in zip(rows, kinds, strict=True)])
    if table.chance is not None:
        ax.axvline(table.chance.value, color=CHANCE_COLOUR, linestyle="--", linewidth=1.2,
                   label=f"chance {table.chance.value:.3g}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(_t(f"{table.main_metric} (95% CI)") + (" - lower is better" if table.direction == "minimize" else ""))
    fig.suptitle(_t(f"{table.title}: {table.main_metric}"), fontsize=11)
    return _png(fig)


def efficiency(curve: Curve, chance: Chance | None = None) -> bytes:
    """Main metric against training fraction (log axis), one line per model, CI whiskers and the
    chance level."""
    fig = _figure(6.4, 3.8)
    ax = fig.add_subplot()
    for label, pts in sorted(curve.series.items()):
        x = [p["fraction"] for p in pts]
        y = [np.nan if p["value"] is None else p["value"] for p in pts]
        lower = [0.0 if p["ci_low"] is None or p["value"] is None else p["value"] - p["ci_low"] for p in pts]
        upper = [0.0 if p["ci_high"] is None or p["value"] is None else p["ci_high"] - p["value"] for p in pts]
        ax.errorbar(x, y, yerr=[lower, upper], marker="o", capsize=3, label=_t(label))
    if chance is not None:
        ax.axhline(chance.value, color=CHANCE_COLOUR, linestyle="--", linewidth=1.2, label=f"chance {chance.value:.3g}")
    ax.set_xscale("log")
    fractions = sorted({p["fraction"] for pts in curve.series.values() for p in pts})
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("training fraction")
    ax.set_ylabel(_t(curve.main_metric))
    fig.suptitle(_t(f"Label efficiency: {curve.title}"), fontsize=11)
    ax.legend(fontsize=8)
    return _png(fig)


PROBE_COLOURS = ("#3b6ea8", "#d08c2b", "#1a7f4b", "#8e44ad", "#b3261e", "#52606d")
TUNING_COLUMNS = 2


def tuning_series(table: Table) -> dict[str, list[tuple[str, dict]]]:
    """Row label (board order) -> ``(probe, curve)`` per (family, view) with a recorded curve."""
    tables = table.probes or [table]
    out: dict[str, list[tuple[str, dict]]] = {}
    for r in table.rows:
        series = [(t.probe.short if t.probe else "probe", tr.tuning) for t in tables for tr in t.rows
                  if tr.label == r.label and tr.tuning]
        if series:
            out[r.label] = series
    return out


def tuning(table: Table) -> bytes | None:
    """Tuning curves of a task: a panel per model (shared value axis), in each the best
    validation value so far (solid) and the expected best of n trials (dashed, Dodge et al.
    2019) against trials, one colour per probe family and view; None when no row has a curve."""
    series = tuning_series(table)
    if not series:
        return None
    used = {p for s in series.values() for p, _ in s}
    order = [t.probe.short if t.probe else "probe" for t in (table.probes or [table])]
    probes = [p for p in order if p in used]
    colour = {p: PROBE_COLOURS[i % len(PROBE_COLOURS)] for i, p in enumerate(probes)}
    n_cols = min(TUNING_COLUMNS, len(series))
    n_rows = -(-len(series) // n_cols)
    fig = _figure(6.4, 2.3 * n_rows + 0.9)
    axes = fig.subplots(n_rows, n_cols, sharey=True, squeeze=False)
    for ax, (label, curves) in zip(axes.flat, series.items()):
        for probe, c in curves:
            n = np.arange(1, len(c["best_so_far"]) + 1)
            ax.step(n, c["best_so_far"], where="post", color=colour[probe], linewidth=1.6)
            ax.plot(n, c["expected_max"], color=colour[probe], linestyle="--", linewidth=1.2)
        ax.set_title(_t(label), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes.flat[len(series):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("trials", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(_t(f"validation {table.main_metric}"), fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[p], linewidth=1.6, label=_t(p)) for p in probes]
    handles += [Line2D([], [], color="#1f2933", linewidth=1.6, label="best so far"),
                Line2D([], [], color="#1f2933", linestyle="--", linewidth=1.2, label="expected best of n")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8)
    fig.suptitle(_t(f"Tuning curves: {table.title}"), fontsize=11)
    return _png(fig)


def kaplan_meier(label: str, path: Path | str) -> bytes:
    """A result's KM figure: ``km.png`` as is, or ``km.csv`` (time, survival[, group]) drawn."""
    path = Path(path)
    if path.suffix == ".png":
        return path.read_bytes()
    frame = pd.read_csv(path)
    missing = [c for c in ("time", "survival") if c not in frame.columns]
    if missing:
        raise CTBenchError(f"{path}: Kaplan-Meier data lacks column(s) {', '.join(missing)}; "
                           f"write columns time, survival and optionally group")
    if "group" not in frame.columns:
        frame = frame.assign(group="all")
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    for group, part in frame.groupby("group", sort=True):
        part = part.sort_values("time")
        ax.step(part["time"], part["survival"], where="post", label=_t(group))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    fig.suptitle(_t(f"Kaplan-Meier by predicted risk: {label}"), fontsize=11)
    ax.legend(fontsize=8)
    return _png(fig)


def all_figures(board: Board) -> dict[str, bytes]:
    """Every figure of ``board`` by key: ``heatmap``, ``bars:<slug>``, ``tuning:<slug>``,
    ``curve:<slug>``, ``km:<slug>:<n>``."""
    figs: dict[str, bytes] = {}
    hm = heatmap(board)
    if hm is not None:
        figs["heatmap"] = hm
    for t in board.tables:
        figs[f"bars:{t.slug}"] = bars(t)
        curves = tuning(t)
        if curves is not None:
            figs[f"tuning:{t.slug}"] = curves
        for n, (label, path) in enumerate(t.km):
            figs[f"km:{t.slug}:{n}"] = kaplan_meier(label, path)
    chance = {t.slug: t.chance for t in board.tables}
    for c in board.curves:
        figs[f"curve:{c.slug}"] = efficiency(c, chance.get(c.slug))
    return figs
