"""LUNA16: lung nodule localisation on 888 LIDC-IDRI chest CT scans.

Source: https://luna16.grand-challenge.org/ (data on Zenodo, records 3723295 and 4121926; Setio
et al., Medical Image Analysis 2017), derived from LIDC-IDRI (TCIA, doi:10.7937/K9/TCIA.2015.LO9QL9SX).
Licence: CC BY 4.0 (LUNA16 release; LIDC-IDRI images CC BY 3.0).

Expected layout::

    annotations.csv            (seriesuid, coordX, coordY, coordZ, diameter_mm; or CSVFILES/annotations.csv)
    subset0/<seriesuid>.mhd + .raw   ...   subset9/<seriesuid>.mhd + .raw

Coordinates: LUNA16 gives world millimetres in ITK's LPS space, as in the ``.mhd`` headers;
ctbench's world space is RAS (its readers flip ITK's x and y), so the recipe stores
``nodule_x = -coordX``, ``nodule_y = -coordY``, ``nodule_z = coordZ``. Target: the centre of the
scan's largest annotated nodule (by ``diameter_mm``); scans without nodules keep empty targets
and are left out of the task. Split: the official ten folds are kept whole: subset0-7 train,
subset8 val, subset9 test (seed-independent). LUNA16 files carry no patient identifier, so
``patient_id`` is the ``seriesuid``.
"""

from __future__ import annotations

import re

import pandas as pd

from ..datasets import TaskSpec
from .base import Context, Prepared, Recipe, absolute, read_table, shown

SUBSET = re.compile(r"^subset(\d)$")
FOLD_SPLIT = {**{k: "train" for k in range(8)}, 8: "val", 9: "test"}
FIX = "download annotations.csv and the subset0-9 archives from luna16.grand-challenge.org (Zenodo)"


def _annotations(ctx: Context) -> pd.DataFrame:
    for path in (ctx.source / "annotations.csv", ctx.source / "CSVFILES" / "annotations.csv"):
        if path.is_file():
            df = read_table(ctx, path, ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"), FIX)
            for col in ("coordX", "coordY", "coordZ", "diameter_mm"):
                num = pd.to_numeric(df[col], errors="coerce")
                if num.isna().any():
                    bad = df.loc[num.isna(), col].iloc[0]
                    raise ctx.error(f"{path} column {col} holds a non-number ({shown(bad)}); re-download it")
                df[col] = num
            return df
    raise ctx.error(f"annotations.csv not found in {ctx.source} (nor in CSVFILES/); {FIX}")


def _scans(ctx: Context) -> dict[str, tuple[int, object]]:
    """seriesuid -> (fold, .mhd path) over every subsetK folder (nested copies included)."""
    folds = sorted((int(SUBSET.match(p.name).group(1)), p) for p in ctx.source.iterdir()
                   if p.is_dir() and SUBSET.match(p.name))
    if not folds:
        raise ctx.error(f"no subset0 ... subset9 folders in {ctx.source}; {FIX}")
    scans = {}
    for fold, folder in folds:
        for mhd in sorted(folder.rglob("*.mhd")):
            scans[mhd.stem] = (fold, mhd)
    return scans


def build(ctx: Context) -> Prepared:
    ann = _annotations(ctx)
    scans = _scans(ctx)
    for uid in sorted(set(ann["seriesuid"].astype(str)) - set(scans)):
        ctx.skip(uid, "annotated scan not found in any subset folder")
    largest = ann.sort_values(["diameter_mm", "coordZ"], ascending=[False, True]).drop_duplicates(
        "seriesuid").set_index("seriesuid")
    counts = ann["seriesuid"].value_counts()
    rows = []
    for uid, (fold, mhd) in sorted(scans.items()):
        if not mhd.with_suffix(".raw").is_file() and not mhd.with_suffix(".zraw").is_file():
            ctx.skip(uid, f"{mhd.name} has no .raw beside it (incomplete extraction)")
            continue
        row = {"case_id": uid, "patient_id": uid, "image": absolute(mhd), "split": FOLD_SPLIT[fold],
               "subset": fold, "nodule_count": int(counts.get(uid, 0)),
               "nodule_x": None, "nodule_y": None, "nodule_z": None, "nodule_diameter_mm": None}
        if uid in largest.index:
            a = largest.loc[uid]
            row.update(nodule_x=-float(a["coordX"]), nodule_y=-float(a["coordY"]),
                       nodule_z=float(a["coordZ"]), nodule_diameter_mm=float(a["diameter_mm"]))
        rows.append(row)
    description = ("One .mhd scan per case (patient_id = seriesuid). nodule_x/y/z: world RAS mm "
                   "centre of the largest annotated nodule (LUNA16's LPS coordX/coordY negated, "
                   "coordZ kept); nodule_diameter_mm its diameter; nodule_count the number of "
                   "annotated nodules; subset the official fold. Empty targets: no nodule.")
    return Prepared(pd.DataFrame(rows), description, {"folds_found": sorted({f for f, _ in scans.values()})})


TASKS = (
    TaskSpec(name="nodule-localisation", category="localisation",
             targets=("nodule_x", "nodule_y", "nodule_z"), main_metric="centre_error_mm",
             description="centre of the largest annotated nodule (world RAS mm)"),
)

RECIPE = Recipe(
    name="luna16",
    title="LUNA16 (lung nodule analysis, LIDC-IDRI subset; Setio et al. 2017)",
    version="1",
    source="https://luna16.grand-challenge.org/ (Zenodo 3723295, 4121926; LIDC-IDRI "
           "doi:10.7937/K9/TCIA.2015.LO9QL9SX)",
    licence="CC-BY-4.0",
    layout="annotations.csv + subset0..subset9/<seriesuid>.mhd/.raw",
    split_rule="official folds kept whole: subset0-7 train, subset8 val, subset9 test.",
    tasks=TASKS,
    build=build,
    collections=("LUNA16", "LIDC-IDRI", "TCIA", "IDC"),
)
