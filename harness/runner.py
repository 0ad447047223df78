"""``ctbench run``: one model on one task, from dataset to result file.

dataset -> encoder -> cached features -> shared splits -> tuned probe -> bootstrap -> result.
This module orchestrates; configuration (:mod:`ctbench.run_config`), task options
(:mod:`ctbench.task_options`), study naming (:mod:`ctbench.study`) and the result's sections
(:mod:`ctbench.result_assembly`) live in modules of their own.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .datasets import Dataset, open_dataset
from .devices import resolve_device
from .engine import Split, run_probe
from .errors import CTBenchError
from .extract import extract
from .paths import home
from .probe_choice import ALL, ProbeChoice, families_of, loads_tokens, resolve
from .probe_code import probe_code_hash
from .registry import MODELS, TASKS
from .result_assembly import Scored, assemble, probe_section
from .results import result_dir, write_result
from .run_config import RunConfig
from .study import default_storage, probe_families, study_attributes, study_name
from .task import EvalTask, ProbeTask
from .model_options import encoder_kwargs, model_options_tag
from .task_options import options_tag, task_kwargs

__all__ = ["RunConfig", "run", "probe_runs", "build_encoder", "train_subset", "options_tag", "task_kwargs",
           "study_name"]

Progress = Callable[[str, int, int], None]
Tick = Callable[[str], Callable[[int, int], None]]  # stage -> its (done, total) callback


def pick_device(device: str) -> str:
    """The run's ``--device`` resolved (``auto`` -> ``cuda`` when a GPU is visible, else
    ``cpu``): :func:`ctbench.devices.resolve_device`, kept under this name for callers."""
    return resolve_device(device)


def build_encoder(name: str, weights: str, device: str, variant: str | None, precision: str | None = None,
                  options: dict | None = None):
    """Instantiate a registered adapter with the run's weights, device, variant, precision
    (``None``: the adapter's default) and adapter options (:mod:`ctbench.model_options`)."""
    factory = MODELS.get(name)
    return factory(**encoder_kwargs(name, factory, weights, device, variant, precision, options))


def run_options_tag(task_opts: str | None, cfg: RunConfig) -> str | None:
    """The result folder's options suffix: the probe's ``<family>-<view>`` (any but the default,
    ``linear`` on ``cls``; ``cfg`` must name one pair, see :func:`probe_runs`), the task's
    ``opts<hash>`` and the model's ``model<hash>`` (non-default precision or adapter options),
    ``-``-joined; ``None`` for defaults."""
    model_opts = None
    if cfg.precision is not None or cfg.model_options:  # defaults: no need to look the model up
        model_opts = model_options_tag(MODELS.get(cfg.model), cfg.precision, cfg.model_options)
    one_pair = cfg.probe not in (None, ALL) and cfg.view not in (None, ALL)
    probe = ProbeChoice(cfg.probe, cfg.view).tag if one_pair else None
    return "-".join(t for t in (probe, task_opts, model_opts) if t) or None


def probe_runs(cfg: RunConfig, dataset: Dataset | None = None) -> tuple[list[RunConfig], list[str]]:
    """``cfg`` as one config per probe family and feature view it asks for (``--probe`` /
    ``--view``, ``all`` expanded; :func:`ctbench.probe_choice.resolve`), each naming its pair
    (``probe``/``view`` None: a task with its own probe), and a line per pair ``all`` skipped."""
    dataset = dataset or open_dataset(cfg.dataset)
    spec = dataset.card.task(cfg.task)
    choices, skipped = resolve(TASKS.get(spec.category), MODELS.get(cfg.model).card, cfg.probe, cfg.view, cfg.model,
                               spec.name)
    return [dataclasses.replace(cfg, probe=c.family, view=c.view) for c in choices], skipped


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


def _probe(task: ProbeTask, dataset: Dataset, rows, ex, cfg: RunConfig, study: str, code: str,
           tick: Tick, study_attrs: dict | None = None) -> Scored:
    splits = {s: _split(task, dataset, rows, ex.features, s) for s in ("train", "val", "test")}
    available = {n: len(s.case_ids) for n, s in splits.items()}
    # label efficiency: nested subsets of every split the final probe is fitted on
    splits["train"] = train_subset(splits["train"], cfg.train_fraction, cfg.seed)
    splits["val"] = train_subset(splits["val"], cfg.train_fraction, cfg.seed + 1)
    train, val, test = splits["train"], splits["val"], splits["test"]
    storage = cfg.storage or default_storage()
    out = run_probe(task, train, val, test, trials=cfg.trials, seed=cfg.seed, study_name=study,
                    storage=storage, n_boot=cfg.n_boot, on_trial=tick("tune"), on_refit=tick("refit"),
                    on_bootstrap=tick("bootstrap"), study_attrs=study_attrs)
    preds = pd.DataFrame({"case_id": test.case_ids, "patient_id": test.groups})
    for col, values in task.prediction_columns(test.y, out.predictions).items():
        preds[col] = values
    return Scored(
        metrics=out.estimates,
        predictions=preds,
        counts={n: len(s.case_ids) for n, s in splits.items()},
        patients={n: len(set(s.groups)) for n, s in splits.items()},
        probe=probe_section(out, cfg, task, train, val, available, storage, code),
        timings={"tune_s": out.seconds_tuning, "refit_s": out.seconds_refit, "bootstrap_s": out.seconds_bootstrap},
        artifacts=lambda folder: task.write_artifacts(folder, test.y, out.predictions),
    )


def _require_tokens(ex, cfg: RunConfig) -> None:
    """Refuse a token view when the cached features of a case hold no token grid."""
    missing = [c for c, f in ex.features.items() if f.tokens is None]
    if missing:
        raise CTBenchError(f"model {cfg.model!r} gave no token grid for case {missing[0]!r} ({len(missing)} of "
                           f"{len(ex.features)} cases): the {cfg.view!r} view needs tokens; use --view cls")


def _evaluate(task: EvalTask, rows: pd.DataFrame, ex, cfg: RunConfig, tick: Tick) -> Scored:
    part = rows[rows["case_id"].isin(list(ex.features))]
    emb = np.stack([ex.features[c].embedding for c in part["case_id"]])
    evaluated = tick("evaluate")  # one unit: the task scores (and bootstraps) in one call
    evaluated(0, 1)
    estimates, preds, protocol = task.evaluate(part, emb, seed=cfg.seed, n_boot=cfg.n_boot)
    evaluated(1, 1)
    if task.main_metric not in estimates:
        raise CTBenchError(
            f"task {task.spec.name!r}: its main metric {task.main_metric!r} could not be computed on "
            f"this dataset (computed: {', '.join(estimates) or 'none'})"
        )
    return Scored(estimates, preds, {"all": len(part)}, {"all": int(part["patient_id"].nunique())},
                  protocol=protocol)


def _ticker(progress: Progress | None) -> Tick:
    """``tick(stage)``: that stage's ``(done, total)`` callback (a no-op without ``progress``)."""
    if progress is None:
        return lambda stage: (lambda done, total: None)
    return lambda stage: (lambda done, total: progress(stage, done, total))


def run(cfg: RunConfig, progress: Progress | None = None) -> tuple[Path, dict]:
    """Run ``cfg`` and write its result; returns the result path and the result dict.

    ``progress(stage, done, total)`` reports every stage from its start (``done == 0``) and then
    per unit, in order: ``generate`` (built-in phantom only, per scan), ``model`` (building the
    encoder), ``read``/``extract``/``features`` (per case: read, encoded or cached, loaded),
    then ``tune`` (per trial), ``refit`` (per seed) and ``bootstrap`` (per metric) for a probed
    task or ``evaluate`` for an evaluation-only one, and ``write`` (the result files).
    """
    started = datetime.now(timezone.utc)
    tick = _ticker(progress)
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
    choices, _ = resolve(task, MODELS.get(cfg.model).card, cfg.probe, cfg.view, cfg.model, spec.name)
    if len(choices) != 1:
        raise CTBenchError(f"--probe {cfg.probe} --view {cfg.view} asks for {len(choices)} probes on task "
                           f"{spec.name!r}; split them with runner.probe_runs (as ctbench run and bench do)")
    choice = choices[0]
    cfg = dataclasses.replace(cfg, probe=choice.family, view=choice.view)  # the pair, recorded in the result
    if families_of(task):
        task.use_probe(choice.family, choice.view, device)
    opts = options_tag(task)
    run_opts = run_options_tag(opts, cfg)  # probe, task and model options: study and result folder
    built = tick("model")
    built(0, 1)
    encoder = build_encoder(cfg.model, cfg.weights, device, cfg.variant, cfg.precision, cfg.model_options)
    built(1, 1)

    manifest = dataset.manifest
    usable = task.usable(manifest)
    rows = manifest[usable]
    ex = extract(encoder, cfg.model, dataset, rows, tokens=task.uses_tokens or loads_tokens(choice),
                 strict=cfg.strict, progress=tick("extract"), on_read=tick("read"), on_load=tick("features"),
                 targets=spec.targets, task_name=f"task {spec.name!r}")  # a seed-conditioned model: ctbench.seeds
    if loads_tokens(choice):
        _require_tokens(ex, cfg)

    wsha = encoder.weights_ref.sha256
    model_tag = cfg.model + (f"-{cfg.variant}" if cfg.variant else "")
    if isinstance(task, EvalTask):
        scored = _evaluate(task, rows, ex, cfg, tick)
    else:
        code = probe_code_hash(task)
        pair = f"{choice.family}/{choice.view}" if choice.family else None
        study = study_name(dataset, spec, model_tag, wsha, encoder.preprocessing_id, cfg.seed, cfg.train_fraction,
                           run_opts, code, pair)
        attrs = study_attributes(dataset, spec, cfg.model, cfg.variant, wsha, encoder.preprocessing_id, cfg.seed,
                                 cfg.train_fraction, run_opts, code, probe_families(task, cfg.seed), choice.family,
                                 choice.view)
        scored = _probe(task, dataset, rows, ex, cfg, study, code, tick, attrs)

    weights_tag = "random" if encoder.weights_ref.is_random else wsha[:12]
    folder = Path(cfg.out) if cfg.out else result_dir(
        home() / "results", dataset.card.name, spec.name, model_tag, weights_tag, cfg.seed, cfg.train_fraction,
        run_opts)  # non-default task / model options: e.g. seed0-opts1a2b3c4d-model5e6f7a8b
    written = tick("write")
    written(0, 1)
    artifacts = scored.artifacts(folder) if scored.artifacts else []
    result = assemble(cfg, started, encoder, task, dataset, opts, scored, ex, usable, device, artifacts)
    path = write_result(folder, result, scored.predictions)
    written(1, 1)
    return path, result

