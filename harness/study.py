"""Where a run's Optuna study lives, what it is called and what it says about itself.

A study's name reads like a result folder, ``dataset/task/model/weights/seed0-frac1-<hash>``,
so a user finds it in optuna-dashboard; the 16-hex ``<hash>`` covers everything that defines
the search (:func:`study_key`: dataset and version, task and version, model, full weights hash,
preprocessing, split hash, seed, training fraction, protocol version, probe code, task options,
probe family and feature view),
so runs that must not share trials never do, whatever the readable part shows. The readable
parts come from dataset cards and model names (untrusted): each is slugified and capped, and
the hash is computed from the raw names, so names that slugify alike still get different studies.

The study also carries user attributes (model, variant, weights, task, category, dataset and
version, split hash, protocol version, probe families, probe family and view, budget, ...) and the name of its metric,
the task's main metric, which is what optuna-dashboard shows.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning

from .datasets import Dataset, TaskSpec
from .paths import home
from .provenance import PROTOCOL_VERSION
from .safe_paths import slugify

STUDIES_DIR = "studies"
STORAGE_FILE = "optuna.db"
PART_CHARS = 48  # longest readable part of a study name (Optuna stores names of up to 512 characters)
BUDGET = "budget"


def study_key(dataset: Dataset, spec: TaskSpec, model_tag: str, weights_sha: str, preprocessing_id: str,
              seed: int, train_fraction: float, opts: str | None = None, code: str = "",
              probe: str | None = None) -> str:
    """Everything that defines a run's search, ``|``-joined: the protocol version and ``code``
    (:func:`ctbench.probe_code.probe_code_hash`) included, so trials of older probe code never mix
    with new ones; ``opts``, the run's options tag (a probe's ``<family>-<view>``, a task's
    ``opts<8 hex>``, a model's ``model<8 hex>``: :func:`ctbench.runner.run_options_tag`), only for
    non-default options; ``probe``, the run's ``<family>/<view>`` (every family and view, the default
    included, tunes in a study of its own)."""
    parts = [dataset.card.name, dataset.card.version, spec.name, spec.version, model_tag, weights_sha[:16],
             preprocessing_id, dataset.split_hash()[:16], f"seed{seed}", f"frac{train_fraction:g}",
             f"protocol{PROTOCOL_VERSION}", f"code{code}"]
    return "|".join(parts + ([opts] if opts else []) + ([f"probe{probe}"] if probe else []))


def study_name(dataset: Dataset, spec: TaskSpec, model_tag: str, weights_sha: str, preprocessing_id: str,
               seed: int, train_fraction: float, opts: str | None = None, code: str = "",
               probe: str | None = None) -> str:
    """``dataset/task/model/weights/seed<n>-frac<f>[-<opts>]-<16 hex of study_key>``."""
    key = study_key(dataset, spec, model_tag, weights_sha, preprocessing_id, seed, train_fraction, opts, code, probe)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    run = f"seed{seed}-frac{train_fraction:g}" + (f"-{opts}" if opts else "")
    readable = [dataset.card.name, spec.name, model_tag, weights_tag(weights_sha), run]
    return "/".join(_part(p) for p in readable) + f"-{digest}"


def weights_tag(weights_sha: str) -> str:
    """``random``/``none`` as they are, else the first 12 hex digits (as in result folders)."""
    return weights_sha if weights_sha in ("random", "none") else weights_sha[:12]


def _part(name: str) -> str:
    return slugify(name)[:PART_CHARS].strip("-.") or "unnamed"


def study_attributes(dataset: Dataset, spec: TaskSpec, model: str, variant: str | None, weights_sha: str,
                     preprocessing_id: str, seed: int, train_fraction: float, opts: str | None, code: str,
                     families: list[str], family: str | None = None, view: str | None = None) -> dict[str, Any]:
    """What a study records about itself (Optuna user attributes, shown by optuna-dashboard):
    the run it belongs to and the protocol that makes its trials comparable. The budget is added
    by the engine (:func:`describe`)."""
    return {
        "model": model, "variant": variant, "weights": weights_sha, "preprocessing": preprocessing_id,
        "task": spec.name, "task_version": spec.version, "category": spec.category,
        "main_metric": spec.main_metric, "dataset": dataset.card.name, "dataset_version": dataset.card.version,
        "split_hash": dataset.split_hash(), "protocol_version": PROTOCOL_VERSION, "probe_code": code,
        "probe_families": families, "probe_family": family, "probe_view": view, "seed": seed,
        "train_fraction": train_fraction, "options_tag": opts,
    }


def describe(study: optuna.Study, metric: str | None, attrs: dict[str, Any] | None, budget: int | None) -> None:
    """Name the study's metric and store ``attrs`` as user attributes, writing only what differs
    (workers sharing a study write the same values; Optuna ignores their races). ``budget``: the
    largest trial budget asked of the study so far (a run with a larger ``--trials`` extends it)."""
    if metric is not None and study.metric_names != [metric]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names([metric])
    wanted = dict(attrs or {})
    current = study.user_attrs
    if budget is not None:
        wanted[BUDGET] = max(int(budget), int(current.get(BUDGET) or 0))
    for key, value in wanted.items():
        if current.get(key, object()) != value:
            study.set_user_attr(key, value)


class _SpaceProbe:
    """An Optuna trial stand-in that answers every suggestion with its first choice (or lower
    bound) and remembers the choices of the ``probe`` parameter."""

    def __init__(self) -> None:
        self.choices: dict[str, list[Any]] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.choices[name] = list(choices)
        return self.choices[name][0]

    def suggest_float(self, name: str, low: float, high: float, **kwargs: Any) -> float:
        return low

    def suggest_int(self, name: str, low: int, high: int, **kwargs: Any) -> int:
        return low


def probe_families(task: Any, seed: int = 0) -> list[str]:
    """The probe families ``task``'s search space tunes over (its ``probe`` parameter's choices),
    or the one family it always uses; empty when the task does not name one."""
    space = _SpaceProbe()
    try:
        params = task.suggest(space, seed)
    except Exception:  # a third-party search space that needs a real trial: families unknown
        return []
    if "probe" in space.choices:
        return [str(c) for c in space.choices["probe"]]
    family = params.get("probe") if isinstance(params, dict) else None
    return [str(family)] if family is not None else []


def default_storage() -> str:
    """The SQLite study storage ``$CTBENCH_HOME/studies/optuna.db`` (used without ``--storage``);
    ``optuna-dashboard sqlite:///$CTBENCH_HOME/studies/optuna.db`` shows its studies."""
    folder = home() / STUDIES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / STORAGE_FILE}"


def redact(url: str) -> str:
    """Storage URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
