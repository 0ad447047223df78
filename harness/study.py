"""Where a run's Optuna study lives and what it is called."""

from __future__ import annotations

from .datasets import Dataset, TaskSpec
from .paths import home
from .provenance import PROTOCOL_VERSION


def study_name(dataset: Dataset, spec: TaskSpec, model_tag: str, weights_sha: str, preprocessing_id: str,
               seed: int, train_fraction: float, opts: str | None = None, code: str = "") -> str:
    """The Optuna study of a run: everything that defines its search, ``|``-joined, including
    the protocol version and ``code`` (:func:`ctbench.probe_code.probe_code_hash`), so trials of
    older probe code never mix with new ones; ``opts`` (from
    :func:`ctbench.task_options.options_tag`) is appended only for non-default task options."""
    parts = [dataset.card.name, dataset.card.version, spec.name, spec.version, model_tag, weights_sha[:16],
             preprocessing_id, dataset.split_hash()[:16], f"seed{seed}", f"frac{train_fraction:g}",
             f"protocol{PROTOCOL_VERSION}", f"code{code}"]
    return "|".join(parts + ([opts] if opts else []))


def default_storage() -> str:
    """The SQLite study storage under ``$CTBENCH_HOME/studies`` (used without ``--storage``)."""
    folder = home() / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def redact(url: str) -> str:
    """Storage URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
