"""Leaderboard figures as PNG bytes (matplotlib, Agg canvas, no pyplot global state).

Heatmap of normalised main-metric scores, per-task bars with 95% CI whiskers, label-efficiency
curves and Kaplan-Meier curves found beside survival results.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ctbench.errors import CTBenchError

from .board import Board, Curve, Table
from .ranking import oriented

DPI = 110
RANDOM_COLOUR, MODEL_COLOUR = "#b0b0b0", "#3b6ea8"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def normalised_scores(board: Board) -> pd.DataFrame:
    """Models x tasks, main metric scaled per task to [0, 1] with 1 = best (direction-aware).

    Only tables counted in mean ranks take part; a task where all models tie scores 1 for all.
    """
    columns = {}
    for t in board.tables:
        if not t.primary:
            continue
        o = {r.label: oriented(r.main.value, t.direction) for r in t.rows}
        finite = [v for v in o.values() if np.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        columns[t.title] = {k: (np.nan if not np.isfinite(v) else 1.0 if hi == lo else (v - lo) / (hi - lo))
                            for k, v in o.items()}
    order = [r["model"] for r in board.mean_ranks]
    return pd.DataFrame(columns).reindex(order)


def heatmap(board: Board) -> bytes | None:
    """Normalised scores of every model on every task, raw values written in the cells."""
    scores = normalised_scores(board)
    if scores.empty:
        return None
    raw = {t.title: {r.label: r.main.value for r in t.rows} for t in board.tables if t.primary}
    n_rows, n_cols = scores.shape
    fig = _figure(max(4.5, 1.3 * n_cols + 2.5), max(2.2, 0.45 * n_rows + 1.4))
    ax = fig.add_subplot()
    im = ax.imshow(scores.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(n_cols), list(scores.columns), rotation=30, ha="right")
    ax.set_yticks(range(n_rows), list(scores.index))
    for i, model in enumerate(scores.index):
        for j, task in enumerate(scores.columns):
            v = raw[task].get(model)
            if v is not None and np.isfinite(v):
                s = scores.iloc[i, j]
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                        color="black" if s > 0.6 else "white")
    fig.colorbar(im, ax=ax, label="normalised score (1 = best)")
    ax.set_title("Main metric per task, normalised")
    return _png(fig)


def bars(table: Table) -> bytes:
    """Horizontal bars of the main metric with 95% CI whiskers, in board order."""
    rows = table.rows[::-1]
    fig = _figure(6.4, max(1.8, 0.42 * len(rows) + 1.1))
    ax = fig.add_subplot()
    vals = np.array([np.nan if r.main.value is None else r.main.value for r in rows], dtype=float)
    lower = [0.0 if r.main.ci_low is None or r.main.value is None else r.main.value - r.main.ci_low for r in rows]
    upper = [0.0 if r.main.ci_high is None or r.main.value is None else r.main.ci_high - r.main.value for r in rows]
    colours = [RANDOM_COLOUR if r.random_init else MODEL_COLOUR for r in rows]
    ax.barh(range(len(rows)), np.nan_to_num(vals), xerr=np.vstack([lower, upper]), color=colours, capsize=3)
    ax.set_yticks(range(len(rows)), [f"{r.rank}. {r.label}" for r in rows])
    ax.set_xlabel(f"{table.main_metric} (95% CI)" + (" - lower is better" if table.direction == "minimize" else ""))
    ax.set_title(table.title)
    return _png(fig)


def efficiency(curve: Curve) -> bytes:
    """Main metric against training fraction (log axis), one line per model, CI whiskers."""
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    for label, pts in sorted(curve.series.items()):
        x = [p["fraction"] for p in pts]
        y = [np.nan if p["value"] is None else p["value"] for p in pts]
        lower = [0.0 if p["ci_low"] is None or p["value"] is None else p["value"] - p["ci_low"] for p in pts]
        upper = [0.0 if p["ci_high"] is None or p["value"] is None else p["ci_high"] - p["value"] for p in pts]
        ax.errorbar(x, y, yerr=[lower, upper], marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    fractions = sorted({p["fraction"] for pts in curve.series.values() for p in pts})
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("training fraction")
    ax.set_ylabel(curve.main_metric)
    ax.set_title(f"Label efficiency: {curve.title}")
    ax.legend(fontsize=8)
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
    fig = _figure(6.0, 3.4)
    ax = fig.add_subplot()
    for group, part in frame.groupby("group", sort=True):
        part = part.sort_values("time")
        ax.step(part["time"], part["survival"], where="post", label=str(group))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_title(f"Kaplan-Meier: {label}")
    ax.legend(fontsize=8)
    return _png(fig)


def all_figures(board: Board) -> dict[str, bytes]:
    """Every figure of ``board`` by key: ``heatmap``, ``bars:<slug>``, ``curve:<slug>``,
    ``km:<slug>:<n>``."""
    figs: dict[str, bytes] = {}
    hm = heatmap(board)
    if hm is not None:
        figs["heatmap"] = hm
    for t in board.tables:
        figs[f"bars:{t.slug}"] = bars(t)
        for n, (label, path) in enumerate(t.km):
            figs[f"km:{t.slug}:{n}"] = kaplan_meier(label, path)
    for c in board.curves:
        figs[f"curve:{c.slug}"] = efficiency(c)
    return figs
