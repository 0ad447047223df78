"""The ``ctbench selftest`` command: run the ladder (:mod:`ctbench.selftest`), print one table,
exit 1 when the ladder does not hold on a task."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from .selftest import (
    BOTTOM, DEFAULT_BOOTSTRAP, DEFAULT_TRIALS, HEAD_TRIALS, TOP, Rung, TaskCheck, clearly_above,
)

HELP = (
    f"Check that the harness ranks models: {TOP} > baselines > {BOTTOM} on the phantom.\n\n"
    "Every task of the phantom (or of --category) is run through the same path as `ctbench run` (cached "
    "features, shared splits, Optuna tuning with --trials, or --head-trials on the tasks that train a neural "
    "head (report generation, localisation, segmentation; segmentation keeps to its linear head), refit, "
    "patient-level bootstrap) for "
    f"`{TOP}` (ground truth), the registered baselines (`hu-histogram`, `thumbnail`) and `{BOTTOM}` "
    "(seeded noise).\n\n"
    "The ladder holds on a task when, on its main metric: the oracle's 95% CI lies entirely on the better "
    "side of chance's 95% CI; no baseline beats the oracle (point estimates); no baseline is worse than "
    "chance's 95% CI. A '+' marks a baseline whose CI lies entirely above chance's.\n\n"
    "Exit codes: 0 the ladder holds on every task; 1 it fails on one (named in the table); 2 a usage "
    "error. Results go under $CTBENCH_HOME/selftest."
)


def _cell(r: Rung, mark: bool = False) -> str:
    if r.skipped:
        return f"n/a ({r.skipped})"
    if r.error or r.value is None:
        return "failed"
    return f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" + (" +" if mark else "")


def table_rows(checks: list[TaskCheck]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the self-test table: task, metric, budget (trials and task options), one
    column per rung, verdict."""
    models = list(dict.fromkeys(r.model for c in checks for r in c.rungs))
    header = ["task", "main metric", "budget", *models, "ladder"]
    rows = []
    for c in checks:
        by = {r.model: r for r in c.rungs}
        arrow = "higher" if c.direction == "maximize" else "lower"
        marks = {r.model: r.model not in (TOP, BOTTOM) and BOTTOM in by and clearly_above(r, by[BOTTOM], c.direction)
                 for r in c.rungs}
        budget = ("no tuning" if c.trials == 0 else f"{c.trials} trial{'s' if c.trials != 1 else ''}") + "".join(
            f", --{k.replace('_', '-')} {v}" for k, v in c.options.items())
        rows.append([c.task, f"{c.metric} ({arrow} is better)", budget,
                     *(_cell(by[m], marks[m]) if m in by else "" for m in models),
                     "holds" if c.passed else "FAILS: " + "; ".join(c.problems)])
    return header, rows


def print_table(console: Console, checks: list[TaskCheck]) -> None:
    """One table on a terminal; piped, aligned plain lines (nothing cut)."""
    from .plain_text import print_listing

    header, rows = table_rows(checks)
    failed = sum(not c.passed for c in checks)
    title = f"ctbench selftest: ladder holds on {len(checks) - failed} of {len(checks)} task(s)"
    last = len(header) - 1

    def verdict(i: int, v: str) -> str:
        return f"[{'green' if v == 'holds' else 'red'}]{v}[/]" if i == last else v

    print_listing(console, title, header, rows, verdict)


def selftest_command(
    category: Optional[list[str]] = typer.Option(
        None, "--category", "-c", help="check only this task category (repeatable; a plugin's category too, "
                                       "on a --dataset whose card has a task of it)"),
    dataset: str = typer.Option("phantom", "--dataset", "-d", help="'phantom' or a folder written by "
                                                                    "`ctbench datasets phantom`"),
    trials: int = typer.Option(DEFAULT_TRIALS, "--trials", min=1,
                               help="Optuna trials per run on classification, regression, survival (same for every rung)"),
    head_trials: Optional[int] = typer.Option(
        None, "--head-trials", min=1, help="Optuna trials per run on the tasks that train a neural head (default: "
        + ", ".join(f"{k} {v}" for k, v in HEAD_TRIALS.items()) + ")"),
    n_boot: int = typer.Option(DEFAULT_BOOTSTRAP, "--bootstrap", min=10, help="bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="seed of tuning, probes and bootstrap"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (task heads)"),
    out: Optional[str] = typer.Option(None, "--out", help="results folder (default $CTBENCH_HOME/selftest)"),
    models: Optional[str] = typer.Option(
        None, "--models", help="comma-separated rungs (default: oracle, the registered baselines, chance); "
                               "oracle and chance are always the top and bottom, any other model is checked "
                               "between them like a baseline"),
) -> None:
    from .bench import parse_list
    from .plain_text import print_whole
    from .progress import stage_display
    from .selftest import selftest

    err = Console(stderr=True)

    def on_run(task: str, model: str, rung: Rung | None) -> None:
        if rung is None:
            print_whole(err, f"selftest: {model} on {task} ...", markup=False)
        else:
            state = "failed: " + rung.error if rung.error else _cell(rung)
            print_whole(err, f"selftest: {model} on {task}: {state} ({rung.seconds:.0f} s)", markup=False)

    categories = [c.strip() for item in (category or []) for c in item.split(",") if c.strip()]
    with stage_display(err) as progress:  # the running model's stages, as `ctbench run` shows them
        checks = selftest(dataset, categories or None, trials=trials, n_boot=n_boot, head_trials=head_trials,
                          seed=seed, device=device,
                          out=out, models=parse_list(models, "models") if models is not None else None,
                          on_run=on_run, progress=progress)
    print_table(Console(), checks)
    if not all(c.passed for c in checks):
        raise typer.Exit(1)


selftest_command.__doc__ = HELP
