"""Recipes for public CT datasets: turn a downloaded folder into a prepared ctbench dataset.

``prepare("ct-rate", source)`` reads the folder as the dataset's publisher lays it out, checks it,
and writes ``manifest.csv`` + ``dataset.json`` (+ ``prepare.json``, the provenance) into the output
folder (default ``$CTBENCH_HOME/datasets/<name>``). Images are not copied: ``image`` holds absolute
paths into the source folder; derived files (TotalSegmentator label maps) go into the output folder
and are referenced relative to it. Splits are the paper's: patient-level, seeded, stratified where
the label allows, official where the dataset has them.

Each recipe is a :class:`Recipe` in its own module, registered lazily by reference; third-party
packages add recipes through the ``ctbench.recipes`` entry-point group (``name = "pkg.mod:RECIPE"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..datasets import (
    CARD_FILE, MANIFEST_FILE, REQUIRED_COLUMNS, Dataset, DatasetCard, load_dataset_folder, write_card,
)
from ..errors import CTBenchError
from ..paths import home
from ..registry import Registry
from ..splits import SPLITS
from .base import Context, Progress, Recipe

__all__ = ["BUILTIN_RECIPES", "RECIPES", "Recipe", "PrepareResult", "get_recipe", "recipe_names", "prepare",
           "PROVENANCE_FILE"]

PROVENANCE_FILE = "prepare.json"
BUILTIN_RECIPES: dict[str, str] = {
    "ct-rate": "ctbench.recipes.ctrate:RECIPE",
    "nsclc-radiomics": "ctbench.recipes.nsclc:RECIPE",
    "luna16": "ctbench.recipes.luna16:RECIPE",
    "totalsegmentator": "ctbench.recipes.totalseg:RECIPE",
    "ictcf": "ctbench.recipes.ictcf:RECIPE",
    "osic": "ctbench.recipes.osic:RECIPE",
    "rsna-pe": "ctbench.recipes.rsna_pe:RECIPE",
    "mycobacterial": "ctbench.recipes.mycobacterial:RECIPE",
}
RECIPES: Registry = Registry("dataset recipe", "ctbench.recipes")  # + third-party entry points
for _name, _ref in BUILTIN_RECIPES.items():
    RECIPES.add_lazy(_name, _ref)


def recipe_names() -> list[str]:
    """Names of every recipe (sorted), without importing them."""
    return RECIPES.names()


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (case and ``_``/``-`` insensitive), or a "did you mean" error."""
    return RECIPES.get(name.strip().lower().replace("_", "-"))


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare`` wrote: the folder, the loaded dataset, split counts and skipped cases."""

    folder: Path
    dataset: Dataset
    counts: dict[str, int]
    skipped: list[tuple[str, str]]
    warnings: list[str]


def prepare(
    name: str,
    source: str | Path,
    out: str | Path | None = None,
    seed: int = 0,
    strict: bool = False,
    progress: Progress | None = None,
) -> PrepareResult:
    """Prepare dataset ``name`` from the downloaded folder ``source`` into ``out``.

    Cases listed by the dataset's tables whose images are not on disk are left out and returned
    in ``skipped`` (``strict=True`` stops at the first one instead). Running it again rewrites the
    manifest and card (same inputs and seed: same bytes) and reuses derived files already written.
    """
    recipe = get_recipe(name)
    src = Path(source).expanduser()
    if not src.is_dir():
        raise CTBenchError(f"{recipe.name}: source folder {src} does not exist or is not a folder; "
                           f"pass the folder you downloaded with --source")
    dest = Path(out).expanduser() if out is not None else home() / "datasets" / recipe.name
    _check_destination(dest, recipe.name)
    dest.mkdir(parents=True, exist_ok=True)
    ctx = Context(recipe=recipe.name, source=src, out=dest, seed=seed, strict=strict,
                  progress=progress)
    built = recipe.build(ctx)
    manifest = built.manifest.reset_index(drop=True)
    _check_manifest(recipe, manifest, ctx)
    card = DatasetCard(
        name=recipe.name, version=recipe.version, licence=recipe.licence, source=recipe.source,
        description=f"{recipe.title}. {built.description} Splits: {recipe.split_rule} Paths: "
                    "'image' is an absolute path into the downloaded folder (nothing copied); "
                    "files derived by the recipe are relative to this folder.",
        tasks=recipe.tasks, collections=recipe.collections,
    )
    atomic_write_text(dest / MANIFEST_FILE, manifest.to_csv(index=False))
    write_card(card, dest)
    dataset = load_dataset_folder(dest)
    counts = {s: int((manifest["split"] == s).sum()) for s in SPLITS}
    provenance = {
        "recipe": recipe.name, "recipe_version": recipe.version, "source_folder": str(src.resolve()),
        "seed": seed, "cases": len(manifest), "split_counts": counts,
        "split_hash": dataset.split_hash(), "split_rule": recipe.split_rule,
        "skipped": len(ctx.skipped),
        "skipped_examples": [{"id": i, "reason": r} for i, r in ctx.skipped[:20]],
        "warnings": ctx.warnings, "notes": built.notes,
        "stratification": ctx.stratification or {
            "by": None, "merged": [], "note": f"not stratified by ctbench: {recipe.split_rule}"},
    }
    atomic_write_text(dest / PROVENANCE_FILE, json.dumps(provenance, indent=2, default=str))
    return PrepareResult(dest, dataset, counts, list(ctx.skipped), list(ctx.warnings))


def _check_destination(dest: Path, name: str) -> None:
    if dest.exists() and not dest.is_dir():
        raise CTBenchError(f"{name}: output {dest} is a file; pass a folder with --out")
    card = dest / CARD_FILE
    if card.is_file():
        try:
            other = json.loads(card.read_text()).get("name")
        except (OSError, ValueError):
            other = None
        if other != name:
            raise CTBenchError(f"{name}: output folder {dest} already holds dataset {other!r}; "
                               f"pick another --out or remove that folder")


def _check_manifest(recipe: Recipe, manifest, ctx: Context) -> None:
    if manifest.empty:
        example = f" (e.g. {ctx.skipped[0][0]}: {ctx.skipped[0][1]})" if ctx.skipped else ""
        raise ctx.error(f"no usable case found in {ctx.source}{example}; check that --source "
                        f"points at the downloaded folder ({recipe.layout})")
    needed = set(REQUIRED_COLUMNS) | {c for t in recipe.tasks for c in t.targets}
    missing = sorted(needed - set(manifest.columns))
    if missing:  # a recipe bug, not a user error
        raise RuntimeError(f"recipe {recipe.name} produced no column(s) {missing}")
    for split in SPLITS:
        if not (manifest["split"] == split).any():
            raise ctx.error(f"the '{split}' split is empty ({len(manifest)} usable cases, "
                            f"{len(ctx.skipped)} left out); download more of the dataset so that "
                            f"every split has cases")
