"""iCTCF (HUST-19): COVID-19 positivity and severity, and laboratory values, from chest CT.

Source: http://ictcf.biocuckoo.cn/ (Ning et al., "Open resource of clinical data from patients
with pneumonia for the prediction of COVID-19 outcomes via deep learning", Nature Biomedical
Engineering 2020). Licence: as published by the iCTCF project for research use (see its site);
the recipe copies nothing.

iCTCF publishes per-patient CT slices and clinical records on its web site rather than one
archive with a fixed layout. Expected layout (defined by this recipe; build it from the download)::

    clinical.csv     patient_id, pcr, morbidity, crp, ldh, lymphocyte_count, d_dimer  (+ any others)
    images/<patient_id>.nii.gz  (or .nii/.nrrd/.mha/.mhd, or images/<patient_id>/ with a DICOM series)

``pcr``: SARS-CoV-2 nucleic-acid result, Positive/Negative (blank = unknown). ``morbidity``:
iCTCF's morbidity outcome, one of Control, Suspected, Mild, Regular, Severe, Critically ill
(blank = unknown). Lab columns are numbers in iCTCF's units (CRP mg/L, LDH U/L, lymphocytes
10^9/L, D-dimer mg/L), blank where not measured. Labels: ``covid_positive`` = pcr is Positive;
``severe`` = morbidity Severe or Critically ill vs Mild or Regular (Control/Suspected: no label).
Images must be 3-D volumes in HU: the slice images on iCTCF's site are 8-bit lung-window
pictures, whose values are not HU; stack and calibrate them, or use the DICOM originals.
Split (no official one): patient-level 60/20/20, seeded, stratified by (covid_positive, severe).
"""

from __future__ import annotations

import pandas as pd

from ..datasets import TaskSpec
from .base import (
    Context, Prepared, Recipe, absolute, categories, find_image, numbers, patient_splits, read_table,
    unique,
)

LABS = {"crp": "C-reactive protein, mg/L", "ldh": "lactate dehydrogenase, U/L",
        "lymphocyte_count": "lymphocytes, 10^9/L", "d_dimer": "D-dimer, mg/L"}
PCR = {"positive": 1.0, "negative": 0.0}
MORBIDITY = {"control": float("nan"), "suspected": float("nan"), "mild": 0.0, "regular": 0.0,
             "severe": 1.0, "critically ill": 1.0}
FIX = "build clinical.csv as the ictcf recipe's documentation describes (`ctbench datasets`)"


def build(ctx: Context) -> Prepared:
    path = ctx.source / "clinical.csv"
    if not path.is_file():
        raise ctx.error(f"clinical.csv not found in {ctx.source}; {FIX}")
    table = read_table(ctx, path, ("patient_id", "pcr", "morbidity", *LABS), FIX)
    table["patient_id"] = table["patient_id"].astype(str).str.strip()
    unique(ctx, table["patient_id"], "clinical.csv patient_id")
    images = ctx.source / "images"
    if not images.is_dir():
        raise ctx.error(f"image folder not found: {images} is missing; put one volume per "
                        f"patient there (images/<patient_id>.nii.gz)")
    df = pd.DataFrame({
        "case_id": table["patient_id"], "patient_id": table["patient_id"],
        "covid_positive": categories(ctx, table["pcr"], PCR, "clinical.csv column pcr"),
        "severe": categories(ctx, table["morbidity"], MORBIDITY, "clinical.csv column morbidity"),
        "morbidity": table["morbidity"],
        **{c: numbers(ctx, table[c], f"clinical.csv column {c}") for c in LABS},
    })
    found = [find_image(images, pid) for pid in df["patient_id"]]
    for pid, image in zip(df["patient_id"], found):
        if image is None:
            ctx.skip(pid, f"no image {images / pid}.nii.gz (nor .nii/.nrrd/.mha/.mhd or a DICOM folder)")
    keep = [f is not None for f in found]
    df = df[keep].reset_index(drop=True)
    df.insert(2, "image", [absolute(f) for f in found if f is not None])
    for col in ("covid_positive", "severe"):
        df[col] = df[col].astype("Int64")
    if not df.empty:
        strata = df[["covid_positive", "severe"]]  # a rare pair falls back to covid_positive
        df.insert(3, "split", patient_splits(ctx, df, strata, by="covid_positive/severe"))
    labs = "; ".join(f"{c} = {d}" for c, d in LABS.items())
    description = ("One CT volume per patient. covid_positive = SARS-CoV-2 PCR positive; severe "
                   "= morbidity Severe/Critically ill (1) vs Mild/Regular (0), empty for "
                   f"Control/Suspected; {labs}. Volumes must be in HU (iCTCF's web slices are "
                   "8-bit lung-window images).")
    return Prepared(df, description)


TASKS = (
    TaskSpec(name="covid", category="classification", targets=("covid_positive",),
             main_metric="auroc", kind="binary", description="SARS-CoV-2 PCR positive"),
    TaskSpec(name="severity", category="classification", targets=("severe",), main_metric="auroc",
             kind="binary", description="severe or critically ill vs mild or regular"),
    *(TaskSpec(name=f"lab-{c.replace('_', '-')}", category="regression", targets=(c,),
               main_metric="r2", description=d) for c, d in LABS.items()),
)

RECIPE = Recipe(
    name="ictcf",
    title="iCTCF / HUST-19 (COVID-19 CT and clinical data; Ning et al. 2020)",
    version="1",
    source="http://ictcf.biocuckoo.cn/ (Ning et al., Nat Biomed Eng 2020, "
           "doi:10.1038/s41551-020-00633-5)",
    licence="iCTCF terms of use (research use; see ictcf.biocuckoo.cn)",
    layout="clinical.csv (patient_id, pcr, morbidity, crp, ldh, lymphocyte_count, d_dimer) + "
           "images/<patient_id>.nii.gz or images/<patient_id>/*.dcm",
    split_rule="no official split: patient-level 60/20/20 train/val/test, seeded, stratified by "
               "(covid_positive, severe).",
    tasks=TASKS,
    build=build,
    collections=("iCTCF", "HUST-19"),
)
