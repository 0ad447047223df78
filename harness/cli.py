"""The ``ctbench`` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import CTBenchError
from .launch import DEBUG_ENV, DEBUG_FLAG, run_app, set_debug
from .plain_text import escape, print_whole
from .progress import stage_display

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark 3D CT foundation models on frozen features.\n\nExit codes: 0 done; 1 failed "
                       "(failed bench cells or adapter checks, cases extract could not extract) or an internal "
                       "error; 2 a usage or user error (one message naming the fix); 130 interrupted.")
console = Console()
err = Console(stderr=True)


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, DEBUG_FLAG, help=f"show Python tracebacks of errors (or set {DEBUG_ENV}=1)"),
) -> None:
    """Options of every command (exit codes and error display: :mod:`ctbench.launch`)."""
    if debug:
        set_debug(True)


PRECISION_HELP = ("fp32 | bf16: the encoder's forward precision (default: the model's, that of its official "
                  "code; bf16 autocast is faster on GPUs but not the official features); recorded in results")
PROBE_HELP = ("probe family: linear | knn | mlp | attentive | all (default linear; classification, regression "
              "and survival tasks); each family and view is its own result, never ranked with another")
VIEW_HELP = ("feature view: cls | mean | cls+mean | tokens | all (default: the family's own, tokens for attentive, "
             "else cls; mean and tokens need a model with a token grid)")
MODEL_OPTION_HELP = ("KEY=VALUE adapter option, repeatable (e.g. hu_window=dicom for voxelfm, "
                     "tokens=pre-quantisation for ct-clip; see docs/adding-a-model.md); recorded in results")


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command()
def models(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    markdown: bool = typer.Option(False, "--markdown", help="the Markdown table of docs/models.md"),
) -> None:
    """List registered models by group with licence, weights access, dimensions, native input,
    weight source and reference parity."""
    from . import models_cli
    from .registry import MODELS

    rows = models_cli.card_rows(MODELS)  # a broken plugin is one error row; the others are listed
    if as_json:
        _print_json(rows)
    elif markdown:
        sys.stdout.write(models_cli.markdown_table(rows))
    else:
        models_cli.print_listing(console, rows)
        for r in rows:
            if "error" in r:
                err.print(f"[red]{r['name']}:[/] {r['error']}", highlight=False, soft_wrap=True)
    _print_plugin_problems(MODELS)


def _print_plugin_problems(registry) -> None:
    """Entry points left out of a listing (e.g. a name clash), one stderr line each."""
    for problem in registry.problems:
        err.print(f"[red]plugin left out:[/] {problem}", highlight=False, soft_wrap=True)


@app.command()
def tasks(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List the registered task categories."""
    from .registry import TASKS

    rows = []
    for name in TASKS.names():  # a broken plugin is one error row; the others are listed
        try:
            cls = TASKS.get(name)
            doc = (cls.__doc__ or "").strip().splitlines()
            options = [{"flag": o.flag, "type": o.type.__name__, "default": o.default, "help": o.help,
                        "env": o.env} for o in cls.options]
            rows.append({"name": name, "description": doc[0] if doc else "", "options": options})
        except CTBenchError as e:
            rows.append({"name": name, "error": str(e)})
    if as_json:
        _print_json(rows)
        _print_plugin_problems(TASKS)
        return
    if console.is_terminal:
        table = Table(title="ctbench task categories")
        table.add_column("name")
        table.add_column("description")
        table.add_column("options (ctbench run --name VALUE)")
        for r in rows:
            table.add_row(escape(r["name"]), escape(r.get("description", "broken (see below)")),
                          escape("\n".join(_option_lines(r))))
        console.print(table)
    else:  # piped: one line per category, its options indented below it, nothing cut
        lines = [f"{r['name']}: {r.get('description', 'broken (see below)')}"
                 + "".join(f"\n  {o}" for o in _option_lines(r)) for r in rows]
        print_whole(console, "\n".join(lines), markup=False)
    for r in rows:
        if "error" in r:
            err.print(f"[red]{r['name']}:[/] {r['error']}", highlight=False, soft_wrap=True)
    _print_plugin_problems(TASKS)


def _option_lines(row: dict) -> list[str]:
    """``--flag TYPE: help (default D[, or $ENV])`` of each option of a ``ctbench tasks`` row."""
    return [f"{o['flag']} {o['type'].upper()}: {o['help']} (default {o['default']}"
            + (f", or ${o['env']})" if o["env"] else ")") for o in row.get("options", [])]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             epilog="A task category may declare options of its own (`ctbench tasks` lists them, e.g. "
                    "report-generation's --llm and --beam); give them as --name VALUE.")
def run(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="registered model name (see `ctbench models`)"),
    task: str = typer.Option(..., "--task", "-t", help="task name on the dataset"),
    dataset: str = typer.Option("phantom", "--dataset", "-d", help="built-in name or prepared dataset folder"),
    weights: str = typer.Option("auto", "--weights", "-w", help="auto | random | PATH"),
    trials: int = typer.Option(20, "--trials", min=1, help="Optuna trials (same for every model)"),
    seed: int = typer.Option(0, "--seed", help="seed of splits' tuning sampler, probes and bootstrap"),
    device: str = typer.Option("auto", "--device",
                               help="auto | cpu | cuda | cuda:N (the encoder, and task heads that train on it)"),
    out: Optional[str] = typer.Option(None, "--out", help="result folder (default under $CTBENCH_HOME/results)"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first failing case"),
    variant: Optional[str] = typer.Option(None, "--variant", help="model size variant, e.g. tiny (tests)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: SQLite)"),
    n_boot: int = typer.Option(1000, "--bootstrap", min=10, help="bootstrap resamples"),
    train_fraction: float = typer.Option(1.0, "--train-fraction", min=0.0, max=1.0,
                                         help="nested share of training patients (label efficiency)"),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    model_option: list[str] = typer.Option([], "--model-option", help=MODEL_OPTION_HELP),
    probe: Optional[str] = typer.Option(None, "--probe", help=PROBE_HELP),
    view: Optional[str] = typer.Option(None, "--view", help=VIEW_HELP),
) -> None:
    """Run one model on one task and print its test metrics with 95% CIs (one table per probe)."""
    from .devices import check_precision
    from .model_options import parse_model_options
    from .runner import RunConfig, probe_runs, run as run_one

    options = _task_options(ctx, dataset, task)  # the task category's own flags, if any
    cfg = RunConfig(model, task, dataset, weights, trials, seed, device, out, strict, variant, storage, n_boot,
                    train_fraction, task_options=options, precision=check_precision(precision),
                    model_options=parse_model_options(model_option), probe=probe, view=view)
    configs, skipped = probe_runs(cfg) if probe is not None or view is not None else ([cfg], [])
    for line in skipped:
        print_whole(err, f"skipped {line}", markup=False)
    for one in configs:
        if len(configs) > 1 and out:  # one folder per probe: the pair's suffix under --out
            from .probe_choice import ProbeChoice

            one.out = str(Path(out) / (ProbeChoice(one.probe, one.view).tag or "linear-cls"))
        with stage_display(err) as progress:
            path, result = run_one(one, progress=progress)
        _print_result(result, path)


@app.command()
def extract(
    model: str = typer.Option(..., "--model", "-m", help="registered model name"),
    dataset: str = typer.Option("phantom", "--dataset", "-d", help="built-in name or prepared dataset folder"),
    weights: str = typer.Option("auto", "--weights", "-w", help="auto | random | PATH"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (cuda:<LOCAL_RANK> under torchrun)"),
    variant: Optional[str] = typer.Option(None, "--variant", help="model size variant"),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="volumes per encoder call"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0,
                                          help="reader processes (default: cores - 1 on CUDA, 0 on CPU)"),
    strict: bool = typer.Option(False, "--strict", help="stop at the first failing case"),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    model_option: list[str] = typer.Option([], "--model-option", help=MODEL_OPTION_HELP),
) -> None:
    """Extract and cache features for every case of a dataset (shards over torchrun ranks)."""
    from . import distributed
    from .datasets import open_dataset
    from .extract import extract as run_extract, shard
    from .devices import check_precision, resolve_device
    from .model_options import parse_model_options
    from .runner import build_encoder
    from .writable import check_output_folders

    rank = distributed.current()
    dev = distributed.rank_device(resolve_device(device), rank)
    distributed.init(dev)
    try:
        # rank 0 prepares a built-in dataset first so ranks never generate it concurrently
        if not rank.is_main:
            distributed.barrier()
        ds = open_dataset(dataset)
        if rank.is_main:
            distributed.barrier()
        check_output_folders(results=False, studies=False)  # the feature cache, before any work
        encoder = build_encoder(model, weights, dev, variant, check_precision(precision),
                                parse_model_options(model_option))
        cases = shard(ds.manifest, rank.rank, rank.world)
        with stage_display(err, enabled=rank.is_main) as progress:
            ex = run_extract(encoder, model, ds, cases, strict=strict, batch_size=batch_size, workers=workers,
                             load=False, progress=lambda d, t: progress("extract", d, t),
                             on_read=lambda d, t: progress("read", d, t))
        console.print(
            f"rank {rank.rank}/{rank.world}: {ex.extracted} extracted, {ex.cached} cached, "
            f"{len(ex.failures)} failed in {ex.seconds:.1f}s"
        )
        for case_id, reason in list(ex.failures.items())[:10]:
            print_whole(console, f"  {case_id}: {reason}", markup=False)
        distributed.barrier()
    finally:
        distributed.finish()
    if ex.failures:  # not every case was extracted: not what was asked
        raise typer.Exit(1)


def _task_options(ctx: typer.Context, dataset: str, task: str) -> dict:
    """Values of the task-category flags left on the command line (none: nothing is loaded). A
    flag no registered category declares is a usage error at once; one the run's category does
    not declare is an error naming the flags it takes."""
    if not ctx.args:
        return {}
    from .datasets import open_dataset
    from .registry import TASKS
    from .task_options import categories_taking, parse_flags

    flags = [a.partition("=")[0] for a in ctx.args if a.startswith("-")]
    unknown = [f for f in flags if not categories_taking(f)]
    if unknown or not flags:
        ctx.fail(f"No such option: {(unknown or ctx.args)[0]}")
    category = open_dataset(dataset).card.task(task).category
    return parse_flags(TASKS.get(category), list(ctx.args))


def _print_result(result: dict, path) -> None:
    w = result["model"]["weights"]
    label = "random-init control" if w["random_init"] else f"weights {w['sha256'][:12]}"
    t = result["task"]
    probe = result.get("probe") or {}
    fitted = f", probe {probe['family']} on {probe['view']}" if probe.get("family") else ""
    table = Table(title=f"{result['model']['name']} ({label}) on {t['dataset']}/{t['name']}{fitted}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name, m in result["metrics"].items():
        star = " *" if name == t["main_metric"] else ""
        fmt = lambda v: "n/a" if v is None or v != v else f"{v:.3f}"  # noqa: E731
        table.add_row(name + star, fmt(m["value"]), f"[{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]")
    console.print(table)
    if result["failures"]:
        console.print(f"[yellow]{len(result['failures'])} case(s) failed and were skipped:[/]")
        for f in result["failures"][:10]:
            print_whole(console, f"  {f['case_id']}: {f['reason']}", markup=False)
    if result.get("warnings"):
        console.print(f"[yellow]{len(result['warnings'])} warning(s) on implausible images (kept, recorded):[/]")
        for f in result["warnings"][:10]:
            print_whole(console, f"  {f['case_id']}: {f['reason']}", markup=False)
    probe = result.get("probe") or {}
    if probe.get("trials_failed"):
        print_whole(console, f"[yellow]{probe['trials_failed']} tuning trial(s) failed and were not counted in "
                             f"the budget of {probe['trials']}:[/] {escape('; '.join(probe['failures']))}")
    warned = probe.get("convergence_warnings") or {}
    if warned.get("tuning") or warned.get("refit"):
        console.print(f"convergence warnings: {len(warned['per_trial'])} of {probe['trials']} tuning trial(s), "
                      f"{warned['refit']} at the refit (recorded in the result)")
    timings = result["timings"]
    print_whole(console, f"features: {timings['cases_extracted']} extracted, {timings['cases_cached']} from cache; "
                         f"result: {path}", markup=False)


from .bench import bench_command  # noqa: E402
from .check_adapter import command as check_adapter_command  # noqa: E402
from .datasets_cli import app as datasets_app  # noqa: E402
from .leaderboards.cli import app as leaderboard_app  # noqa: E402
from .pretrain_cli import pretrain as pretrain_command  # noqa: E402
from .results_cli import app as results_app  # noqa: E402
from .selftest_cli import HELP as selftest_help, selftest_command  # noqa: E402
from .weights_cli import app as weights_app  # noqa: E402

app.command("bench")(bench_command)
app.command("check-adapter")(check_adapter_command)
app.command("pretrain")(pretrain_command)
app.command("selftest", help=selftest_help)(selftest_command)
app.add_typer(leaderboard_app, name="leaderboard")
app.add_typer(weights_app, name="weights")
app.add_typer(datasets_app, name="datasets")
app.add_typer(results_app, name="results")


def main() -> None:
    """Console entry point: exit codes and error display as in :mod:`ctbench.launch`."""
    run_app(app)
