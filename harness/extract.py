"""Frozen-feature extraction over a manifest: cached, resumable, per-case failures recorded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from .cache import FeatureCache, content_hash
from .datasets import Dataset
from .errors import CTBenchError
from .types import Encoder, Features

Progress = Callable[[int, int], None]


@dataclass
class Extraction:
    """Features per case_id, failures per case_id, and how much came from the cache."""

    features: dict[str, Features] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    cached: int = 0
    extracted: int = 0
    seconds: float = 0.0


def cache_for(encoder: Encoder, model_name: str) -> FeatureCache:
    """The cache folder of this encoder's (model, weights, preprocessing) triple."""
    return FeatureCache(model_name, encoder.weights_ref.sha256, encoder.preprocessing_id)


def _reason(e: Exception) -> str:
    return str(e) if isinstance(e, CTBenchError) else f"{type(e).__name__}: {e}"


def _encode_all(encoder: Encoder, volumes: list) -> list[Features]:
    """Encode a batch with ``encode_batch`` when the adapter has it, else one by one."""
    batch = getattr(encoder, "encode_batch", None)
    if batch is not None and len(volumes) > 1:
        return list(batch(volumes))
    return [encoder.encode(v) for v in volumes]


def extract(
    encoder: Encoder,
    model_name: str,
    dataset: Dataset,
    cases: pd.DataFrame,
    *,
    tokens: bool = False,
    strict: bool = False,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> Extraction:
    """Encode every case of ``cases`` not yet cached, then load all features.

    A case that cannot be read or encoded is recorded in ``failures`` and skipped, unless
    ``strict``, in which case its error is raised at once. Every encoded case is written to the
    cache as soon as its batch finishes, so a killed run resumes where it stopped.
    """
    from .readers import read_volume

    cache = cache_for(encoder, model_name)
    out = Extraction()
    start = time.perf_counter()
    keys: dict[str, str] = {}
    pending: list[tuple[str, str, object]] = []  # (case_id, key, volume)
    done = 0

    def fail(case_id: str, e: Exception) -> None:
        if strict:
            if isinstance(e, CTBenchError):
                raise CTBenchError(f"case {case_id!r}: {e} (run without --strict to skip it)") from None
            raise e
        out.failures[case_id] = _reason(e)

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(cases))

    def flush() -> None:
        if not pending:
            return
        try:
            feats = _encode_all(encoder, [v for _, _, v in pending])
        except Exception:
            feats = None  # isolate the failing case by encoding one at a time
        for j, (case_id, key, vol) in enumerate(pending):
            try:
                f = feats[j] if feats is not None else encoder.encode(vol)
                cache.put(key, f, {"case_id": case_id})
                out.extracted += 1
                keys[case_id] = key
            except Exception as e:
                fail(case_id, e)
        tick(len(pending))
        pending.clear()

    for row in cases.itertuples(index=False):
        case_id = str(row.case_id)
        try:
            image = dataset.resolve(row.image)
            if not image.exists():
                raise CTBenchError(f"image {image} does not exist; fix the manifest's image column")
            key = content_hash(image)
            if cache.has(key):
                out.cached += 1
                keys[case_id] = key
                tick(1)
                continue
            pending.append((case_id, key, read_volume(image)))
        except Exception as e:
            fail(case_id, e)
            tick(1)
        if len(pending) >= batch_size:
            flush()
    flush()
    for case_id, key in keys.items():
        out.features[case_id] = cache.get(key, tokens=tokens)
    out.seconds = time.perf_counter() - start
    if len(cases) and not out.features:
        first = next(iter(out.failures.items()))
        raise CTBenchError(f"every case failed; the first, {first[0]!r}: {first[1]}")
    return out
