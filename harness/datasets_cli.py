"""``ctbench datasets``: list built-in datasets and recipes, and prepare a downloaded dataset.

- ``ctbench datasets [--json]`` (or ``ctbench datasets list``): built-in datasets and every
  recipe with its tasks, source and licence.
- ``ctbench datasets prepare NAME --source DIR [--out DIR] [--seed N] [--strict]``: turn the
  folder you downloaded into a prepared dataset (``manifest.csv`` + ``dataset.json``) for
  ``ctbench run --dataset DIR`` (see :mod:`ctbench.recipes`).
- ``ctbench datasets validate DIR [--quick] [--json]``: check a prepared folder without running a
  model (card, manifest, splits, targets per task, every image read, masks on their images'
  grids); exit 1 when a check fails (see :mod:`ctbench.validate`).
- ``ctbench datasets phantom --out DIR [--patients N] [--seed N] [--resolution R]``: write a
  phantom of another size, seed or resolution (the built-in ``phantom`` is 100 patients, seed 0),
  e.g. a larger one whose test split gives tighter confidence intervals. Its card is named after
  the arguments (``phantom-n500``, ``phantom-n500-seed3``; see
  :func:`ctbench.phantom.phantom_name`), so its results get their own folders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import CTBenchError

__all__ = ["app", "dataset_rows", "list_datasets", "prepare_command", "phantom_command", "validate_command"]

app = typer.Typer(add_completion=False, invoke_without_command=True,
                  help="List datasets and recipes; prepare a downloaded public dataset; validate a prepared "
                       "folder (`ctbench datasets validate DIR`); write a phantom of any size, seed or "
                       "resolution (`ctbench datasets phantom --out DIR`).")
console = Console()
err = Console(stderr=True)


def dataset_rows() -> list[dict]:
    """Built-in datasets and recipes: name, kind, description, tasks (name, category, metric)."""
    from .datasets import BUILTIN_DATASETS
    from .recipes import get_recipe, recipe_names

    def tasks(specs) -> list[dict]:
        return [{"name": t.name, "category": t.category, "main_metric": t.main_metric,
                 "targets": list(t.targets)} for t in specs]

    rows = []
    for name, description in BUILTIN_DATASETS.items():
        row = {"name": name, "kind": "built-in", "description": description, "tasks": []}
        if name == "phantom":
            from .phantom import DEFAULT_PATIENTS, phantom_card

            row["tasks"] = tasks(phantom_card(DEFAULT_PATIENTS, 0).tasks)
        rows.append(row)
    for name in recipe_names():
        try:
            r = get_recipe(name)
        except CTBenchError as e:
            rows.append({"name": name, "kind": "recipe", "error": str(e), "tasks": []})
            continue
        rows.append({"name": name, "kind": "recipe", "description": r.title, "source": r.source,
                     "licence": r.licence, "layout": r.layout, "split_rule": r.split_rule,
                     "tasks": tasks(r.tasks)})
    return rows


def list_datasets(as_json: bool = False) -> None:
    """Print :func:`dataset_rows` as a table, or as JSON."""
    rows = dataset_rows()
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="ctbench datasets")
    for col in ("name", "kind", "tasks", "licence", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        names = ", ".join(t["name"] if t["name"] == t["category"] else f"{t['name']} ({t['category']})"
                          for t in r["tasks"])
        table.add_row(r["name"], r["kind"], names, r.get("licence", ""),
                      r.get("description", r.get("error", "")))
    console.print(table)
    console.print("prepare a recipe: ctbench datasets prepare NAME --source DIR [--out DIR]")


@app.callback()
def main(ctx: typer.Context,
         as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List built-in datasets and recipes (with their tasks) when no subcommand is given; `prepare`
    turns a downloaded dataset into a prepared one, `phantom` writes a phantom of any size."""
    if ctx.invoked_subcommand is None:
        list_datasets(as_json)


@app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List built-in datasets and recipes with their tasks."""
    list_datasets(as_json)


@app.command("prepare")
def prepare_command(
    name: str = typer.Argument(..., help="recipe name (see `ctbench datasets`)"),
    source: Path = typer.Option(..., "--source", "-s", help="the folder you downloaded"),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="prepared folder (default $CTBENCH_HOME/datasets/NAME)"),
    seed: int = typer.Option(0, "--seed", help="seed of the patient-level splits"),
    strict: bool = typer.Option(False, "--strict",
                                help="stop at the first listed case whose image is missing"),
) -> None:
    """Turn a downloaded public dataset into a manifest + dataset card (images are not copied)."""
    from .recipes import prepare

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task_id = bar.add_task(f"preparing {name}", total=None)
        res = prepare(name, source, out, seed=seed, strict=strict,
                      progress=lambda done, total: bar.update(task_id, completed=done, total=total))
    card = res.dataset.card
    counts = ", ".join(f"{k} {v}" for k, v in res.counts.items())
    console.print(f"[bold]{card.name}[/]: {sum(res.counts.values())} cases ({counts}) -> {res.folder}", soft_wrap=True)
    console.print(f"tasks: {', '.join(t.name for t in card.tasks)}; split hash "
                  f"{res.dataset.split_hash()[:12]}")
    if res.skipped:
        console.print(f"[yellow]{len(res.skipped)} listed case(s) left out[/], e.g. "
                      f"{res.skipped[0][0]}: {res.skipped[0][1]} (all counted in prepare.json)")
    for w in res.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"next: ctbench run --model MODEL --task {card.tasks[0].name} --dataset {res.folder}", soft_wrap=True)


@app.command("phantom")
def phantom_command(
    out: Path = typer.Option(..., "--out", "-o", help="new folder (missing or empty)"),
    patients: int = typer.Option(100, "--patients", "-n", min=3, help="number of patients"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of anatomy, findings, scans and splits"),
    resolution: float = typer.Option(1.0, "--resolution", min=0.5, max=4.0,
                                     help="divides every voxel spacing (2: half the spacing, 8x the voxels)"),
) -> None:
    """Write a synthetic phantom dataset of any size, seed or resolution into a folder.

    Its card is named after the arguments (e.g. phantom-n500-seed3): its results get their own folders.
    """
    from .datasets import load_dataset_folder
    from .phantom import generate_phantom

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task_id = bar.add_task("generating phantom", total=None)
        folder = generate_phantom(out, n_patients=patients, seed=seed, resolution=resolution,
                                  progress=lambda done, total: bar.update(task_id, completed=done, total=total))
    ds = load_dataset_folder(folder)
    counts = ds.manifest["split"].value_counts()
    console.print(f"[bold]{ds.card.name}[/]: {patients} patients, {len(ds.manifest)} scans "
                  f"(train {counts.get('train', 0)}, val {counts.get('val', 0)}, test {counts.get('test', 0)}) "
                  f"-> {folder}", soft_wrap=True)
    console.print(f"next: ctbench run --model MODEL --task classification --dataset {folder}", soft_wrap=True)


SHOWN_PER_CHECK = 20  # problems listed per check in the table view (--json lists all)


@app.command("validate")
def validate_command(
    folder: Path = typer.Argument(..., help="a prepared dataset folder (dataset.json + manifest.csv/.parquet)"),
    quick: bool = typer.Option(False, "--quick", help="read image headers only, not the images "
                                                      "(DICOM folders: checked to exist)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Check a dataset folder without running a model: card and manifest, splits, targets per
    task, every image readable, masks on their images' grids. Exit 1 when a check fails."""
    from .validate import validate_folder

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=as_json) as bar:
        task_id = bar.add_task("reading image headers" if quick else "reading images", total=None)
        report = validate_folder(folder, quick=quick,
                                 progress=lambda done, total: bar.update(task_id, completed=done, total=total))
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def print_report(report) -> None:
    """A validation report as a table (one row per check), then its problems and warnings."""
    table = Table(title=f"ctbench datasets validate: {report.dataset or report.folder}")
    for col in ("check", "status", "details"):
        table.add_column(col, overflow="fold")
    for c in report.checks:
        table.add_row(escape(c.name), "[green]ok[/]" if c.ok else "[bold red]FAIL[/]", escape(c.detail))
    console.print(table)
    for title, items, style in (("problems", report.problems, "red"), ("warnings", report.warnings, "yellow")):
        if not items:
            continue
        console.print(f"[{style}]{len(items)} {title}:[/]")
        by_check: dict[str, list] = {}
        for item in items:
            by_check.setdefault(item.check, []).append(item)
        for check, group in by_check.items():
            for item in group[:SHOWN_PER_CHECK]:
                console.print(f"  [{style}]{escape(check)}[/]: {escape(item.message)}", highlight=False,
                              soft_wrap=True)
            if len(group) > SHOWN_PER_CHECK:
                console.print(f"  {escape(check)}: ... {len(group) - SHOWN_PER_CHECK} more (--json lists all)")
    if report.ok:
        note = " (images not read: --quick)" if report.quick else ""
        console.print(f"[green]valid[/]: {escape(report.folder)}{note}")
