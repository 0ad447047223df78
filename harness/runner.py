"""``ctbench run``: one model on one task, from dataset to result file.

dataset -> encoder -> cached features -> shared splits -> tuned probe -> bootstrap -> result.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .datasets import Dataset, TaskSpec, open_dataset
from .devices import resolve_device
from .engine import Split, run_probe
from .errors import CTBenchError
from .extract import extract
from .paths import home
from .probe_code import probe_code_hash
from .provenance import PROTOCOL_VERSION, ctbench_version, environment, git_sha
from .registry import MODELS, TASKS
from .task import EvalTask, ProbeTask
from .results import result_dir, write_result

Progress = Callable[[str, int, int], None]

# Task options a run may carry (``RunConfig.task_options``) -> the command-line flag that sets
# them. A task category takes an option when its class lists it in ``run_options`` (a constructor
# keyword); the runner also passes its ``--device`` to a task listing ``device`` there.
OPTION_FLAGS: dict[str, str] = {"llm": "--llm", "beam": "--beam"}


@dataclass
class RunConfig:
    """Everything that defines a run; written into the result file."""

    model: str
    task: str
    dataset: str = "phantom"
    weights: str = "auto"
    trials: int = 20
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    strict: bool = False
    variant: str | None = None
    storage: str | None = None
    n_boot: int = 1000
    train_fraction: float = 1.0
    task_options: dict[str, Any] = field(default_factory=dict)  # given options only, e.g. {"beam": 2}


def pick_device(device: str) -> str:
    """The run's ``--device`` resolved (``auto`` -> ``cuda`` when a GPU is visible, else
    ``cpu``): :func:`ctbench.devices.resolve_device`, kept under this name for callers."""
    return resolve_device(device)


def build_encoder(name: str, weights: str, device: str, variant: str | None):
    """Instantiate a registered adapter with the run's weights, device and variant."""
    factory = MODELS.get(name)
    kwargs = {"weights": weights, "device": device}
    if variant:
        kwargs["variant"] = variant
    return factory(**kwargs)


def task_kwargs(task_cls: type, spec: TaskSpec, cfg: RunConfig) -> dict[str, Any]:
    """Constructor keywords for ``task_cls`` from the run: its given ``task_options`` and, for a
    task that takes a device, ``cfg.device`` unless ``auto`` (the task then falls back to its
    environment variable). An option the task does not take is a user error naming its flag."""
    taken = getattr(task_cls, "run_options", frozenset())
    kwargs: dict[str, Any] = {}
    for key, value in cfg.task_options.items():
        if key not in OPTION_FLAGS:
            raise CTBenchError(f"unknown task option {key!r}; known: {', '.join(OPTION_FLAGS)}")
        if key not in taken:
            takers = ", ".join(_categories_taking(key)) or "no registered"
            raise CTBenchError(f"{OPTION_FLAGS[key]} applies only to {takers} tasks; task "
                               f"{spec.name!r} is a {spec.category} task")
        kwargs[key] = value
    if "device" in taken and cfg.device != "auto":
        kwargs["device"] = resolve_device(cfg.device)
    return kwargs


def _categories_taking(option: str) -> list[str]:
    """Registered task categories whose class takes ``option`` (for error messages only)."""
    out = []
    for name in TASKS.names():
        try:
            if option in getattr(TASKS.get(name), "run_options", ()):
                out.append(name)
        except Exception:  # a broken third-party category must not hide the real error
            continue
    return out


def options_tag(task: Any) -> str | None:
    """``opts<8 hex>``: a short hash of ``task.options()`` (sorted JSON), or ``None`` when the
    task has no options or they equal its ``default_options()`` (a task without that method
    counts as default), so default runs keep their study name and result folder."""
    options = getattr(task, "options", None)
    if options is None:
        return None
    opts = options()
    defaults = getattr(task, "default_options", lambda: opts)()
    if opts == defaults:
        return None
    blob = json.dumps(opts, sort_keys=True, separators=(",", ":"), default=str)
    return "opts" + hashlib.sha256(blob.encode()).hexdigest()[:8]


def study_name(dataset: Dataset, spec: TaskSpec, model_tag: str, weights_sha: str, preprocessing_id: str,
               seed: int, train_fraction: float, opts: str | None = None, code: str = "") -> str:
    """The Optuna study of a run: everything that defines its search, ``|``-joined, including
    the protocol version and ``code`` (:func:`ctbench.probe_code.probe_code_hash`), so trials of
    older probe code never mix with new ones; ``opts`` (from :func:`options_tag`) is appended
    only for non-default task options."""
    parts = [dataset.card.name, dataset.card.version, spec.name, spec.version, model_tag, weights_sha[:16],
             preprocessing_id, dataset.split_hash()[:16], f"seed{seed}", f"frac{train_fraction:g}",
             f"protocol{PROTOCOL_VERSION}", f"code{code}"]
    return "|".join(parts + ([opts] if opts else []))


def _split(task, dataset: Dataset, rows: pd.DataFrame, feats: dict, name: str) -> Split:
    part = rows[(rows["split"] == name) & rows["case_id"].isin(list(feats))]
    if part.empty:
        raise CTBenchError(f"split {name!r} of dataset {dataset.card.name!r} has no usable case")
    X = task.inputs([feats[c] for c in part["case_id"]])
    return Split(X, task.targets(part), part["patient_id"].to_numpy(), part["case_id"].tolist())


def train_subset(split: Split, fraction: float, seed: int) -> Split:
    """The first ``fraction`` of a split's patients (at least 2) in a seeded order: subsets for
    growing fractions are nested, so label-efficiency curves compare like with like. Applied to
    train and to validation, the two splits the final probe is fitted on."""
    if not 0 < fraction <= 1:
        raise CTBenchError(f"--train-fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return split
    patients = np.unique(split.groups.astype(str))
    order = np.random.default_rng(seed).permutation(patients)
    keep = set(order[: max(2, math.ceil(fraction * len(patients)))])
    idx = np.array([g in keep for g in split.groups.astype(str)])
    return Split(split.X[idx], split.y[idx], split.groups[idx], [c for c, k in zip(split.case_ids, idx) if k])


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


def _probe(task: ProbeTask, dataset: Dataset, rows, ex, cfg: RunConfig, study: str, code: str, tick) -> Scored:
    splits = {s: _split(task, dataset, rows, ex.features, s) for s in ("train", "val", "test")}
    available = {n: len(s.case_ids) for n, s in splits.items()}
    # label efficiency: nested subsets of every split the final probe is fitted on
    splits["train"] = train_subset(splits["train"], cfg.train_fraction, cfg.seed)
    splits["val"] = train_subset(splits["val"], cfg.train_fraction, cfg.seed + 1)
    train, val, test = splits["train"], splits["val"], splits["test"]
    storage = cfg.storage or _default_storage()
    out = run_probe(task, train, val, test, trials=cfg.trials, seed=cfg.seed, study_name=study,
                    storage=storage, n_boot=cfg.n_boot, on_trial=tick("tune"), on_bootstrap=tick("bootstrap"))
    preds = pd.DataFrame({"case_id": test.case_ids, "patient_id": test.groups})
    for col, values in task.prediction_columns(test.y, out.predictions).items():
        preds[col] = values
    writer = getattr(task, "write_artifacts", None)
    return Scored(
        metrics=out.estimates,
        predictions=preds,
        counts={n: len(s.case_ids) for n, s in splits.items()},
        patients={n: len(set(s.groups)) for n, s in splits.items()},
        probe={
            "best_params": out.best_params, "best_validation_value": out.best_value,
            "trials": out.trials, "trials_requested": cfg.trials, "sampler": "TPESampler",
            "seed": cfg.seed, "seeds": out.seeds, "study": out.study_name, "storage": _redact(storage),
            "refit_on": "train+val", "train_fraction": cfg.train_fraction,
            "fitted_cases": len(train.case_ids) + len(val.case_ids),
            "fitted_patients": len(set(train.groups)) + len(set(val.groups)),
            "available_cases": available, "stochastic": task.is_stochastic(out.best_params),
            "trials_failed": out.tuning.failed, "failures": out.tuning.failures,
            "convergence_warnings": {"tuning": sum(out.tuning.convergence_warnings.values()),
                                     "per_trial": out.tuning.convergence_warnings,
                                     "refit": out.refit_convergence_warnings},
            "effective_penalty": _effective_penalty(out.best_params, train.X),
            "code": code,
        },
        timings={"tune_s": out.seconds_tuning, "refit_s": out.seconds_refit, "bootstrap_s": out.seconds_bootstrap},
        artifacts=(lambda folder: writer(folder, test.y, out.predictions)) if writer else None,
    )


def _evaluate(task: EvalTask, rows: pd.DataFrame, ex, cfg: RunConfig) -> Scored:
    part = rows[rows["case_id"].isin(list(ex.features))]
    emb = np.stack([ex.features[c].embedding for c in part["case_id"]])
    estimates, preds, protocol = task.evaluate(part, emb, seed=cfg.seed, n_boot=cfg.n_boot)
    if task.main_metric not in estimates:
        raise CTBenchError(
            f"task {task.spec.name!r}: its main metric {task.main_metric!r} could not be computed on "
            f"this dataset (computed: {', '.join(estimates) or 'none'})"
        )
    return Scored(estimates, preds, {"all": len(part)}, {"all": int(part["patient_id"].nunique())},
                  protocol=protocol)


def run(cfg: RunConfig, progress: Progress | None = None) -> tuple[Path, dict]:
    """Run ``cfg`` and write its result; returns the result path and the result dict."""
    started = datetime.now(timezone.utc)
    tick = (lambda stage: (lambda d, t: progress(stage, d, t))) if progress else (lambda stage: None)
    MODELS.get(cfg.model)  # an unknown model fails before any dataset is generated
    dataset = open_dataset(cfg.dataset, progress=tick("generate"))
    spec = dataset.card.task(cfg.task)
    task_cls = TASKS.get(spec.category)
    task = task_cls(spec, dataset, **task_kwargs(task_cls, spec, cfg))
    if isinstance(task, EvalTask) and cfg.train_fraction != 1:
        raise CTBenchError(f"task {spec.name!r} trains nothing; --train-fraction does not apply")
    from .writable import check_output_folders  # fail before the work, not after it

    check_output_folders(cfg.out, studies=cfg.storage is None and not isinstance(task, EvalTask))
    device = resolve_device(cfg.device)
    opts = options_tag(task)
    encoder = build_encoder(cfg.model, cfg.weights, device, cfg.variant)

    manifest = dataset.manifest
    usable = task.usable(manifest)
    rows = manifest[usable]
    ex = extract(encoder, cfg.model, dataset, rows, tokens=task.uses_tokens, strict=cfg.strict,
                 progress=tick("extract"))

    wsha = encoder.weights_ref.sha256
    model_tag = cfg.model + (f"-{cfg.variant}" if cfg.variant else "")
    if isinstance(task, EvalTask):
        scored = _evaluate(task, rows, ex, cfg)
    else:
        code = probe_code_hash(task)
        study = study_name(dataset, spec, model_tag, wsha, encoder.preprocessing_id, cfg.seed, cfg.train_fraction,
                           opts, code)
        scored = _probe(task, dataset, rows, ex, cfg, study, code, tick)

    weights_tag = "random" if encoder.weights_ref.is_random else wsha[:12]
    folder = Path(cfg.out) if cfg.out else result_dir(
        home() / "results", dataset.card.name, spec.name, model_tag, weights_tag, cfg.seed, cfg.train_fraction,
        opts)  # non-default task options: e.g. seed0-opts1a2b3c4d
    artifacts = scored.artifacts(folder) if scored.artifacts else []
    result = {
        "ctbench_version": ctbench_version(),
        "git_sha": git_sha(),
        "protocol_version": PROTOCOL_VERSION,
        "created": started.isoformat(),
        "config": asdict(cfg),
        "model": {
            "name": cfg.model,
            "variant": cfg.variant,
            "card": encoder.card.model_dump(mode="json"),
            "weights": {
                "choice": cfg.weights,
                "sha256": wsha,
                "random_init": encoder.weights_ref.is_random,
                "path": str(encoder.weights_ref.path) if encoder.weights_ref.path else None,
            },
            "preprocessing_id": encoder.preprocessing_id,
        },
        "task": {
            "name": spec.name, "category": spec.category, "version": spec.version,
            "targets": list(spec.targets), "main_metric": spec.main_metric, "direction": task.direction,
            "dataset": dataset.card.name, "dataset_version": dataset.card.version,
            "dataset_collections": list(dataset.card.collections),
            "kind": getattr(task, "kind", None), "horizons": list(getattr(task, "horizons", ())),
            **({"options": task.options(), "options_tag": opts} if hasattr(task, "options") else {}),
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
    }
    path = write_result(folder, result, scored.predictions)
    return path, result


def _effective_penalty(params: dict, X: np.ndarray) -> dict:
    """The estimator's own penalty for the shared families' dimension-free parameters (C or
    alpha on this embedding size); empty for other probes."""
    from .probes import effective

    return effective(params, X.shape[1]) if X.ndim == 2 else {}


def _default_storage() -> str:
    folder = home() / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def _redact(url: str) -> str:
    """Storage URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url

