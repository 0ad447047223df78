"""Versioned schema of ``result.json`` files, with migrations from older versions.

One pydantic model, :class:`ResultFile`, describes what the runner writes
(:func:`ctbench.results.write_result` validates every result through it before writing) and
what leaderboards and :func:`ctbench.load_results` read (:func:`read_result`). Its JSON Schema
is ``docs/result.schema.json`` (``ctbench results schema``).

Reading is lenient where it must be: sections keep fields a newer runner adds (``extra="allow"``,
forward compatible within one version) and fields added within a version have defaults. Writing
is strict: a field the runner writes must be declared here (see :data:`WRITING`), so a misspelt
or undeclared field fails when written, not when a board is built. Files written by older
ctbench versions are upgraded step by step (``MIGRATIONS[n]`` turns version ``n`` into
``n + 1``) until they reach ``SCHEMA_VERSION``, then validated.

Version history
- 0: files written before ``schema_version`` was stamped (pre-release). They carry the split
  hash as a top-level ``split_hash`` string, no ``protocol_version`` (read as "0"), no
  ``task.direction`` (taken from the category's ``lower_is_better``), no
  ``model.weights.random_init`` (true when the sha256 is "random") and no ``predictions_file``.
- 1: the runner's current output (``ctbench.runner.run``). Optional fields added within version
  1 (absent in older files of the same version): ``task.dataset_collections``,
  ``timings.cases_recovered``, ``warnings``, ``artifacts``, ``config.task_options``,
  ``model.adapter``, ``model.precision``, ``model.options``, ``model.settings``,
  ``model.weights.revision``, ``config.precision``, ``config.model_options``,
  ``probe.tuning_curve``, ``probe.trial_fit_s``, ``probe.family``, ``probe.view``,
  ``config.probe``, ``config.view``. Local paths (``config``, ``model.weights.path``, storages) are recorded
  portably since ``model.adapter`` came in (:mod:`ctbench.portable`); older files may hold
  absolute paths.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_serializer,
                      field_validator, model_validator)

from .errors import CTBenchError

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.csv"

#: validation-context key: ``{WRITING: True}`` refuses undeclared fields (the writer's check)
WRITING = "writing"

Migration = Callable[[dict], dict]


class _Open(BaseModel):
    """A section that keeps fields a newer runner adds (forward compatible within one version);
    when writing, undeclared fields are refused unless the section is ``open_on_write``."""

    model_config = ConfigDict(extra="allow")
    open_on_write: ClassVar[bool] = False

    @model_validator(mode="after")
    def _declared_when_writing(self, info: ValidationInfo) -> Any:
        extra = self.model_extra or {}
        if extra and not self.open_on_write and (info.context or {}).get(WRITING):
            raise ValueError(f"undeclared field(s) {', '.join(map(repr, sorted(extra)))}: a typo, or a "
                             f"new field to declare in ctbench.result_schema")
        return self


class MetricValue(_Open):
    """A metric's point value and its bootstrap 95% interval (null where undefined)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_boot: int | None = None  # resamples where the metric was defined
    n_boot_requested: int | None = None


class CardInput(_Open):
    """The card's input specification (:class:`ctbench.card.InputSpec`)."""

    open_on_write: ClassVar[bool] = True
    orientation: str | None = None
    spacing_mm: tuple[float, float, float] | str | None = None
    hu_window: tuple[float, float] | None = None
    intensity: str | None = None
    spatial_size: tuple[int, int, int] | str | None = None
    axis_order: str | None = None


class CardWeights(_Open):
    """Where the card says official weights live (:class:`ctbench.card.WeightsSpec`)."""

    open_on_write: ClassVar[bool] = True
    hub_repo: str | None = None
    hub_repo_type: str | None = None
    filename: str | None = None
    revision: str | None = None
    sha256: str | None = None
    format: str | None = None


class CardInfo(_Open):
    """The model card as written (:class:`ctbench.card.ModelCard`, validated where it is built;
    open on write so a plugin's card subclass keeps its fields)."""

    open_on_write: ClassVar[bool] = True
    name: str
    title: str | None = None
    citation: str | None = None
    licence: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    embedding_dim: int | None = None
    token_dim: int | None = None
    supervision: str | None = None
    pretraining_datasets: tuple[str, ...] = ()
    input: CardInput | None = None
    weights: CardWeights | None = None
    parity: dict[str, Any] | None = None  # ParityFacts: official reference, fixture, tolerance, date
    group: str | None = None  # paper | newer | baseline | other (absent in older files)
    weights_access: str | None = None  # public | gated | none
    non_commercial: bool | None = None
    seed_conditioned: bool | None = None  # features computed around a manifest seed point (ctbench.seeds)


class WeightsInfo(_Open):
    """The weights a run used: ``--weights`` choice, sha256 (``random`` for random init), file."""

    choice: str = Field(description="the --weights argument: auto, random or a path")
    sha256: str = Field(description="sha256 of the weights file, or 'random'")
    random_init: bool
    path: str | None = Field(default=None, description="the weights file: '$CTBENCH_HOME/...' under ctbench's "
                                                       "home, else its file name (never an absolute path)")
    revision: str | None = Field(default=None, description="hub commit of a pulled file (from the weights lock); "
                                                           "null for a local path, random init, or older files")

    @property
    def tag(self) -> str:
        """``random`` or the first 12 hex digits of the sha256 (as in result folders)."""
        return "random" if self.random_init else self.sha256[:12]


class AdapterInfo(_Open):
    """The code behind a model: the adapter module and the distribution it comes from."""

    module: str | None = Field(default=None, description="module implementing the model's encoder")
    package: str | None = Field(default=None, description="distribution name ('ctbench' for built-in adapters)")
    version: str | None = Field(default=None, description="version of that distribution")
    commit: str | None = Field(default=None, description="git commit of that distribution when installed from a "
                                                         "git checkout ('-dirty' if modified), else null")


class ModelInfo(_Open):
    name: str
    variant: str | None = None
    card: CardInfo
    weights: WeightsInfo
    preprocessing_id: str | None = None
    adapter: AdapterInfo | None = None  # absent in older files
    precision: Literal["fp32", "bf16"] | None = Field(
        default=None, description="forward precision of the encoder (bf16 = bfloat16 autocast); null when the "
                                  "adapter declares none, or in older files")
    options: dict[str, Any] | None = Field(default=None, description="adapter options given (--model-option)")
    settings: dict[str, Any] | None = Field(default=None, description="the adapter's feature-shaping settings "
                                                                      "(hashed into preprocessing_id), when it "
                                                                      "declares them")

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
    hash: str = Field(min_length=8, description="sha256 of the dataset's patient-level split assignment")
    counts: dict[str, int] = Field(default={}, description="split -> cases used")
    patients: dict[str, int] = Field(default={}, description="split -> patients used")


class ConfigInfo(_Open):
    """The run's :class:`ctbench.run_config.RunConfig`."""

    model: str | None = None
    task: str | None = None
    dataset: str | None = None
    weights: str | None = None
    trials: int | None = None
    seed: int = 0
    device: str | None = None
    out: str | None = None
    strict: bool = False
    variant: str | None = None
    storage: str | None = None
    n_boot: int | None = None
    train_fraction: float = Field(default=1.0, gt=0, le=1)
    task_options: dict[str, Any] = {}
    precision: str | None = None  # --precision as given (None: the model's default)
    model_options: dict[str, Any] = {}  # --model-option values as given
    probe: str | None = None  # the probe family this result fitted (None: the task's own probe)
    view: str | None = None  # the feature view it read

    @field_validator("train_fraction", mode="before")
    @classmethod
    def _full_when_absent(cls, v: Any) -> Any:
        return 1.0 if v is None else v


class ConvergenceWarnings(_Open):
    tuning: int = 0  # warnings over all tuning trials
    per_trial: dict[str, int] = {}  # trial number -> warnings
    refit: int = 0


class TuningCurve(_Open):
    """Validation main metric against trials spent (:mod:`ctbench.tuning_curve`), index n-1 = n
    trials, over the budget's completed trials in trial-number order."""

    best_so_far: list[float] = Field(description="best validation value among the first n trials")
    expected_max: list[float] = Field(description="expected best of n trials drawn with replacement from the "
                                                  "budget's values (Dodge et al. 2019); minimum when minimising")


class TrialFitSeconds(_Open):
    """Probe fit time per tuning trial (fit on train + validation predictions)."""

    per_trial: list[float | None] = Field(description="seconds per budget trial, trial-number order (null: unknown)")
    median: float | None = Field(default=None, description="median of the known per-trial seconds")


class ProbeInfo(_Open):
    """How the probe was tuned and refitted; null for evaluation-only tasks (retrieval)."""

    best_params: dict[str, Any] = {}
    best_validation_value: float | None = None
    trials: int | None = None  # completed trials counted in the budget
    trials_requested: int | None = None
    sampler: str | None = None
    seed: int | None = None
    seeds: list[int] = []  # refit seeds
    study: str | None = None
    storage: str | None = None  # without password
    refit_on: str | None = None
    train_fraction: float | None = None
    fitted_cases: int | None = None
    fitted_patients: int | None = None
    available_cases: dict[str, int] = {}
    stochastic: bool | None = None
    trials_failed: int = 0
    failures: list[str] = []
    convergence_warnings: ConvergenceWarnings | None = None
    effective_penalty: dict[str, float] = {}
    code: str | None = None  # hash of the probe code (ctbench.probe_code)
    family: str | None = None  # probe family (linear, knn, mlp, attentive); absent in older files, None: own probe
    view: str | None = None  # feature view (cls, mean, cls+mean, tokens); absent in older files
    tuning_curve: TuningCurve | None = None  # absent in older files
    trial_fit_s: TrialFitSeconds | None = None  # absent in older files


class BootstrapInfo(_Open):
    resamples: int | None = None
    level: float | None = None
    unit: str | None = None


class TimingsInfo(_Open):
    extract_s: float | None = None
    cases_extracted: int | None = None
    cases_cached: int | None = None
    cases_recovered: int | None = None  # damaged cache files moved aside and re-extracted
    tune_s: float | None = None
    refit_s: float | None = None
    bootstrap_s: float | None = None
    total_s: float | None = None


class EnvironmentInfo(_Open):
    """Python, platform and device, then library name -> version."""

    open_on_write: ClassVar[bool] = True
    __pydantic_extra__: dict[str, str | None] = Field(init=False)
    python: str | None = None
    platform: str | None = None
    device: str | None = None
    gpu: str | None = None


class CaseNote(_Open):
    """A per-case failure or warning."""

    case_id: str
    reason: str


class ResultFile(_Open):
    """A ctbench result file (``result.json``, schema version 1): one model on one task, with
    its provenance, the tuned probe, test metrics with bootstrap CIs, timings and environment;
    per-case predictions lie beside it in ``predictions_file``."""

    schema_version: Literal[1] = Field(description="version of this schema; older files are migrated when read")
    ctbench_version: str
    git_sha: str | None = Field(default=None, description="commit of the ctbench checkout ('-dirty' if modified)")
    protocol_version: str = Field(description="fair-comparison protocol version; results of different "
                                              "protocols are never ranked together")
    created: datetime = Field(description="when the run started (ISO 8601, UTC)")
    config: ConfigInfo
    model: ModelInfo
    task: TaskInfo
    split: SplitInfo
    probe: ProbeInfo | None = Field(default=None, description="null for evaluation-only tasks (retrieval)")
    protocol: dict[str, Any] | None = Field(default=None, description="what an evaluation-only task records "
                                                                      "of its protocol (null for probed tasks)")
    metrics: dict[str, MetricValue] = Field(min_length=1, description="test metric name -> value and 95% CI")
    bootstrap: BootstrapInfo = BootstrapInfo()
    timings: TimingsInfo = TimingsInfo()
    environment: EnvironmentInfo = EnvironmentInfo()
    failures: list[CaseNote] = Field(default=[], description="cases whose features could not be extracted")
    warnings: list[CaseNote] = Field(default=[], description="cases with implausible images (still used)")
    excluded_without_target: int = Field(default=0, description="manifest rows left out for lack of a target")
    artifacts: list[str] = Field(default=[], description="extra files the task wrote beside the result")
    predictions_file: str = Field(default=PREDICTIONS_FILE, description="per-case test predictions (CSV), "
                                                                         "a file name beside the result")
    migrated_from_schema: int | None = Field(default=None, description="set only when read: the older "
                                                                        "schema version a file was upgraded from")

    @property
    def trials_budget(self) -> int | None:
        """The Optuna trials requested for the probe (``probe.trials_requested``, else the run's
        ``config.trials``); None for results that tuned nothing (``probe`` null, e.g. retrieval).
        Results of different budgets are never ranked together."""
        if self.probe is None:
            return None
        given = "trials_requested" in self.probe.model_fields_set
        requested = self.probe.trials_requested if given else self.config.trials
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

    @field_serializer("created")
    def _isoformat(self, v: datetime) -> str:
        """``+00:00`` rather than pydantic's ``Z``: readable by ``datetime.fromisoformat`` on 3.10."""
        return v.isoformat()


def is_plain_file_name(name: str) -> bool:
    """True for a file name without any folder part (``predictions.csv``; not ``../x``, ``/etc/x``,
    ``a/b``, ``a\\b``, ``.``, ``..`` or empty)."""
    return (name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
            and not Path(name).is_absolute())


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a current (version ``SCHEMA_VERSION``) result file."""
    schema = ResultFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# migrations -----------------------------------------------------------------------------------


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
    """A main metric's direction as its task category declares it (:meth:`Task.direction_of`);
    maximize when the category or metric is unknown."""
    from .datasets import TaskSpec
    from .registry import TASKS

    metric = str(task.get("main_metric"))
    try:
        cls = TASKS.get(str(task.get("category")))
    except CTBenchError:
        return "maximize"
    try:
        spec = TaskSpec(name=str(task.get("name")), category=str(task.get("category")), main_metric=metric,
                        targets=tuple(task.get("targets") or ()), kind=task.get("kind"))
        return cls.for_scoring(spec).direction_of(metric)
    except (CTBenchError, ValueError, TypeError):  # best effort for pre-release files: an odd spec maximizes
        return "maximize"


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


# reading --------------------------------------------------------------------------------------


def parse_result(data: Any, path: Path | str) -> ResultFile:
    """Validate (after migrating) one result dict; errors name the file and the first bad field."""
    if not isinstance(data, dict):
        raise CTBenchError(f"{path}: a result file must hold a JSON object, got {type(data).__name__}")
    data = migrate(data, path)
    try:
        return ResultFile.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise CTBenchError(
            f"{path}: invalid result file at field '{error_location(first)}': {first['msg']}; "
            f"re-run this result or remove the file"
        ) from None


def error_location(error: Any) -> str:
    """A pydantic error's location as ``a.b.c`` (``(top level)`` for the whole file)."""
    return ".".join(str(p) for p in error["loc"]) or "(top level)"


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
