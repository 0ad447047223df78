"""Mycobacterial lung disease: nontuberculous mycobacteria (NTM) vs tuberculosis (TB) on chest CT.

Source: there is no public archive of an NTM-vs-TB CT cohort with a fixed layout ctbench could
follow, so this recipe defines the layout it expects; bring the cohort you have access to.
Licence: that of your data source (the recipe copies nothing).

Expected layout::

    labels.csv   case_id, patient_id, image, diagnosis      (+ any other columns, kept)
    <image paths as written in labels.csv, relative to the folder (or absolute)>

``image`` is a NIfTI/NRRD/MetaImage file or a folder holding one DICOM series. ``diagnosis`` is
``NTM`` or ``TB`` (case-insensitive); the target ``ntm`` is 1 for NTM, 0 for TB. Several scans of
one patient share a ``patient_id`` and always land in the same split. Split (no official one):
patient-level 60/20/20, seeded, stratified by the diagnosis.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..datasets import TaskSpec
from .base import (
    Context, Prepared, Recipe, absolute, categories, has_dicom, line, patient_splits, read_table, unique,
)

REQUIRED = ("case_id", "patient_id", "image", "diagnosis")
DIAGNOSIS = {"ntm": 1.0, "tb": 0.0}
FIX = "write labels.csv as the mycobacterial recipe's documentation describes (`ctbench datasets`)"


def _image(ctx: Context, value: str) -> Path | None:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else ctx.source / path
    if path.is_file() or has_dicom(path):
        return path
    return None


def build(ctx: Context) -> Prepared:
    path = ctx.source / "labels.csv"
    if not path.is_file():
        raise ctx.error(f"labels.csv not found in {ctx.source}; {FIX}")
    table = read_table(ctx, path, REQUIRED, FIX)
    for col in ("case_id", "patient_id", "image"):
        blank = table[col].isna() | (table[col].astype(str).str.strip() == "")
        if blank.any():
            raise ctx.error(f"labels.csv column {col} is empty on line {line(blank.idxmax())}; fill it in")
        table[col] = table[col].astype(str).str.strip()
    unique(ctx, table["case_id"], "labels.csv case_id")
    ntm = categories(ctx, table["diagnosis"], DIAGNOSIS, "labels.csv column diagnosis")
    if ntm.isna().any():
        raise ctx.error(f"labels.csv column diagnosis is empty on line {line(ntm.isna().idxmax())}; "
                        f"write NTM or TB")
    rows = []
    extra = [c for c in table.columns if c not in (*REQUIRED, "split", "ntm")]
    for i, rec in table.iterrows():
        image = _image(ctx, rec["image"])
        if image is None:
            ctx.skip(rec["case_id"], f"image {rec['image']!r} not found under {ctx.source} "
                                     f"(a volume file or a folder of .dcm slices)")
            continue
        rows.append({"case_id": rec["case_id"], "patient_id": rec["patient_id"],
                     "image": absolute(image), "ntm": int(ntm[i]), "diagnosis": rec["diagnosis"],
                     **{c: rec[c] for c in extra}})
    df = pd.DataFrame(rows)
    if not df.empty:
        df["split"] = patient_splits(ctx, df, df["ntm"], by="ntm (the diagnosis)")
    description = "ntm = 1 for nontuberculous mycobacterial disease, 0 for tuberculosis."
    return Prepared(df, description)


TASKS = (
    TaskSpec(name="ntm-vs-tb", category="classification", targets=("ntm",), main_metric="auroc",
             kind="binary", description="NTM (1) vs TB (0)"),
)

RECIPE = Recipe(
    name="mycobacterial",
    title="Mycobacterial lung disease: NTM vs TB (user-supplied cohort, ctbench layout)",
    version="1",
    source="user-supplied NTM/TB chest CT cohort (no fixed public layout); layout defined by "
           "ctbench: labels.csv + images",
    licence="that of the user's data source (see its data-use terms)",
    layout="labels.csv (case_id, patient_id, image, diagnosis NTM|TB) + the images it names",
    split_rule="no official split: patient-level 60/20/20 train/val/test, seeded, stratified by "
               "the diagnosis.",
    tasks=TASKS,
    build=build,
)
