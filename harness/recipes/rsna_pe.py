"""RSNA-STR Pulmonary Embolism Detection: study-level PE classification on CT pulmonary angiograms.

Source: https://www.kaggle.com/c/rsna-str-pulmonary-embolism-detection (RSNA and the Society of
Thoracic Radiology, 2020; Colak et al., Radiology: Artificial Intelligence 2021). Licence: RSNA
dataset terms on Kaggle (non-commercial research and education); accept them before downloading.

Expected layout (the competition archive, unzipped)::

    train.csv       (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, pe_present_on_image,
                     negative_exam_for_pe, indeterminate, ... one row per slice)
    train/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm

A case is a study (its one series folder is the image). Label: ``pe_present`` = not
``negative_exam_for_pe``, except studies flagged ``indeterminate`` (neither positive nor negative
in the competition), whose label is left empty. The other exam-level labels are kept as columns
(study maximum). The test set's labels are not public, so only ``train/`` is used. Split (none
official): patient-level 60/20/20, seeded, stratified by ``pe_present``; the CSV has no patient
identifier, so ``patient_id`` is the study UID.
"""

from __future__ import annotations

import pandas as pd

from ..datasets import TaskSpec
from .base import Context, Prepared, Recipe, absolute, binary, has_dicom, patient_splits, read_table

REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "pe_present_on_image",
            "negative_exam_for_pe", "indeterminate")
EXAM_LABELS = ("rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1", "leftsided_pe", "rightsided_pe",
               "central_pe", "chronic_pe", "acute_and_chronic_pe", "qa_motion", "qa_contrast",
               "flow_artifact", "true_filling_defect_not_pe")
FIX = "download the competition data from kaggle.com/c/rsna-str-pulmonary-embolism-detection"


def study_labels(ctx: Context, table: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, series): exam-level labels as the study maximum."""
    flags = [c for c in ("pe_present_on_image", "negative_exam_for_pe", "indeterminate", *EXAM_LABELS)
             if c in table.columns]
    t = table[["StudyInstanceUID", "SeriesInstanceUID"]].astype(str).copy()
    for c in flags:
        t[c] = binary(ctx, table[c], f"train.csv column {c}")
    studies = t.groupby(["StudyInstanceUID", "SeriesInstanceUID"], sort=True).max().reset_index()
    pe = 1 - studies["negative_exam_for_pe"]
    studies["pe_present"] = pe.where(studies["indeterminate"] == 0).astype("Int64")
    return studies.rename(columns={"pe_present_on_image": "pe_on_any_image"})


def build(ctx: Context) -> Prepared:
    path = ctx.source / "train.csv"
    if not path.is_file():
        raise ctx.error(f"train.csv not found in {ctx.source}; {FIX}")
    table = read_table(ctx, path, REQUIRED, FIX)
    images = ctx.source / "train"
    if not images.is_dir():
        raise ctx.error(f"image folder not found: {images} is missing; {FIX}")
    studies = study_labels(ctx, table)
    keep, paths = [], []
    for i, (study, series) in enumerate(zip(studies["StudyInstanceUID"], studies["SeriesInstanceUID"])):
        ctx.tick(i, len(studies))
        folder = images / study / series
        ok = has_dicom(folder)
        if not ok:
            ctx.skip(study, f"no DICOM slices in {folder}")
        keep.append(ok)
        paths.append(absolute(folder))
    ctx.tick(len(studies), len(studies))
    df = studies.assign(image=paths)[keep].reset_index(drop=True)
    df.insert(0, "case_id", df["StudyInstanceUID"])
    df.insert(1, "patient_id", df["StudyInstanceUID"])
    if not df.empty:
        df["split"] = patient_splits(ctx, df, df["pe_present"].astype(str), by="pe_present")
    description = ("One CTPA series (DICOM folder) per study; patient_id = StudyInstanceUID. "
                   "pe_present = 1 - negative_exam_for_pe, empty for indeterminate exams; "
                   "pe_on_any_image = max of pe_present_on_image; other exam labels are study "
                   "maxima of the competition's columns.")
    return Prepared(df, description)


TASKS = (
    TaskSpec(name="pe", category="classification", targets=("pe_present",), main_metric="auroc",
             kind="binary", description="pulmonary embolism present in the study"),
)

RECIPE = Recipe(
    name="rsna-pe",
    title="RSNA-STR Pulmonary Embolism Detection (Kaggle 2020; Colak et al. 2021)",
    version="1",
    source="https://www.kaggle.com/c/rsna-str-pulmonary-embolism-detection (RSNA/STR; Colak et "
           "al., Radiol Artif Intell 2021)",
    licence="RSNA dataset terms on Kaggle (non-commercial research and education)",
    layout="train.csv + train/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm",
    split_rule="no labelled official test set: patient(study)-level 60/20/20 train/val/test, "
               "seeded, stratified by pe_present.",
    tasks=TASKS,
    build=build,
    collections=("RSNA-PE",),
)
