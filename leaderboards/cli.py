"""``ctbench leaderboard build|publish|show``: the typer sub-app mounted by ``ctbench.cli``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Ranked, uncertain, reproducible leaderboards from result files.")


RESULTS_HELP = "folder of result files (default $CTBENCH_HOME/results)"


def _results(results: Optional[str]) -> Path:
    from ctbench.paths import home

    return Path(results).expanduser() if results else home() / "results"


@app.command()
def build(
    results: Optional[str] = typer.Option(None, "--results", help=RESULTS_HELP),
    fmt: str = typer.Option("md", "--format", "-f", help="md | html | csv | json (comma-separate for several)"),
    out: str = typer.Option("leaderboard", "--out", help="folder to write the board into"),
    n_boot: int = typer.Option(1000, "--bootstrap", min=10, help="paired bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="seed of the paired bootstrap resamples"),
) -> None:
    """Build the leaderboard: one ranked table per task, mean ranks, figures, provenance."""
    from rich.console import Console

    from . import FORMATS, build_board, write_board
    from ctbench.bench import parse_list
    from ctbench.errors import CTBenchError

    formats = parse_list(fmt, "format")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise CTBenchError(f"--format {', '.join(bad)} is unknown; use one of {', '.join(FORMATS)}")
    board = build_board(_results(results), n_boot=n_boot, seed=seed)
    written = [p for f in formats for p in write_board(board, f, out)]
    console = Console()
    console.print(f"{len(board.tables)} task table(s) from {board.provenance['results']} result file(s):")
    for p in written:
        if p.suffix != ".png":
            console.print(f"  {p}", soft_wrap=True)


@app.command()
def publish(
    out: str = typer.Option(..., "--out", help="folder of the static site to write"),
    results: Optional[str] = typer.Option(None, "--results", help=RESULTS_HELP),
    n_boot: int = typer.Option(1000, "--bootstrap", min=10, help="paired bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="seed of the paired bootstrap resamples"),
) -> None:
    """Write a static site (index.html, one page per task, results.json, CSV) to host anywhere."""
    from rich.console import Console

    from .board import build_board
    from .collect import collect
    from .publish import publish as write_site

    entries = collect(_results(results))
    board = build_board(entries, n_boot=n_boot, seed=seed)
    written = write_site(board, entries, out)
    Console().print(f"site with {len(board.tables)} task page(s) written to {Path(out)} ({len(written)} files); "
                    f"open {Path(out) / 'index.html'}", soft_wrap=True)


@app.command()
def show(
    results: Optional[str] = typer.Option(None, "--results", help=RESULTS_HELP),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated task names (default: every task)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="only this dataset's tables"),
    n_boot: int = typer.Option(1000, "--bootstrap", min=10, help="paired bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="seed of the paired bootstrap resamples"),
) -> None:
    """Print the ranked tables in the terminal: rank (=n: a tie group), main metric with its 95% CI."""
    from rich.console import Console

    from .board import build_board
    from .collect import collect
    from .terminal import print_board
    from ctbench.bench import parse_list
    from ctbench.errors import CTBenchError

    wanted = parse_list(tasks, "tasks") if tasks is not None else None
    entries = [e for e in collect(_results(results)) if (wanted is None or e.result.task.name in wanted)
               and (dataset is None or e.result.task.dataset == dataset)]
    if not entries:
        raise CTBenchError(f"no result under {_results(results)} for task(s) {tasks or 'any'} of dataset "
                           f"{dataset or 'any'}; run `ctbench run` or `ctbench bench` first, or change --tasks/--dataset")
    print_board(Console(), build_board(entries, n_boot=n_boot, seed=seed).tables)
