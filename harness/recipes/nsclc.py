"""NSCLC-Radiomics (Lung1): overall survival of 422 non-small-cell lung cancer patients from CT.

Source: The Cancer Imaging Archive, https://www.cancerimagingarchive.net/collection/nsclc-radiomics/
(Aerts et al., Nature Communications 2014; doi:10.7937/K9/TCIA.2015.PF0M9REI).
Licence: CC BY-NC 3.0 (TCIA, this collection).

Expected layout (the NBIA Data Retriever's download, ``--source`` = its folder or the collection
folder beside the clinical table)::

    NSCLC Radiomics Lung1.clinical-version3-Oct 2019.csv   (PatientID, Survival.time, deadstatus.event, ...)
    NSCLC-Radiomics/LUNG1-001/<study>/<series>/*.dcm       (CT, RTSTRUCT and sometimes SEG series)

The image of a case is the folder of its CT series (``Modality`` CT; RTSTRUCT/SEG objects are
ignored; with several CT series, the one with the most slices). Survival: ``time`` =
``Survival.time`` (days from diagnosis), ``event`` = ``deadstatus.event`` (1 = death). No official
split: patient-level 60/20/20, seeded, stratified by the event.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from ..datasets import TaskSpec
from .base import (
    Context, Prepared, Recipe, absolute, binary, dicom_files, patient_splits, read_table, unique,
)

CLINICAL = "NSCLC Radiomics Lung1.clinical-version3-Oct 2019.csv"
COLLECTION = "NSCLC-Radiomics"
HORIZONS_DAYS = (365.0, 730.0)
COVARIATES = {"age": "age", "gender": "sex", "Overall.Stage": "overall_stage",
              "Histology": "histology"}
FIX = "download it from TCIA (collection NSCLC-Radiomics, images and the clinical CSV)"


def _clinical_file(ctx: Context):
    if (ctx.source / CLINICAL).is_file():
        return ctx.source / CLINICAL
    found = sorted(p for p in [*ctx.source.glob("*.csv"), *ctx.source.glob("*/*.csv")]
                   if "clinical" in p.name.lower())
    if len(found) == 1:
        return found[0]
    if found:
        raise ctx.error(f"several clinical tables found ({', '.join(p.name for p in found)}); "
                        f"keep only {CLINICAL!r}")
    raise ctx.error(f"clinical table not found: expected {ctx.source / CLINICAL}; {FIX}")


def _patients_root(ctx: Context):
    nested = [ctx.source / COLLECTION, *sorted(ctx.source.glob(f"*/{COLLECTION}"))]
    for folder in (ctx.source, *nested):
        if folder.is_dir() and any(folder.glob("LUNG1-*")):
            return folder
    raise ctx.error(f"no patient folders (LUNG1-001, ...) in {ctx.source} or "
                    f"{ctx.source / COLLECTION}; {FIX}")


def _modality(path) -> str:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
                   .get("Modality", "")).upper()
    except (InvalidDicomError, OSError, AttributeError, ValueError):
        return ""


def ct_series(patient_folder) -> tuple[object | None, list[str]]:
    """The CT series folder with the most slices under ``patient_folder`` (any depth), and the
    modalities of every series seen (for messages)."""
    folders = [patient_folder, *sorted(p for p in patient_folder.rglob("*") if p.is_dir())]
    best, seen = None, []
    for folder in folders:
        files = dicom_files(folder)
        if not files:
            continue
        modality = _modality(files[0])
        seen.append(modality or "unreadable")
        if modality == "CT" and (best is None or len(files) > best[1]):
            best = (folder, len(files))
    return (best[0] if best else None), seen


def build(ctx: Context) -> Prepared:
    clinical = read_table(ctx, _clinical_file(ctx),
                          ("PatientID", "Survival.time", "deadstatus.event"), FIX)
    unique(ctx, clinical["PatientID"], "clinical table PatientID")
    root = _patients_root(ctx)
    time = pd.to_numeric(clinical["Survival.time"], errors="coerce")
    if (time < 0).any():
        raise ctx.error(f"Survival.time holds a negative value ({time.min()}); fix the table")
    has_event = clinical["deadstatus.event"].notna()
    event = pd.Series(np.nan, index=clinical.index)
    event[has_event] = binary(ctx, clinical.loc[has_event, "deadstatus.event"], "deadstatus.event")
    rows = []
    for i, pid in enumerate(clinical["PatientID"].astype(str).str.strip()):
        ctx.tick(i, len(clinical))
        folder = root / pid
        if not folder.is_dir():
            ctx.skip(pid, f"patient folder not found at {folder}")
            continue
        series, seen = ct_series(folder)
        if series is None:
            ctx.skip(pid, f"no CT series under {folder} (series seen: {', '.join(seen) or 'none'})")
            continue
        row = {"case_id": pid, "patient_id": pid, "image": absolute(series),
               "time": time.iloc[i], "event": event.iloc[i]}
        row.update({new: clinical[old].iloc[i] for old, new in COVARIATES.items()
                    if old in clinical.columns})
        rows.append(row)
    ctx.tick(len(clinical), len(clinical))
    df = pd.DataFrame(rows)
    if not df.empty:
        df["event"] = df["event"].astype("Int64")
        df["split"] = patient_splits(ctx, df, df["event"], by="event")
    description = ("One CT series (DICOM folder) per patient, the planning CT. time = "
                   "Survival.time in days, event = deadstatus.event (1 = death, 0 = censored); "
                   "clinical covariates age, sex, overall_stage, histology are kept as columns.")
    return Prepared(df, description, {"patients_folder": str(root)})


TASKS = (
    TaskSpec(name="survival", category="survival", targets=("time", "event"),
             main_metric="c_index", horizons=HORIZONS_DAYS,
             description="overall survival in days (1- and 2-year time-dependent AUC)"),
)

RECIPE = Recipe(
    name="nsclc-radiomics",
    title="NSCLC-Radiomics (Lung1, TCIA; Aerts et al. 2014)",
    version="1",
    source="https://www.cancerimagingarchive.net/collection/nsclc-radiomics/ "
           "(doi:10.7937/K9/TCIA.2015.PF0M9REI)",
    licence="CC-BY-NC-3.0",
    layout=f"'{CLINICAL}' + {COLLECTION}/LUNG1-###/<study>/<series>/*.dcm",
    split_rule="no official split: patient-level 60/20/20 train/val/test, seeded, stratified by "
               "the death event.",
    tasks=TASKS,
    build=build,
    collections=("NSCLC-Radiomics", "TCIA", "IDC"),
)
