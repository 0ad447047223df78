"""How much faster is the vectorised patient-level bootstrap, and does it give the same numbers?

    python benchmarks/bootstrap.py            # a table
    python benchmarks/bootstrap.py --json     # the same as JSON

Runs the old per-resample loop (a faithful copy below, the reference) and the new
``bootstrap_metrics`` on the same seed for a 200-patient test split (some patients with two
scans): multi-label (5 labels, one rare), binary, regression (one and two targets), and the
paired leaderboard draws (3 seeds). Prints the time of each, the speed-up and the largest
absolute difference of any resample value or interval end (NaN resamples must coincide).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Callable

import numpy as np

from ctbench.bootstrap import bootstrap_draws, bootstrap_metrics
from ctbench.leaderboards.paired import model_draws
from ctbench.tasks.classification import classification_metrics
from ctbench.tasks.regression import regression_metrics
from ctbench.tasks.survival import SurvivalTask

# --- the old implementation, kept verbatim as the reference --------------------------------


def old_patient_resamples(groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    groups = np.asarray(groups).astype(str)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    return [np.concatenate([members[g] for g in row]) for row in draws]


def old_safe(fn: Callable, y: np.ndarray, p: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(fn(y, p))
        except ValueError:
            return float("nan")


def old_bootstrap(metrics: dict, y, pred, groups, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """The old ``bootstrap_metrics`` loop; also keeps each metric's resample values."""
    y, pred = np.asarray(y), np.asarray(pred)
    samples = old_patient_resamples(groups, n_boot, seed)
    out = {}
    for name, fn in metrics.items():
        point = old_safe(fn, y, pred)
        vals = np.array([old_safe(fn, y[idx], pred[idx]) for idx in samples])
        ok = vals[np.isfinite(vals)]
        lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2]) if len(ok) else (float("nan"),) * 2
        out[name] = (point, float(lo), float(hi), len(ok), vals)
    return out


def old_model_draws(metric: Callable, y, preds: list, samples: list) -> tuple[float, np.ndarray]:
    y = np.asarray(y)
    point = float(np.mean([old_safe(metric, y, p) for p in preds]))
    draws = np.array([np.mean([old_safe(metric, y[idx], np.asarray(p)[idx]) for p in preds]) for idx in samples])
    return point, draws


# --- data ----------------------------------------------------------------------------------


def split(n_patients: int, seed: int) -> np.ndarray:
    """Patient id of each case: every patient once, a quarter of them with a second scan."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([np.arange(n_patients), rng.choice(n_patients, n_patients // 4, replace=False)]))


def cases(groups: np.ndarray, seed: int) -> dict[str, tuple[dict, np.ndarray, np.ndarray]]:
    """Metric sets with targets and scores (rounded: tied scores) for each benchmark case."""
    rng = np.random.default_rng(seed)
    n = len(groups)
    y_ml = (rng.random((n, 5)) < np.array([0.4, 0.25, 0.1, 0.5, 0.02])).astype(int)
    p_ml = np.round(np.clip(0.35 * y_ml + 0.65 * rng.random((n, 5)), 0, 1), 2)
    y_b = y_ml[:, 0]
    y_r = rng.normal(size=(n, 2))
    p_r = y_r + rng.normal(scale=0.8, size=(n, 2))
    t = rng.choice(np.arange(30.0, 1500.0, 30.0), size=n)  # coarse days: tied times
    y_s = np.stack([t, (rng.random(n) < 0.7).astype(float)], axis=1)
    risk = np.round(-t / 500 + rng.normal(size=n), 2)
    return {
        "multilabel (5 labels)": (classification_metrics("multilabel"), y_ml, p_ml),
        "binary": (classification_metrics("binary"), y_b, p_ml[:, 0]),
        "regression (1 target)": (regression_metrics(), y_r[:, 0], p_r[:, 0]),
        "regression (2 targets)": (regression_metrics(), y_r, p_r),
        "survival (C-index, 3 td-AUC)": (survival_metrics(), y_s, risk),
    }


def survival_metrics() -> dict:
    """The survival task's metrics at three horizons (as a dataset card would give them)."""
    from ctbench.datasets import TaskSpec

    spec = TaskSpec(name="s", category="survival", targets=("time", "event"), main_metric="c_index",
                    horizons=(365.0, 730.0, 1095.0))
    return SurvivalTask.for_scoring(spec).metrics()


# --- comparison ----------------------------------------------------------------------------


def _best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    """Largest |a - b| over finite entries, and whether the NaN entries coincide."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
    ok = np.isfinite(a) & np.isfinite(b)
    return (float(np.max(np.abs(a[ok] - b[ok]))) if ok.any() else 0.0), same_nan


def compare(name: str, metrics: dict, y, p, groups, n_boot: int, seed: int) -> dict:
    """Time old vs new on one case and measure their largest difference."""
    t0 = time.perf_counter()
    old = old_bootstrap(metrics, y, p, groups, n_boot, seed)
    t_old = time.perf_counter() - t0
    t_new = _best_time(lambda: bootstrap_metrics(metrics, y, p, groups, n_boot, seed))
    new_est = bootstrap_metrics(metrics, y, p, groups, n_boot, seed)
    new_draws = bootstrap_draws(metrics, y, p, groups, n_boot, seed)
    worst, same_nan, same_n = 0.0, True, True
    for k, (point, lo, hi, n_ok, vals) in old.items():
        e = new_est[k]
        for d, s in (_diff(new_draws[k][1], vals), _diff([e.value, e.ci_low, e.ci_high], [point, lo, hi])):
            worst, same_nan = max(worst, d), same_nan and s
        same_n = same_n and e.n_boot == n_ok
    return {"case": name, "metrics": len(metrics), "old_s": t_old, "new_s": t_new, "speedup": t_old / t_new,
            "max_abs_diff": worst, "nan_match": same_nan and same_n}


def compare_paired(groups: np.ndarray, n_boot: int, seed: int) -> dict:
    """The leaderboard's paired draws (binary AUROC, 3 seeds) old vs new on the same resamples."""
    rng = np.random.default_rng(seed + 1)
    n = len(groups)
    y = (rng.random(n) < 0.3).astype(int)
    preds = [np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 2) for _ in range(3)]
    samples = old_patient_resamples(groups, n_boot, seed)
    metric = classification_metrics("binary")["auroc"]
    t0 = time.perf_counter()
    point, draws = old_model_draws(metric, y, preds, samples)
    t_old = time.perf_counter() - t0
    t_new = _best_time(lambda: model_draws(metric, y, preds, samples))
    new = model_draws(metric, y, preds, samples)
    d1, s = _diff(new.draws, draws)
    d2, _ = _diff([new.point], [point])
    return {"case": "paired draws (AUROC, 3 seeds)", "metrics": 1, "old_s": t_old, "new_s": t_new,
            "speedup": t_old / t_new, "max_abs_diff": max(d1, d2), "nan_match": s}


def main(argv: list[str] | None = None) -> dict:
    """Run every case and print the table (or JSON); returns the summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    groups = split(args.patients, args.seed)
    rows = [compare(name, m, y, p, groups, args.n_boot, args.seed)
            for name, (m, y, p) in cases(groups, args.seed).items()]
    rows.append(compare_paired(groups, args.n_boot, args.seed))
    old_total, new_total = sum(r["old_s"] for r in rows), sum(r["new_s"] for r in rows)
    summary = {"patients": args.patients, "cases": len(groups), "n_boot": args.n_boot, "rows": rows,
               "old_total_s": old_total, "new_total_s": new_total, "speedup": old_total / new_total,
               "max_abs_diff": max(r["max_abs_diff"] for r in rows), "nan_match": all(r["nan_match"] for r in rows)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return summary
    print(f"{args.patients} patients, {len(groups)} cases, {args.n_boot} resamples, seed {args.seed}")
    print(f"{'case':32} {'metrics':>7} {'old s':>8} {'new s':>8} {'speed-up':>9} {'max |diff|':>11} {'NaN match':>9}")
    for r in rows:
        print(f"{r['case']:32} {r['metrics']:>7} {r['old_s']:>8.3f} {r['new_s']:>8.4f} {r['speedup']:>8.0f}x "
              f"{r['max_abs_diff']:>11.1e} {str(r['nan_match']):>9}")
    print(f"{'total':32} {'':>7} {old_total:>8.3f} {new_total:>8.4f} {summary['speedup']:>8.0f}x "
          f"{summary['max_abs_diff']:>11.1e} {str(summary['nan_match']):>9}")
    return summary


if __name__ == "__main__":
    main()
