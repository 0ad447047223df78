"""``ctbench selftest``: the calibration ladder oracle > baselines > chance on the phantom.

For each task of a phantom dataset (all categories, or those asked for), every rung of the
ladder is run through :func:`ctbench.runner.run`, the path ``ctbench run`` takes (features,
shared splits, Optuna tuning, refit, bootstrap, result file). Budget: the probes fitted in
seconds (classification, regression, survival) get the ``ctbench run`` default of 20 trials; tasks
that train a neural head for minutes per trial on a CPU get fewer (:data:`HEAD_TRIALS`: three for
report generation, one for localisation and segmentation, whose search keeps to the linear head,
``--head linear``). The table states each task's budget, the same for all its rungs. The
rungs: ``oracle`` (the phantom's ground truth, the ceiling), the reference baselines that are
registered (``hu-histogram``, ``thumbnail``), and ``chance`` (seeded noise, the floor).

The ladder holds on a task (:func:`judge`) when, on its main metric ("better" means higher, or
lower for a metric to minimise):

1. separation: the oracle's 95% CI lies entirely on the better side of chance's 95% CI (oracle
   CI low > chance CI high): the harness detects signal where there is some;
2. ceiling: no baseline is better than the oracle in point estimate (a model above ground truth
   means a leak or a broken oracle);
3. floor: no baseline is significantly worse than chance: its point estimate does not lie on the
   worse side of chance's 95% CI (worse than noise means a probe that learns the wrong way round).

A baseline sees only part of the signal (an HU histogram cannot place a lesion), so it is not
required to beat chance on every task; the table marks where it does so with non-overlapping CIs.

A baseline without token grids is left out of the tasks that need them (``n/a``). A failed run of
any rung fails its task. Results go under ``$CTBENCH_HOME/selftest`` (or ``out``), so they never
mix with the results boards are built from; features and studies are cached as for any run, so
a second self-test reuses them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .errors import CTBenchError

TOP, BOTTOM = "oracle", "chance"
BASELINES = ("hu-histogram", "thumbnail")
DEFAULT_TRIALS = 20  # probes fitted in seconds: the `ctbench run` default
# trials of the tasks that train a neural head for minutes per trial on a CPU
HEAD_TRIALS = {"report-generation": 3, "localisation": 1, "segmentation": 1}
# task options of the self-test's runs, by category: the segmentation search is kept to the linear
# head (the conv decoder trains at up to 64 output cells per token, tens of minutes on a CPU)
TASK_OPTIONS: dict[str, dict[str, str]] = {"segmentation": {"head": "linear"}}
DEFAULT_BOOTSTRAP = 1000


@dataclass
class Rung:
    """One model's main-metric estimate on a task (or why there is none)."""

    model: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    error: str | None = None  # the run failed
    skipped: str | None = None  # not applicable (e.g. no token grid for a dense task)
    seconds: float = 0.0


@dataclass
class TaskCheck:
    """The ladder on one task: its rungs, top to bottom, and why it fails (empty: it holds)."""

    task: str
    category: str
    metric: str
    direction: str
    trials: int = DEFAULT_TRIALS  # Optuna trials of every rung on this task (0: it tunes nothing)
    options: dict[str, str] = field(default_factory=dict)  # task options of every rung's run
    rungs: list[Rung] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def ladder_models(registered: Sequence[str]) -> list[str]:
    """``oracle``, the baselines that are registered, ``chance``: the rungs, top to bottom."""
    return [TOP, *(b for b in BASELINES if b in registered), BOTTOM]


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def judge(rungs: Sequence[Rung], direction: str) -> list[str]:
    """Why the ladder fails on one task (see the module docstring); empty when it holds."""
    by = {r.model: r for r in rungs}
    problems = [f"{r.model} failed: {r.error}" for r in rungs if r.error]
    top, bottom = by.get(TOP), by.get(BOTTOM)
    if problems or top is None or bottom is None or top.value is None or bottom.value is None:
        return problems or ["the oracle or chance did not run"]
    worse_edge = top.ci_low if direction == "maximize" else top.ci_high
    chance_edge = bottom.ci_high if direction == "maximize" else bottom.ci_low
    if worse_edge is None or chance_edge is None or not _better(worse_edge, chance_edge, direction):
        problems.append(f"oracle CI [{_num(top.ci_low)}, {_num(top.ci_high)}] overlaps chance CI "
                        f"[{_num(bottom.ci_low)}, {_num(bottom.ci_high)}]")
    for r in rungs:
        if r.model in (TOP, BOTTOM) or r.value is None:
            continue
        if _better(r.value, top.value, direction):
            problems.append(f"{r.model} {_num(r.value)} beats the oracle {_num(top.value)}")
        floor = bottom.ci_low if direction == "maximize" else bottom.ci_high
        if floor is not None and _better(floor, r.value, direction):
            problems.append(f"{r.model} {_num(r.value)} is worse than chance (CI [{_num(bottom.ci_low)}, "
                            f"{_num(bottom.ci_high)}])")
    return problems


def clearly_above(rung: Rung, bottom: Rung, direction: str) -> bool:
    """Whether ``rung``'s 95% CI lies entirely on the better side of ``bottom``'s."""
    if None in (rung.ci_low, rung.ci_high, bottom.ci_low, bottom.ci_high):
        return False
    if direction == "maximize":
        return rung.ci_low > bottom.ci_high
    return rung.ci_high < bottom.ci_low


def _num(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def phantom_tasks(dataset, categories: Sequence[str] | None) -> list:
    """The dataset's tasks to check: all, or those of ``categories`` (each must have one)."""
    specs = list(dataset.card.tasks)
    if not categories:
        return specs
    from .registry import TASKS

    have = sorted({s.category for s in specs})
    for c in categories:
        if c not in TASKS:
            TASKS.get(c)  # unknown: the registry's "did you mean" error
        if c not in have:
            raise CTBenchError(
                f"dataset {dataset.card.name!r} has no task of category {c!r} (it has {', '.join(have)}); to "
                f"self-test a category of a plugin, write a phantom (ctbench datasets phantom --out DIR), add a "
                f"task of that category to DIR/dataset.json and pass --dataset DIR")
    return [s for s in specs if s.category in categories]


def _needs_tokens(category: str) -> bool:
    from .registry import TASKS
    from .tasks.dense import DenseTask

    cls = TASKS.get(category)
    return isinstance(cls, type) and issubclass(cls, DenseTask)


def _tuned(category: str) -> bool:
    """Whether the category tunes a probe (retrieval, for one, trains nothing)."""
    from .registry import TASKS
    from .task import ProbeTask

    cls = TASKS.get(category)
    return isinstance(cls, type) and issubclass(cls, ProbeTask)


def selftest(
    dataset: str = "phantom",
    categories: Sequence[str] | None = None,
    trials: int = DEFAULT_TRIALS,
    n_boot: int = DEFAULT_BOOTSTRAP,
    head_trials: int | None = None,
    seed: int = 0,
    device: str = "auto",
    out: str | Path | None = None,
    models: Sequence[str] | None = None,
    on_run: Callable[[str, str, Rung | None], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[TaskCheck]:
    """Run the ladder on every selected task of a phantom dataset; one :class:`TaskCheck` per task.

    Tasks that train a neural head get ``head_trials`` Optuna trials (None: :data:`HEAD_TRIALS`),
    the others ``trials``; every rung of a task gets the same budget, recorded in its check.
    ``models`` overrides the rungs (default :func:`ladder_models`); ``on_run(task, model, rung)``
    is called when a run starts (``rung`` None) and ends; ``progress`` gets the runs' stages.
    """
    from .datasets import open_dataset
    from .paths import home
    from .phantom_truth import TRUTH_FILE
    from .registry import MODELS
    from .runner import RunConfig, run

    rungs = list(dict.fromkeys(models)) if models else ladder_models(MODELS.names())
    middle = [m for m in rungs if m not in (TOP, BOTTOM)]
    if TOP not in rungs or BOTTOM not in rungs:
        example = ",".join([TOP, *middle, BOTTOM])
        raise CTBenchError(f"the self-test ladder needs {TOP!r} and {BOTTOM!r} among its models (got "
                           f"{', '.join(rungs)}); e.g. --models {example}")
    for m in rungs:
        MODELS.get(m)  # an unknown name fails before any run, with "did you mean"
    rungs = [TOP, *middle, BOTTOM]
    ds = open_dataset(dataset, progress=(lambda d, t: progress("generate", d, t)) if progress else None)
    if not (ds.root / TRUTH_FILE).is_file():
        raise CTBenchError(f"{ds.root} is not a ctbench phantom (no {TRUTH_FILE}); the self-test needs the "
                           f"phantom's ground truth: use the built-in 'phantom' or a folder written by "
                           f"ctbench datasets phantom")
    specs = phantom_tasks(ds, categories)
    root = Path(out).expanduser() if out else home() / "selftest"
    dataset_arg = dataset if dataset == "phantom" else str(ds.root)
    checks = []
    for spec in specs:
        metric = spec.main_metric
        dense = _needs_tokens(spec.category)
        budget = (head_trials or HEAD_TRIALS[spec.category]) if spec.category in HEAD_TRIALS else trials
        budget = budget if _tuned(spec.category) else 0  # e.g. retrieval: nothing is trained
        options = dict(TASK_OPTIONS.get(spec.category, {}))
        check = TaskCheck(spec.name, spec.category, metric, "maximize", budget, options)  # direction: from results
        for model in rungs:
            rung = Rung(model)
            if dense and MODELS.get(model).card.token_dim is None:
                rung.skipped = "no token grid"
                check.rungs.append(rung)
                continue
            if on_run:
                on_run(spec.name, model, None)
            started = time.perf_counter()
            cfg = RunConfig(model=model, task=spec.name, dataset=dataset_arg, weights="auto", trials=max(budget, 1),
                            seed=seed, device=device, out=str(root / ds.card.name / spec.name / model),
                            n_boot=n_boot, task_options=options)
            try:
                _, result = run(cfg, progress=progress)
                check.direction = result["task"]["direction"]
                m = result["metrics"][metric]
                rung.value, rung.ci_low, rung.ci_high = m["value"], m["ci_low"], m["ci_high"]
            except CTBenchError as e:
                rung.error = str(e)
            rung.seconds = time.perf_counter() - started
            check.rungs.append(rung)
            if on_run:
                on_run(spec.name, model, rung)
        check.problems = judge(check.rungs, check.direction)
        checks.append(check)
    return checks
