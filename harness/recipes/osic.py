"""OSIC Pulmonary Fibrosis Progression: forced vital capacity (FVC) from a baseline chest CT.

Source: https://www.kaggle.com/c/osic-pulmonary-fibrosis-progression (Open Source Imaging
Consortium, 2020). Licence: Kaggle competition data, use under the competition's rules
(non-commercial research); accept them on Kaggle before downloading.

Expected layout (the competition archive, unzipped)::

    train.csv                      (Patient, Weeks, FVC, Percent, Age, Sex, SmokingStatus)
    train/<Patient>/1.dcm ... N.dcm

Target: the baseline FVC (ml), i.e. the spirometry record closest to the CT (``Weeks`` nearest 0;
on a tie the earlier week). ``percent_baseline``, ``baseline_week``, age, sex and smoking status
are kept as columns. The competition's test patients also appear in train.csv and its private
test labels are not public, so only ``train/`` is used. Split (none official): patient-level
60/20/20, seeded, stratified by baseline-FVC quartile.
"""

from __future__ import annotations

import pandas as pd

from ..datasets import TaskSpec
from .base import (
    Context, Prepared, Recipe, absolute, has_dicom, numbers, patient_splits, quantile_bins, read_table,
)

COLUMNS = ("Patient", "Weeks", "FVC", "Percent", "Age", "Sex", "SmokingStatus")
FIX = "download the competition data from kaggle.com/c/osic-pulmonary-fibrosis-progression"


def baseline(ctx: Context, table: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: the record whose ``Weeks`` is closest to 0 (earlier week on a tie)."""
    t = table.copy()
    for col in ("Weeks", "FVC", "Percent", "Age"):
        t[col] = numbers(ctx, t[col], f"train.csv column {col}")
    t = t.dropna(subset=["Weeks", "FVC"])
    t = t.assign(_dist=t["Weeks"].abs()).sort_values(["Patient", "_dist", "Weeks"], kind="stable")
    return t.drop_duplicates("Patient").drop(columns="_dist").reset_index(drop=True)


def build(ctx: Context) -> Prepared:
    path = ctx.source / "train.csv"
    if not path.is_file():
        raise ctx.error(f"train.csv not found in {ctx.source}; {FIX}")
    table = read_table(ctx, path, COLUMNS, FIX)
    table["Patient"] = table["Patient"].astype(str).str.strip()
    images = ctx.source / "train"
    if not images.is_dir():
        raise ctx.error(f"image folder not found: {images} is missing; {FIX}")
    rows = []
    for rec in baseline(ctx, table).itertuples(index=False):
        folder = images / rec.Patient
        if not has_dicom(folder):
            ctx.skip(rec.Patient, f"no DICOM slices in {folder}")
            continue
        rows.append({"case_id": rec.Patient, "patient_id": rec.Patient, "image": absolute(folder),
                     "fvc_baseline": rec.FVC, "percent_baseline": rec.Percent,
                     "baseline_week": rec.Weeks, "age": rec.Age, "sex": rec.Sex,
                     "smoking_status": rec.SmokingStatus})
    df = pd.DataFrame(rows)
    if not df.empty:
        strata = quantile_bins(df["fvc_baseline"], 4)
        df["split"] = patient_splits(ctx, df, strata, by="fvc_baseline quartile")
    description = ("One CT (DICOM folder) per patient. fvc_baseline = FVC (ml) of the record with "
                   "Weeks closest to 0 (the CT), earlier week on a tie; percent_baseline its "
                   "percent of predicted; baseline_week its Weeks.")
    return Prepared(df, description)


TASKS = (
    TaskSpec(name="fvc", category="regression", targets=("fvc_baseline",), main_metric="r2",
             description="baseline forced vital capacity, ml"),
)

RECIPE = Recipe(
    name="osic",
    title="OSIC Pulmonary Fibrosis Progression (Kaggle 2020)",
    version="1",
    source="https://www.kaggle.com/c/osic-pulmonary-fibrosis-progression (Open Source Imaging "
           "Consortium)",
    licence="Kaggle competition rules (non-commercial research use)",
    layout="train.csv + train/<Patient>/*.dcm",
    split_rule="no official labelled test set: patient-level 60/20/20 train/val/test, seeded, "
               "stratified by baseline-FVC quartile.",
    tasks=TASKS,
    build=build,
    collections=("OSIC",),
)
