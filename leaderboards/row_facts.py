"""What a board row says about its model and its run, read tolerantly from result files.

Model-card facts (parameters, licence, supervision, pre-training data, input size) and the
provenance of a run (ctbench version and commit, adapter package/version/commit, weights sha256
and revision, protocol, split, budget, precision). Fields that newer runners add
(``model.adapter``, ``model.precision``, ``model.weights.revision``) are absent from older files
and read as None; a field is never guessed.
"""

from __future__ import annotations

from typing import Any

from ctbench.result_schema import ResultFile

#: card supervision of reference rows: deterministic baselines and controls without pre-training
REFERENCE_SUPERVISION = "none"


def _get(obj: Any, name: str) -> Any:
    """``obj.name`` for a declared field or one kept from a newer file (``model_extra``), else None."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None and getattr(obj, "model_extra", None):
        value = obj.model_extra.get(name)
    return value


def card_facts(result: ResultFile) -> dict[str, Any]:
    """The card columns of a row: title, architecture, parameters, licence, supervision,
    pre-training datasets, input size (voxels) and spacing (mm), as the card states them."""
    card = result.model.card
    spec = card.input
    return {
        "title": card.title, "architecture": card.architecture, "parameters": card.parameters,
        "licence": card.licence, "supervision": card.supervision,
        "pretraining_datasets": list(card.pretraining_datasets),
        "input_size": None if spec is None else _plain(spec.spatial_size),
        "spacing_mm": None if spec is None else _plain(spec.spacing_mm),
    }


def is_reference(result: ResultFile) -> bool:
    """A reference row: a model whose card says it learnt from nothing (baselines, chance, oracle)."""
    return (result.model.card.supervision or "").strip().lower() == REFERENCE_SUPERVISION


def run_facts(result: ResultFile) -> dict[str, Any]:
    """Provenance of one run beyond what the board already keeps: adapter, precision, weights
    revision, protocol version, trial budget, bootstrap resamples and probe family."""
    model = result.model
    adapter = _get(model, "adapter")
    return {
        "adapter": None if adapter is None else {k: _get(adapter, k) for k in ("package", "version", "commit")},
        "precision": _get(model, "precision"),
        "weights_revision": _get(model.weights, "revision"),
        "protocol_version": result.protocol_version,
        "trials": result.trials_budget,
        "bootstrap": result.bootstrap.resamples,
        "probe": None if result.probe is None else result.probe.best_params.get("probe"),
    }


def failures(result: ResultFile) -> list[str]:
    """``case: reason`` of every case whose features could not be extracted."""
    return [f"{f.case_id}: {f.reason}" for f in result.failures]


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
