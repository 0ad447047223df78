"""Versioned schema of ``result.json`` files, with migrations from older versions.

Leaderboards are computed from result files, so every file is validated before it is used: a
malformed or foreign file is rejected with a message naming the file and the field. Files
written by older ctbench versions are upgraded step by step (``MIGRATIONS[n]`` turns version
``n`` into ``n + 1``) until they reach ``SCHEMA_VERSION``, then validated.

Version history
- 0: files written before ``schema_version`` was stamped (pre-release). They carry the split
  hash as a top-level ``split_hash`` string, no ``protocol_version`` (read as "0"), no
  ``task.direction`` (taken from the category's ``lower_is_better``), no
  ``model.weights.random_init`` (true when the sha256 is "random") and no ``predictions_file``.
- 1: the runner's current output (``ctbench.runner.run``). Optional fields added within version
  1 (absent in older files of the same version): ``task.dataset_collections``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ctbench.errors import CTBenchError
from ctbench.results import PREDICTIONS_FILE, SCHEMA_VERSION

Migration = Callable[[dict], dict]


class _Open(BaseModel):
    """Sections keep fields a newer runner adds (forward compatible within one version)."""

    model_config = ConfigDict(extra="allow")


class MetricValue(_Open):
    """A metric's point value and its bootstrap 95% interval (null where undefined)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_boot: int | None = None
    n_boot_requested: int | None = None


class CardInfo(_Open):
    """The part of the model card leaderboards use (the full card is kept as extra fields)."""

    name: str
    pretraining_datasets: tuple[str, ...] = ()


class WeightsInfo(_Open):
    choice: str
    sha256: str
    random_init: bool
    path: str | None = None


class ModelInfo(_Open):
    name: str
    variant: str | None = None
    card: CardInfo
    weights: WeightsInfo
    preprocessing_id: str | None = None

    @property
    def tag(self) -> str:
        """Model name plus variant, as in result folders (``voxelfm-tiny``)."""
        return self.name + (f"-{self.variant}" if self.variant else "")


class TaskInfo(_Open):
    name: str
    category: str
    version: str
    targets: tuple[str, ...] = Field(min_length=1)
    main_metric: str
    direction: Literal["maximize", "minimize"]
    dataset: str
    dataset_version: str | None = None
    dataset_collections: tuple[str, ...] = ()  # the card's collections; absent in older files
    kind: str | None = None
    horizons: tuple[float, ...] = ()
    options: dict[str, Any] | None = None  # task settings that change the probe (tasks with options)
    options_tag: str | None = None  # ``opts<8 hex>`` of non-default options, None for defaults


class SplitInfo(_Open):
    hash: str = Field(min_length=8)
    counts: dict[str, int] = {}
    patients: dict[str, int] = {}


class ConfigInfo(_Open):
    seed: int = 0
    trials: int | None = None
    train_fraction: float = Field(default=1.0, gt=0, le=1)

    @field_validator("train_fraction", mode="before")
    @classmethod
    def _full_when_absent(cls, v: Any) -> Any:
        return 1.0 if v is None else v


class ResultFile(_Open):
    """One validated result file (schema version 1)."""

    schema_version: Literal[1]
    ctbench_version: str
    git_sha: str | None = None
    protocol_version: str
    created: datetime
    config: ConfigInfo
    model: ModelInfo
    task: TaskInfo
    split: SplitInfo
    metrics: dict[str, MetricValue] = Field(min_length=1)
    probe: dict[str, Any] | None = None  # None for evaluation-only tasks (retrieval)
    bootstrap: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    environment: dict[str, Any] = {}
    failures: list[dict[str, Any]] = []
    predictions_file: str = PREDICTIONS_FILE
    migrated_from_schema: int | None = None

    @property
    def trials_budget(self) -> int | None:
        """The Optuna trials requested for the probe (``probe.trials_requested``, else the run's
        ``config.trials``); None for results that tuned nothing (``probe`` null, e.g. retrieval).
        Results of different budgets are never ranked together."""
        if self.probe is None:
            return None
        requested = self.probe.get("trials_requested", self.config.trials)
        return None if requested is None else int(requested)

    @field_validator("predictions_file")
    @classmethod
    def _plain_file_name(cls, v: str) -> str:
        """Result files may only reference a file in their own folder: no separators, no ``..``."""
        if not is_plain_file_name(v):
            raise ValueError(f"must be the plain name of a file beside the result file (e.g. "
                             f"{PREDICTIONS_FILE!r}), not a path; got {v!r}")
        return v

    @field_validator("created")
    @classmethod
    def _utc_when_naive(cls, v: datetime) -> datetime:
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)


def is_plain_file_name(name: str) -> bool:
    """True for a file name without any folder part (``predictions.csv``; not ``../x``, ``/etc/x``,
    ``a/b``, ``a\\b``, ``.``, ``..`` or empty)."""
    return (name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
            and not Path(name).is_absolute())


def _v0_to_v1(data: dict) -> dict:
    """Pre-release files: nest the split hash, add protocol "0" and the fields derived later."""
    out = dict(data)
    if "split" not in out and "split_hash" in out:
        out["split"] = {"hash": out.pop("split_hash"), "counts": {}, "patients": {}}
    out.setdefault("protocol_version", "0")
    out.setdefault("predictions_file", PREDICTIONS_FILE)
    task = out.get("task")
    if isinstance(task, dict):
        out["task"] = {"direction": _direction(task), **task}
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("weights"), dict):
        w = model["weights"]
        out["model"] = {**model, "weights": {"random_init": w.get("sha256") == "random", **w}}
    out["schema_version"] = 1
    return out


def _direction(task: dict) -> str:
    """A main metric's direction from its category's ``lower_is_better`` (maximize if unknown)."""
    from ctbench.registry import TASKS

    try:
        lower = getattr(TASKS.get(str(task.get("category"))), "lower_is_better", frozenset())
    except CTBenchError:
        lower = frozenset()
    return "minimize" if task.get("main_metric") in lower else "maximize"


MIGRATIONS: dict[int, Migration] = {0: _v0_to_v1}


def detect_version(data: dict, path: Path | str) -> int:
    """The schema version of ``data``; 0 for pre-release ctbench files, an error for foreign ones."""
    if "schema_version" in data:
        v = data["schema_version"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise CTBenchError(f"{path}: field 'schema_version' must be a non-negative integer, got {v!r}")
        return v
    if "ctbench_version" in data:
        return 0
    raise CTBenchError(
        f"{path}: not a ctbench result file (no 'schema_version' or 'ctbench_version' field); "
        f"move it out of the results folder or point --results at ctbench results only"
    )


def migrate(data: dict, path: Path | str) -> dict:
    """Upgrade ``data`` to ``SCHEMA_VERSION`` through the registered migration steps."""
    version = detect_version(data, path)
    if version > SCHEMA_VERSION:
        raise CTBenchError(
            f"{path}: schema_version {version} was written by a newer ctbench (this one reads up to "
            f"{SCHEMA_VERSION}); upgrade ctbench to build boards from it"
        )
    if version < SCHEMA_VERSION:
        data = {**data, "migrated_from_schema": version}
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise CTBenchError(f"{path}: no migration from schema_version {version}; re-run that result")
        data = step(data)
        version += 1
    return data


def parse_result(data: Any, path: Path | str) -> ResultFile:
    """Validate (after migrating) one result dict; errors name the file and the first bad field."""
    if not isinstance(data, dict):
        raise CTBenchError(f"{path}: a result file must hold a JSON object, got {type(data).__name__}")
    data = migrate(data, path)
    try:
        return ResultFile.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise CTBenchError(
            f"{path}: invalid result file at field '{where}': {first['msg']}; "
            f"re-run this result or remove the file"
        ) from None


def read_result(path: Path | str) -> ResultFile:
    """Read, migrate and validate one ``result.json``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CTBenchError(f"{path}: cannot be read ({e.strerror}); check the path and permissions") from None
    fix = "re-run this result or remove the file"
    if not raw.strip():
        raise CTBenchError(f"{path}: the result file is empty (an interrupted write?); {fix}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CTBenchError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); not a ctbench result file - "
                           f"{fix}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CTBenchError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}; truncated?); {fix}") from None
    except RecursionError:
        raise CTBenchError(f"{path}: JSON nested too deeply to be a result file; {fix}") from None
    return parse_result(data, path)
