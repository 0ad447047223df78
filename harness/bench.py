"""``ctbench bench``: run a models x tasks grid, skipping results that already exist.

Every cell goes through ``ctbench.runner.run``, so features cached by one cell (or an earlier
run) are reused by the next. A cell whose result file already exists at the path the runner
would write, for the same training fraction, split hash, dataset version, trial budget and
protocol version, is skipped unless ``overwrite``; a cell that fails with a user error is
recorded and the grid goes on. A task run with non-default options (e.g.
``CTBENCH_REPORT_BEAM``) gets the runner's ``-opts<hash>`` folder suffix, so it neither replaces
nor is skipped against a default-options result.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Optional, Sequence

import typer
from rich.console import Console
from rich.progress import Progress

from .errors import CTBenchError
from .paths import home
from .progress import STAGES, StageLog, bar_columns, heartbeat, log_writer
from .provenance import PROTOCOL_VERSION
from .results import RESULT_FILE, result_dir
from .writable import check_output_folders

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import Dataset
    from .runner import RunConfig

Status = Literal["done", "skipped", "failed"]


@dataclass
class Cell:
    """The outcome of one (model, task) cell."""

    model: str
    task: str
    status: Status
    path: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    main_metric: str | None = None
    value: float | None = None
    probe: str | None = None  # the probe family and feature view of the cell (None: the task's own probe)
    view: str | None = None


@dataclass
class BenchReport:
    """Every cell of the grid, in run order."""

    cells: list[Cell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # probe/view pairs `--probe all` / `--view all` skipped

    def count(self, status: Status) -> int:
        return sum(c.status == status for c in self.cells)

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.status == "failed"]


@dataclass(frozen=True)
class BenchEvent:
    """Progress of the grid: a cell starts or ends, or the running cell reports a stage."""

    kind: Literal["start", "stage", "end"]
    index: int  # 0-based cell index
    total: int
    model: str
    task: str
    stage: str | None = None
    done: int = 0
    stage_total: int = 0
    status: Status | None = None


def parse_list(text: str, what: str) -> list[str]:
    """``a,b, c`` -> ``["a", "b", "c"]``; an empty list is a user error."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise CTBenchError(f"--{what} is empty; give comma-separated names, e.g. --{what} a,b")
    return list(dict.fromkeys(items))


def weights_tag(model: str, weights: str) -> str:
    """The weights folder name the runner uses: ``random``, ``none`` (a model without weights)
    or the first 12 hex of the sha256."""
    from .registry import MODELS
    from .weights import resolve_weights

    if weights == "random" and model not in MODELS:
        return "random"  # an unknown model: its cell fails in the runner with the registry's message
    return resolve_weights(MODELS.get(model).card, weights).tag


def task_options_tag(dataset: Dataset, cfg: RunConfig) -> str | None:
    """The runner's ``opts<hash>`` for task ``cfg.task`` of ``dataset`` (``None`` for default
    options): the task is built as ``ctbench.runner.run`` builds it, options from the environment
    included. The device plays no part in the options, so it is not resolved here."""
    from .registry import TASKS
    from .task_options import options_tag, task_kwargs

    spec = dataset.card.task(cfg.task)
    task_cls = TASKS.get(spec.category)
    return options_tag(task_cls(spec, dataset, **task_kwargs(task_cls, spec, dataclasses.replace(cfg, device="auto"))))


def _already_done(path: Path, train_fraction: float, split_hash: str, dataset_version: str, trials: int,
                  protocol_version: str = PROTOCOL_VERSION, probe: str | None = None) -> bool:
    """True when ``path`` holds a valid result for the same training fraction, split hash,
    dataset version, trial budget (``trials``; results that tuned nothing have none) and
    protocol version: a result of another dataset folder with the same name, of an older
    dataset version, of other splits, of another budget or of an older protocol is not the
    result this cell would write, and would never be ranked with it."""
    if not path.is_file():
        return False
    from .result_schema import read_result

    try:
        existing = read_result(path)
    except CTBenchError:
        return False  # unreadable or foreign: run the cell again and replace it
    return (existing.config.train_fraction == train_fraction and existing.split.hash == split_hash
            and existing.task.dataset_version == dataset_version
            and existing.protocol_version == protocol_version
            and (existing.probe is None or (existing.trials_budget == trials
                                            and _same_family(existing.probe.family, probe))))


def _same_family(recorded: str | None, wanted: str | None) -> bool:
    """Whether a result's probe family is the cell's. A result written before families were
    recorded counts as the default cell's (no ``--probe``): grids are not re-run on upgrade, and
    boards keep it in a table of its own (family ``default``)."""
    from .probes import DEFAULT_FAMILY

    return recorded == wanted or (recorded is None and wanted == DEFAULT_FAMILY)


def bench(
    models: Sequence[str],
    tasks: Sequence[str] | str,
    dataset: str = "phantom",
    weights: str = "auto",
    trials: int = 20,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    device: str = "auto",
    variant: str | None = None,
    storage: str | None = None,
    n_boot: int = 1000,
    strict: bool = False,
    train_fraction: float = 1.0,
    progress: Callable[[BenchEvent], None] | None = None,
    runner: Callable | None = None,
    precision: str | None = None,
    model_options: dict | None = None,
    probe: str | None = None,
    view: str | None = None,
) -> BenchReport:
    """Run every (model, task) of the grid into ``out`` (default ``$CTBENCH_HOME/results``).

    ``tasks`` may be ``"all"`` (every task of the dataset). Results land at
    ``result_dir(out, dataset, task, model, weights_tag, seed, train_fraction, opts)`` (``opts``:
    the runner's ``opts<hash>`` for non-default task options), which is also where existing
    results are looked for; one counts as done only for the same training fraction, split hash,
    dataset version, trial budget and protocol version (and probe family).

    ``probe`` / ``view`` (``--probe``, ``--view``; ``all`` expands) make a cell per probe family
    and feature view of each (model, task) (:func:`ctbench.runner.probe_runs`); pairs ``all``
    skipped are listed in the report's ``notes``.
    """
    from .datasets import open_dataset
    from .runner import RunConfig
    from .runner import run as default_runner

    if isinstance(tasks, str):
        tasks = parse_list(tasks, "tasks")
    ds = open_dataset(dataset)
    names = [t.name for t in ds.card.tasks] if list(tasks) == ["all"] else list(dict.fromkeys(tasks))
    for name in names:
        ds.card.task(name)  # unknown task names fail before any cell runs
    base = RunConfig(model="", task="", dataset=dataset, weights=weights, trials=trials, seed=seed, device=device,
                     strict=strict, variant=variant, storage=storage, n_boot=n_boot, train_fraction=train_fraction,
                     precision=precision, model_options=dict(model_options or {}))
    root = Path(out).expanduser() if out else home() / "results"
    check_output_folders(out, studies=storage is None)  # before any cell, not after the grid
    emit = progress or (lambda event: None)
    report, tags, split = BenchReport(), {}, ds.split_hash()
    grid = _probe_grid(base, models, names, ds, probe, view, report)
    opts: dict[str, str | None | CTBenchError] = {}
    for name in names:  # per task, as the runner will see it; an error fails that task's cells only
        try:
            opts[name] = task_options_tag(ds, dataclasses.replace(base, task=name))
        except CTBenchError as e:
            opts[name] = e
    for i, (cfg, failure) in enumerate(grid):
        model, task = cfg.model, cfg.task
        emit(BenchEvent("start", i, len(grid), model, task))
        on_stage = _stage_reporter(emit, i, len(grid), model, task)
        started = time.perf_counter()
        cell = (Cell(model, task, "failed", error=failure) if failure else
                _run_cell(cfg, root, ds, overwrite, tags, opts[task], runner or default_runner, on_stage, split))
        cell.probe, cell.view = cfg.probe, cfg.view
        cell.seconds = time.perf_counter() - started
        report.cells.append(cell)
        emit(BenchEvent("end", i, len(grid), model, task, status=cell.status))
    return report


def _probe_grid(base: RunConfig, models: Sequence[str], tasks: Sequence[str], ds: Dataset, probe: str | None,
                view: str | None, report: BenchReport) -> list[tuple[RunConfig, str | None]]:
    """The grid's cells in run order, one per (model, task, probe family and view), each with the
    error that fails it before it runs (an unknown model, a family its category lacks); pairs
    ``all`` skipped go to ``report.notes``."""
    from .runner import probe_runs

    cells: list[tuple[RunConfig, str | None]] = []
    for model in models:
        for task in tasks:
            cfg = dataclasses.replace(base, model=model, task=task, probe=probe, view=view)
            if probe is None and view is None:
                cells.append((cfg, None))
                continue
            try:
                configs, skipped = probe_runs(cfg, ds)
            except CTBenchError as e:
                cells.append((cfg, str(e)))
                continue
            report.notes += [f"{model} on {task}: skipped {line}" for line in skipped]
            cells += [(c, None) for c in configs]
    return cells


def _stage_reporter(emit: Callable[[BenchEvent], None], i: int, total: int, model: str,
                    task: str) -> Callable[[str, int, int], None]:
    """The runner's ``progress(stage, done, total)`` callback, as grid events of cell ``i``."""
    return lambda stage, done, stage_total: emit(BenchEvent("stage", i, total, model, task, stage, done, stage_total))


def result_file(cfg: RunConfig, root: Path, dataset_name: str, tag: str, opts: str | None = None) -> Path:
    """Where the grid puts (and looks for) the result of ``cfg``; ``opts`` (from
    :func:`task_options_tag`) suffixes the folder as the runner does, e.g. ``seed0-opts1a2b3c4d``."""
    model_tag = cfg.model + (f"-{cfg.variant}" if cfg.variant else "")
    return result_dir(root, dataset_name, cfg.task, model_tag, tag, cfg.seed, cfg.train_fraction, opts) / RESULT_FILE


def _run_cell(cfg: RunConfig, root: Path, ds: Dataset, overwrite: bool, tags: dict[str, str | CTBenchError],
              opts: str | None | CTBenchError, runner: Callable, on_stage: Callable[[str, int, int], None],
              split: str) -> Cell:
    """One cell: find where its result goes, skip it if a result of this dataset (``split``: its
    split hash) is there, otherwise run it."""
    try:
        if cfg.model not in tags:
            try:
                tags[cfg.model] = weights_tag(cfg.model, cfg.weights)
            except CTBenchError as e:
                tags[cfg.model] = e  # the same error for every task of this model, resolved once
        tag = tags[cfg.model]
        if isinstance(tag, CTBenchError):
            raise tag
        if isinstance(opts, CTBenchError):
            raise opts
        from .runner import run_options_tag

        path = result_file(cfg, root, ds.card.name, tag, run_options_tag(opts, cfg))  # + model options
        if not overwrite and _already_done(path, cfg.train_fraction, split, ds.card.version, cfg.trials,
                                           probe=_family(cfg, ds)):
            return Cell(cfg.model, cfg.task, "skipped", path)
        written, result = runner(dataclasses.replace(cfg, out=str(path.parent)), progress=on_stage)
    except CTBenchError as e:
        return Cell(cfg.model, cfg.task, "failed", error=str(e))
    main = result["task"]["main_metric"]
    return Cell(cfg.model, cfg.task, "done", Path(written), main_metric=main, value=result["metrics"][main]["value"])


def _family(cfg: RunConfig, ds: Dataset) -> str | None:
    """The probe family a cell's result records: its own, or the category's default (``linear``)
    for a global task run without ``--probe``, ``None`` for a task with its own probe."""
    if cfg.probe is not None:
        return cfg.probe
    from .probe_choice import families_of
    from .probes import DEFAULT_FAMILY
    from .registry import TASKS

    return DEFAULT_FAMILY if families_of(TASKS.get(ds.card.task(cfg.task).category)) else None


def bench_command(
    models: str = typer.Option(..., "--models", help="comma-separated model names, e.g. voxelfm,merlin"),
    tasks: str = typer.Option("all", "--tasks", help="comma-separated task names, or 'all' tasks of the dataset"),
    dataset: str = typer.Option("phantom", "--dataset", "-d", help="built-in name or prepared dataset folder"),
    weights: str = typer.Option("auto", "--weights", "-w", help="auto | random | PATH (same for every model)"),
    trials: int = typer.Option(20, "--trials", min=1, help="Optuna trials (same for every model)"),
    seed: int = typer.Option(0, "--seed", help="seed of tuning sampler, probes and bootstrap"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (encoders and task heads)"),
    out: Optional[str] = typer.Option(None, "--out", help="results root (default $CTBENCH_HOME/results)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="re-run cells whose result already exists"),
    variant: Optional[str] = typer.Option(None, "--variant", help="model size variant, e.g. tiny (tests)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: SQLite)"),
    n_boot: int = typer.Option(1000, "--bootstrap", min=10, help="bootstrap resamples"),
    strict: bool = typer.Option(False, "--strict", help="stop a cell at its first failing case"),
    train_fraction: float = typer.Option(1.0, "--train-fraction", min=0.0, max=1.0,
                                         help="nested share of training patients (label efficiency)"),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help="fp32 | bf16 for every model (default: each model's own, "
                                                 "that of its official code)"),
    model_option: list[str] = typer.Option([], "--model-option",
                                           help="KEY=VALUE adapter option for every model, repeatable"),
    probe: Optional[str] = typer.Option(None, "--probe", help="probe family for every global task: linear | knn | "
                                        "mlp | attentive | all (default linear); a cell per family and view"),
    view: Optional[str] = typer.Option(None, "--view", help="feature view: cls | mean | cls+mean | tokens | all "
                                       "(default: each family's own)"),
) -> None:
    """Run a models x tasks grid with one progress view; existing results are skipped."""
    from rich.console import Console

    from .devices import check_precision
    from .model_options import parse_model_options

    with _grid_display(Console(stderr=True)) as progress:
        report = bench(parse_list(models, "models"), parse_list(tasks, "tasks"), dataset, weights, trials, seed,
                       out, overwrite, device, variant, storage, n_boot, strict, train_fraction,
                       progress=progress, precision=check_precision(precision),
                       model_options=parse_model_options(model_option), probe=probe, view=view)
    _print_report(Console(), report)
    if report.failed:
        raise typer.Exit(1)


@contextmanager
def _grid_display(err: Console) -> Iterator[Callable[[BenchEvent], None]]:
    """Grid progress on ``err``: a grid bar and the running cell's stage bar on a terminal;
    piped, a log line per cell start and end and the cell's stage lines (:class:`StageLog`)."""
    if not err.is_terminal:
        log = StageLog(log_writer(err))

        def log_event(e: BenchEvent) -> None:
            cell = f"cell {e.index + 1}/{e.total}"
            if e.kind == "start":
                log.reset(prefix=f"{cell} ")
                log.line(f"{cell}: {e.model} on {e.task}")
            elif e.kind == "stage":
                log(e.stage or "", e.done, e.stage_total)
            else:
                log.line(f"{cell}: {e.model} on {e.task} {e.status}")

        with heartbeat(log):
            yield log_event
        return
    with Progress(*bar_columns(), console=err, transient=False) as bar:
        grid = bar.add_task("grid", total=None)
        stage = bar.add_task("", total=None, visible=False)

        def draw(e: BenchEvent) -> None:
            if e.kind == "start":
                bar.update(grid, total=e.total, description=f"grid: {e.model} on {e.task}")
                bar.reset(stage, total=None, description="  checking", visible=True)
            elif e.kind == "stage":
                label = STAGES.get(e.stage, e.stage)
                bar.update(stage, completed=e.done, total=e.stage_total, description=f"  {label}")
            else:
                bar.update(grid, advance=1)
                bar.update(stage, visible=False)

        yield draw


def _print_report(console: Console, report: BenchReport) -> None:
    """The grid's summary: a table on a terminal; piped, aligned lines with whole paths."""
    from .plain_text import print_listing

    title = (f"ctbench bench: {report.count('done')} run, {report.count('skipped')} skipped, "
             f"{report.count('failed')} failed")
    header = ("model", "task", "status", "main metric", "seconds", "result / error")
    rows = [[c.model, c.task + (f" ({c.probe} on {c.view})" if c.probe else ""), c.status,
             "" if c.value is None else f"{c.main_metric} {c.value:.3f}", f"{c.seconds:.1f}",
             c.error or str(c.path or "")] for c in report.cells]
    colours = {"done": "green", "skipped": "cyan", "failed": "red"}
    print_listing(console, title, header, rows, lambda i, v: f"[{colours[v]}]{v}[/]" if i == 2 else v)
    for note in report.notes:  # probe/view pairs a model or category cannot serve
        console.print(note, markup=False, highlight=False, soft_wrap=True)
