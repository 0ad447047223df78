"""Retrieval metrics re-scored per case from predictions.csv (the leaderboards' paired bootstrap).

Retrieval writes one row per query (``protocol``, ``label``, ``case_id``, ``patient_id`` and
per-query ``recall@k`` / ``ap``); a metric is the mean of one column over one protocol's rows.
Which queries exist, and their sampled positives and negatives, depend on the labels, patients
and seed only, not on the embeddings: two models' queries are the same. Summed per case they
give one row per case (:func:`per_case`): ``queries`` (how many) and, per metric of the
protocol, the sum of its values. On any set of cases a metric is then the ratio of the summed
sums to the summed counts, which is the mean over those cases' queries: resampling patients of
these rows is the task's own query-patient bootstrap.

The scoring layout: ``y`` = queries per case ``(n,)`` (the same for every model), ``pred`` =
the per-case sums ``(n, M)`` of the protocol's ``M`` metrics, in :func:`protocol_metrics` order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctbench.bootstrap import MetricFn
from ctbench.errors import CTBenchError

KS = (1, 5, 10)
QUERIES = "queries"


def protocol_metrics(protocol: str) -> dict[str, str]:
    """Metric name -> per-query column, for one protocol (``label`` or ``instance``)."""
    out = {f"{protocol}_recall@{k}": f"recall@{k}" for k in KS}
    return out | ({"instance_map": "ap"} if protocol == "instance" else {})


def protocol_of(metric: str) -> str:
    """The protocol whose queries ``metric`` averages over."""
    for protocol in ("label", "instance"):
        if metric in protocol_metrics(protocol):
            return protocol
    raise CTBenchError(f"{metric!r} is not a retrieval metric")


def per_case(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """One row per case with queries of ``protocol``: ``case_id``, ``patient_id``, ``queries``
    and, per metric of the protocol, the sum of its per-query values."""
    columns = protocol_metrics(protocol)
    need = ["protocol", "case_id", "patient_id", *columns.values()]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise CTBenchError(f"retrieval predictions lack column(s) {', '.join(missing)}; re-run the result")
    rows = frame[frame["protocol"] == protocol]
    sums = rows.groupby("case_id", sort=True)[list(columns.values())].sum()
    sums.columns = list(columns)
    out = rows.groupby("case_id", sort=True).agg(patient_id=("patient_id", "first"), queries=("case_id", "size"))
    return out.join(sums).reset_index()


def read_layout(frame: pd.DataFrame, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """``(y, pred)`` of a :func:`per_case` frame (see the module docstring)."""
    names = list(protocol_metrics(protocol))
    missing = [c for c in [QUERIES, *names] if c not in frame.columns]
    if missing:
        raise CTBenchError(f"per-case retrieval rows lack column(s) {', '.join(missing)}")
    return frame[QUERIES].to_numpy(dtype=np.float64), frame[names].to_numpy(dtype=np.float64)


def _ratio(j: int) -> MetricFn:
    def fn(y: np.ndarray, pred: np.ndarray) -> float:
        n = float(np.sum(y))
        if n == 0:
            raise ValueError("no query to average over")
        return float(np.sum(pred[:, j]) / n)

    return fn


def layout_metrics(protocol: str) -> dict[str, MetricFn]:
    """The protocol's metrics, by name, on the scoring layout."""
    return {name: _ratio(j) for j, name in enumerate(protocol_metrics(protocol))}
