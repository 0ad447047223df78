"""Frozen-feature extraction over a manifest: cached, resumable, per-case failures recorded.

Reading, hashing and (when the adapter splits it out) preprocessing run in DataLoader worker
processes, so they overlap the encoder; the main process batches prepared inputs and encodes.
Under ``torchrun`` every rank takes its own share of the cases; cache writes are atomic and
content-addressed, so ranks never collide and the cache equals a single-process run's.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from .cache import FeatureCache, content_hash
from .datasets import Dataset
from .errors import CaseError, CTBenchError
from .seeds import attach_seed, case_seeds, check_target_leak, require_seed_columns, seed_columns, seeded_key
from .types import Encoder, Features

Progress = Callable[[int, int], None]
CACHED = "cached"


@dataclass
class Extraction:
    """Features per case_id, failures per case_id, and how much came from the cache."""

    features: dict[str, Features] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    cached: int = 0
    extracted: int = 0
    recovered: dict[str, str] = field(default_factory=dict)  # case_id -> damaged cache file moved aside
    #: case_id -> why its image does not look like CT (readers.plausibility_warnings); the case is
    #: still encoded, the reasons are kept with its cached features so cached runs report them too
    warnings: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def cache_for(encoder: Encoder, model_name: str) -> FeatureCache:
    """The cache folder of this encoder's (model, weights, preprocessing) triple."""
    return FeatureCache.for_encoder(encoder, model_name)


def default_workers(device: str = "cpu") -> int:
    """Reader processes: on CUDA every core but one (at most 8) feeds the GPU; on CPU none, as
    the encoder needs the cores and shipping volumes between processes costs more than it saves."""
    if not device.startswith("cuda"):
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def shard(cases: pd.DataFrame, rank: int, world: int) -> pd.DataFrame:
    """Rank ``rank``'s share of ``cases`` (every ``world``-th row): disjoint, covering all."""
    return cases.iloc[rank::world]


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, CTBenchError) else f"{type(e).__name__}: {e}"


WARNINGS_KEY = "warnings"  # cache metadata: the image's plausibility warnings, newline-joined


def _cached_warnings(path: Path) -> list[str]:
    """Plausibility warnings stored with a cached entry (none for entries written without)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        info = json.loads((f.metadata() or {}).get("ctbench", "{}"))
    return [w for w in str(info.get(WARNINGS_KEY, "")).split("\n") if w]


class _CaseReader(torch.utils.data.Dataset):
    """Worker-side: resolve, hash, skip cached, read and prepare one case; never raises."""

    def __init__(self, dataset: Dataset, cases: pd.DataFrame, cache: FeatureCache,
                 prepare: Callable[[Any], Any] | None, seeds: dict[str, Any] | None = None) -> None:
        self.rows = [(str(r.case_id), str(r.image)) for r in cases.itertuples(index=False)]
        self.dataset, self.cache, self.prepare = dataset, cache, prepare
        self.seeds = seeds  # seed-conditioned model: case_id -> seed or why it has none (ctbench.seeds)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[str, str | None, Any, str | None, str | None, list[str]]:
        """(case_id, key, item or CACHED, error, where a damaged cache entry was moved aside,
        plausibility warnings)."""
        from .readers import plausibility_warnings, read_volume, require_regular

        case_id, image = self.rows[i]
        key = moved = None
        try:
            seed = None if self.seeds is None else self.seeds[case_id]
            if isinstance(seed, str):
                raise CTBenchError(seed)
            path = self.dataset.resolve(image)
            if not path.exists():
                raise CTBenchError(f"image {path} does not exist; fix the manifest's image column")
            require_regular(path)  # before hashing: reading a FIFO or /dev/zero never ends
            key = content_hash(path) if seed is None else seeded_key(content_hash(path), seed)
            found = self.cache.recover(key)  # a damaged entry is moved aside and re-extracted
            moved = None if found is None else str(found)
            if self.cache.has(key):
                return case_id, key, CACHED, None, moved, _cached_warnings(self.cache.path(key))
            volume = read_volume(path) if seed is None else attach_seed(read_volume(path), seed)
            notes = plausibility_warnings(volume)
            return case_id, key, self.prepare(volume) if self.prepare else volume, None, moved, notes
        except Exception as e:  # reported to the main process, recorded per case
            return case_id, key, None, _reason(e), moved, []


def _seeds(encoder: Encoder, model: str, dataset: Dataset, cases: pd.DataFrame, targets: Sequence[str],
           task: str) -> dict[str, Any] | None:
    """Per-case seeds of a seed-conditioned encoder (None for any other), after the up-front checks."""
    columns = seed_columns(encoder)
    if columns is None:
        return None
    require_seed_columns(dataset, columns, model)
    if not encoder.allow_target_seed:  # type: ignore[attr-defined]  (SeedConditioned)
        check_target_leak(dataset, targets, columns, model, task)
    return case_seeds(cases, columns)


def _encoders(encoder: Encoder) -> tuple[Callable | None, Callable[[list], list[Features]]]:
    """(worker-side prepare, main-side batch encoder) for this adapter.

    Adapters that split preprocessing out (``prepare`` + ``encode_prepared``) get it run in the
    workers; otherwise workers only read and the adapter's ``encode_batch``/``encode`` does the rest.
    """
    prepare = getattr(encoder, "prepare", None)
    encode_prepared = getattr(encoder, "encode_prepared", None)
    if prepare is not None and encode_prepared is not None:
        return prepare, encode_prepared
    batch = getattr(encoder, "encode_batch", None)
    if batch is not None:
        return None, lambda vols: list(batch(vols)) if len(vols) > 1 else [encoder.encode(vols[0])]
    return None, lambda vols: [encoder.encode(v) for v in vols]


def _encodes_batches(encoder: Encoder) -> bool:
    """Whether the adapter encodes several volumes in one call (``encode_prepared`` with
    ``prepare``, or ``encode_batch``). One that encodes a volume per call gains nothing from
    batches: its cases are encoded, cached and reported one by one."""
    prepared = getattr(encoder, "prepare", None) is not None and getattr(encoder, "encode_prepared", None) is not None
    return prepared or getattr(encoder, "encode_batch", None) is not None


def extract(
    encoder: Encoder,
    model_name: str,
    dataset: Dataset,
    cases: pd.DataFrame,
    *,
    tokens: bool = False,
    strict: bool = False,
    batch_size: int = 4,
    workers: int | None = None,
    load: bool = True,
    progress: Progress | None = None,
    on_read: Progress | None = None,
    on_load: Progress | None = None,
    targets: Sequence[str] = (),
    task_name: str = "the task",
) -> Extraction:
    """Encode every case of ``cases`` not yet cached, then (``load``) load all their features.

    A case that cannot be read or encoded is recorded in ``failures`` and skipped, unless
    ``strict``, in which case its error is raised at once. Every encoded case is written to the
    cache as soon as its batch finishes, so a killed run resumes where it stopped.

    Progress, each as ``(done, total)`` from ``(0, total)`` at the start, then once per case:
    ``progress`` when a case is done (encoded, found in the cache or failed), ``on_read`` when it
    has been read and prepared (ahead of ``progress`` while a batch fills), ``on_load`` when its
    cached features are loaded.

    A seed-conditioned encoder (:mod:`ctbench.seeds`) gets each case's seed from the manifest;
    a manifest without its seed columns, or seeds that are the task's ``targets``, are refused here.
    """
    cache = cache_for(encoder, model_name)
    seeds = _seeds(encoder, model_name, dataset, cases, targets, task_name)
    prepare, encode_many = _encoders(encoder)
    batch_size = batch_size if _encodes_batches(encoder) else 1
    device = str(getattr(encoder, "device", "cpu"))
    workers = default_workers(device) if workers is None else workers
    reader = _CaseReader(dataset, cases, cache, prepare, seeds)
    loader = torch.utils.data.DataLoader(
        reader, batch_size=None, shuffle=False, num_workers=workers,
        prefetch_factor=2 if workers else None, persistent_workers=False,
        pin_memory=device.startswith("cuda") and prepare is not None,  # async host-to-GPU copies
    )
    out = Extraction()
    start = time.perf_counter()
    keys: dict[str, str] = {}
    pending: list[tuple[str, str, Any]] = []
    done = read = 0
    for report in (on_read, progress):
        if report is not None:
            report(0, len(cases))

    def fail(case_id: str, reason: str, exc: BaseException | None = None) -> None:
        if strict:
            if exc is not None and not isinstance(exc, CTBenchError):
                raise exc
            raise CaseError(case_id, f"{reason} (run without --strict to skip it)")
        out.failures[case_id] = reason
        out.warnings.pop(case_id, None)  # a failed case is reported as a failure only

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(cases))

    def flush() -> None:
        if not pending:
            return
        try:
            feats = encode_many([item for _, _, item in pending])
        except Exception:
            feats = None  # isolate the failing case by encoding one at a time
        for j, (case_id, key, item) in enumerate(pending):
            try:
                f = feats[j] if feats is not None else encode_many([item])[0]
                notes = out.warnings.get(case_id)
                cache.put(key, f, {"case_id": case_id, **({WARNINGS_KEY: "\n".join(notes)} if notes else {})})
                out.extracted += 1
                keys[case_id] = key
            except Exception as e:
                fail(case_id, _reason(e), e)
            tick(1)
        pending.clear()

    for case_id, key, item, error, moved, notes in loader:
        read += 1
        if on_read is not None:
            on_read(read, len(cases))
        if moved is not None:
            out.recovered[case_id] = moved
        if notes and error is None:
            out.warnings[case_id] = list(notes)
        if error is not None:
            fail(case_id, error)
            tick(1)
        elif isinstance(item, str) and item == CACHED:
            out.cached += 1
            keys[case_id] = key
            tick(1)
        else:
            pending.append((case_id, key, item))
            if len(pending) >= batch_size:
                flush()
    flush()
    if load and keys:
        loaded = on_load or (lambda done, total: None)
        loaded(0, len(keys))
        for i, (case_id, key) in enumerate(keys.items()):
            out.features[case_id] = cache.get(key, tokens=tokens)
            loaded(i + 1, len(keys))
    out.seconds = time.perf_counter() - start
    if len(cases) and not keys:
        first = next(iter(out.failures.items()))
        raise CTBenchError(f"every case failed; the first, {first[0]!r}: {first[1]}")
    return out
