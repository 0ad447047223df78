"""Seed points: per-case world coordinates that a seed-conditioned model (FMCIB) encodes around.

Contract. An adapter is seed-conditioned when it exposes ``seed_columns`` (three manifest column
names: the seed's world RAS x, y, z in mm; default ``seed_x, seed_y, seed_z``, overridable with
``--model-option seed_columns=a,b,c``). The harness then

- refuses up front a dataset whose manifest lacks those columns (one message naming them, the
  dataset and the fix) and, by default, a task whose targets *are* the seed (same column, or
  columns holding the same values): a model handed the answer is no benchmark. The adapter's
  ``allow_target_seed`` (``--model-option allow_target_seed=true``) runs it anyway, recorded;
- reads each case's seed from the manifest (finite numbers, else a per-case failure naming the
  case and the column) and puts it on the volume's metadata under :data:`SEED_META_KEY`, as a
  float64 ``(3,)`` array, before the adapter preprocesses it;
- makes the seed part of the case's feature-cache key (:func:`seeded_key`): the same scan with
  another seed is another entry.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd

from .errors import CTBenchError

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import Dataset

__all__ = ["SEED_META_KEY", "DEFAULT_SEED_COLUMNS", "SeedConditioned", "parse_seed_columns", "seed_columns",
           "require_seed_columns", "check_target_leak", "case_seeds", "attach_seed", "seed_of", "seeded_key"]

#: volume.meta key holding the case's seed point, world RAS mm, float64 (3,)
SEED_META_KEY = "ctbench_seed_ras_mm"
DEFAULT_SEED_COLUMNS = ("seed_x", "seed_y", "seed_z")
_SAME_MM = 1e-6  # seed and target values this close on every row: the seed is the target


@runtime_checkable
class SeedConditioned(Protocol):
    """An encoder whose features depend on a per-case seed point read from the manifest."""

    seed_columns: tuple[str, str, str]
    allow_target_seed: bool


def parse_seed_columns(value: str | Sequence[str], model: str = "model") -> tuple[str, str, str]:
    """``"a,b,c"`` or ``["a", "b", "c"]`` -> three distinct column names, else a clear error."""
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names]
    if len(names) != 3 or any(not n for n in names) or len(set(names)) != 3:
        raise CTBenchError(f"{model}: seed_columns must name three distinct manifest columns (world RAS x, y, "
                           f"z in mm), got {value!r}; e.g. --model-option seed_columns=seed_x,seed_y,seed_z")
    return names[0], names[1], names[2]


def seed_columns(encoder: Any) -> tuple[str, str, str] | None:
    """The seed columns a seed-conditioned encoder reads, or ``None`` for any other encoder."""
    if not isinstance(encoder, SeedConditioned):
        return None
    return parse_seed_columns(encoder.seed_columns, encoder.card.name if hasattr(encoder, "card") else "model")


def require_seed_columns(dataset: "Dataset", columns: Sequence[str], model: str) -> None:
    """Refuse, before any case is read, a manifest that lacks one of the seed columns."""
    missing = [c for c in columns if c not in dataset.manifest.columns]
    if missing:
        raise CTBenchError(
            f"{model} is seed-conditioned: it encodes a cube around each case's seed point, read from the "
            f"manifest columns {', '.join(columns)} (world RAS mm), but dataset {dataset.card.name!r} "
            f"({dataset.manifest_file}) has no {', '.join(missing)}. Add those columns (e.g. a lesion centre "
            f"clicked by a reader; see docs/datasets.md), or name other columns with "
            f"--model-option seed_columns=X,Y,Z"
        )


def check_target_leak(dataset: "Dataset", targets: Iterable[str], columns: Sequence[str], model: str,
                      task: str = "the task") -> None:
    """Refuse a task whose target columns are the seed columns, or hold the same numbers on every
    row where both are given (a copy of the answer under another name)."""
    targets = [t for t in targets if t in dataset.manifest.columns]
    frame = dataset.manifest
    leaks = [c for c in columns if c in targets]
    for c in (c for c in columns if c not in leaks):
        seed = pd.to_numeric(frame[c], errors="coerce")
        for t in targets:
            target = pd.to_numeric(frame[t], errors="coerce")
            both = seed.notna() & target.notna()
            if both.any() and bool(((seed[both] - target[both]).abs() <= _SAME_MM).all()):
                leaks.append(f"{c} (= {t})")
                break
    if leaks:
        raise CTBenchError(
            f"{model} reads its seed point from {', '.join(columns)}, but {', '.join(leaks)} "
            f"{'is' if len(leaks) == 1 else 'are'} the target of {task} ({', '.join(targets)}) on dataset "
            f"{dataset.card.name!r}: a seed-conditioned model would be handed the answer. Give it seed columns "
            f"that are not the target (e.g. a reader's click: --model-option seed_columns=X,Y,Z), or pass "
            f"--model-option allow_target_seed=true to run it anyway (recorded in the result)"
        )


def case_seeds(cases: pd.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray | str]:
    """``case_id`` -> its seed (float64 ``(3,)``), or the reason it has none (empty or not a
    finite number), naming the case and the column."""
    out: dict[str, np.ndarray | str] = {}
    values = {c: cases[c].tolist() for c in columns}
    for i, case in enumerate(cases["case_id"].astype(str)):
        point, problem = [], None
        for c in columns:
            raw = values[c][i]
            try:
                v = float(raw)
            except (TypeError, ValueError):
                v = float("nan")
            if not np.isfinite(v):
                shown = "empty" if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "" \
                    else f"{raw!r}, not a finite number"
                problem = (f"case {case!r} has no seed point: column {c} is {shown}; give every case a world "
                           f"RAS mm seed in {', '.join(columns)}")
                break
            point.append(v)
        out[case] = problem if problem else np.asarray(point, dtype=np.float64)
    return out


def attach_seed(volume: Any, seed: Sequence[float]) -> Any:
    """Put ``seed`` (world RAS mm) on ``volume.meta`` under :data:`SEED_META_KEY`; returns the volume."""
    volume.meta[SEED_META_KEY] = np.asarray(seed, dtype=np.float64).reshape(3)
    return volume


def seed_of(volume: Any, model: str) -> np.ndarray:
    """The seed a seed-conditioned adapter encodes around, or a clear error when none was given."""
    meta: Mapping = getattr(volume, "meta", None) or {}
    seed = meta.get(SEED_META_KEY)
    if seed is None:
        raise CTBenchError(
            f"{model} needs a seed point for every volume (world RAS mm): ctbench reads it from the manifest's "
            f"seed columns; when calling encode() directly, set volume.meta[{SEED_META_KEY!r}] = (x, y, z) "
            f"(ctbench.seeds.attach_seed)"
        )
    seed = np.asarray(seed, dtype=np.float64).reshape(-1)
    if seed.shape != (3,) or not np.all(np.isfinite(seed)):
        raise CTBenchError(f"{model}: the seed point must be three finite numbers (world RAS mm), got {seed.tolist()}")
    return seed


def seeded_key(content_key: str, seed: Sequence[float]) -> str:
    """A case's cache key for a seed-conditioned model: the image's content hash and the exact seed."""
    blob = json.dumps({"image": content_key, "seed_ras_mm": [float(v) for v in seed]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
