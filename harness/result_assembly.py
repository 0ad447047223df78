"""The sections of a ``result.json``, assembled from what a run produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .datasets import Dataset
from .engine import ProbeOutcome, Split
from .extract import Extraction
from .portable import portable_result
from .provenance import PROTOCOL_VERSION, adapter_info, ctbench_version, environment, git_sha
from .registry import MODELS
from .run_config import RunConfig
from .study import redact
from .task import Task
from .tuning_curve import fit_seconds, tuning_curve


@dataclass
class Scored:
    """What scoring produced, whatever the kind of task."""

    metrics: dict
    predictions: pd.DataFrame
    counts: dict
    patients: dict
    probe: dict | None = None
    protocol: dict | None = None
    timings: dict | None = None
    artifacts: Callable[[Path], list[str]] | None = None


def probe_section(out: ProbeOutcome, cfg: RunConfig, task: Any, train: Split, val: Split,
                  available: dict[str, int], storage: str, code: str) -> dict[str, Any]:
    """``probe``: how the probe was tuned and refitted (budget, failures, seeds, penalties)."""
    from .probes import effective

    return {
        "best_params": out.best_params, "best_validation_value": out.best_value,
        "trials": out.trials, "trials_requested": cfg.trials, "sampler": "TPESampler",
        "seed": cfg.seed, "seeds": out.seeds, "study": out.study_name, "storage": redact(storage),
        "refit_on": "train+val", "train_fraction": cfg.train_fraction,
        "fitted_cases": len(train.case_ids) + len(val.case_ids),
        "fitted_patients": len(set(train.groups)) + len(set(val.groups)),
        "available_cases": available, "stochastic": task.is_stochastic(out.best_params),
        "trials_failed": out.tuning.failed, "failures": out.tuning.failures,
        "convergence_warnings": {"tuning": sum(out.tuning.convergence_warnings.values()),
                                 "per_trial": out.tuning.convergence_warnings,
                                 "refit": out.refit_convergence_warnings},
        # the estimator's own penalty for the shared families' dimension-free parameters
        "effective_penalty": effective(out.best_params, train.X.shape[1]) if train.X.ndim == 2 else {},
        "code": code,
        # the probe family and feature view (ctbench.probe_choice); None: the task's own probe
        "family": cfg.probe, "view": cfg.view,
        # validation value against trials spent, and what each trial cost (ctbench.tuning_curve)
        "tuning_curve": tuning_curve(out.tuning.values, task.direction),
        "trial_fit_s": fit_seconds(out.tuning.fit_s),
    }


def assemble(cfg: RunConfig, started: datetime, encoder: Any, task: Task, dataset: Dataset, opts: str | None,
             scored: Scored, ex: Extraction, usable: np.ndarray, device: str, artifacts: list[str]) -> dict:
    """The whole result dict of a run (validated against the result schema when written); local
    paths in it are recorded portably (:mod:`ctbench.portable`): result folders get shared."""
    spec, wref = task.spec, encoder.weights_ref
    settings = task.probe_settings()
    return portable_result({
        "ctbench_version": ctbench_version(),
        "git_sha": git_sha(),
        "protocol_version": PROTOCOL_VERSION,
        "created": started.isoformat(),
        "config": asdict(cfg),
        "model": {
            "name": cfg.model,
            "variant": cfg.variant,
            "card": encoder.card.model_dump(mode="json"),
            "weights": {"choice": cfg.weights, "sha256": wref.sha256, "random_init": wref.is_random,
                        "path": str(wref.path) if wref.path else None,
                        # the hub commit of a pulled file (weights lock); absent when none is known
                        **({"revision": wref.revision} if getattr(wref, "revision", None) else {})},
            "preprocessing_id": encoder.preprocessing_id,
            "precision": getattr(encoder, "precision", None),  # None: the adapter declares none
            "options": dict(cfg.model_options) or None,  # the adapter options given (--model-option)
            "settings": getattr(encoder, "settings", None),  # what shapes its features, when it says
            "adapter": adapter_info(MODELS.get(cfg.model), MODELS.entry_point(cfg.model)),
        },
        "task": {
            "name": spec.name, "category": spec.category, "version": spec.version,
            "targets": list(spec.targets), "main_metric": spec.main_metric, "direction": task.direction,
            "dataset": dataset.card.name, "dataset_version": dataset.card.version,
            "dataset_collections": list(dataset.card.collections),
            "kind": task.kind, "horizons": list(task.horizons),
            "options": settings or None, "options_tag": opts,
        },
        "split": {"hash": dataset.split_hash(), "counts": scored.counts, "patients": scored.patients},
        "probe": scored.probe,
        "protocol": scored.protocol,
        "metrics": {k: v.as_dict() for k, v in scored.metrics.items()},
        "bootstrap": {"resamples": cfg.n_boot, "level": 0.95, "unit": "patient"},
        "timings": {
            "extract_s": ex.seconds, "cases_extracted": ex.extracted, "cases_cached": ex.cached,
            "cases_recovered": len(ex.recovered),  # damaged cache files moved aside and re-extracted
            **(scored.timings or {}),
            "total_s": (datetime.now(timezone.utc) - started).total_seconds(),
        },
        "environment": environment(device),
        "failures": [{"case_id": c, "reason": r} for c, r in ex.failures.items()],
        "warnings": [{"case_id": c, "reason": r} for c, rs in ex.warnings.items() for r in rs],  # implausible images
        "excluded_without_target": int((~usable).sum()),
        "artifacts": artifacts,
    })
