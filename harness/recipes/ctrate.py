"""CT-RATE: non-contrast chest CT volumes with radiology reports and 18 abnormality labels.

Source: https://huggingface.co/datasets/ibrahimhamamci/CT-RATE (Hamamci et al., "Developing
generalist foundation models from a multimodal dataset for 3D computed tomography", 2024).
Licence: CC BY-NC-SA 4.0 (gated on the hub; non-commercial research use, no redistribution).

Expected layout (``--source`` is the hub snapshot or its ``dataset/`` folder)::

    dataset/train/train_1/train_1_a/train_1_a_1.nii.gz     (or dataset/train_fixed/...)
    dataset/valid/valid_1/valid_1_a/valid_1_a_1.nii.gz     (or dataset/valid_fixed/...)
    dataset/multi_abnormality_labels/train_predicted_labels.csv, valid_predicted_labels.csv
    dataset/radiology_text_reports/train_reports.csv, validation_reports.csv

A case is one volume (``train_<patient>_<scan>_<reconstruction>``); the patient is
``train_<patient>`` / ``valid_<patient>``. Tasks: the 18 labels as multi-label classification and
as label retrieval; report generation from ``Findings_EN``. Splits: official train patients ->
80/20 train/val (seeded, stratified by the number of positive labels), official validation set ->
test. Volumes not downloaded are left out (CT-RATE is often fetched in part).

Intensities: the v2 volumes store Hounsfield units with identity NIfTI scaling (``scl_slope``
1 or unset, ``scl_inter`` 0) and a real spacing/orientation in the header. ctbench's NIfTI reader
applies the header's ``scl_slope``/``scl_inter`` (identity here), and this recipe never applies
``metadata/*.csv``'s ``RescaleSlope``/``RescaleIntercept`` (values of the original DICOM), so no
rescale happens twice. ``prepare`` records the header scaling of the first volume of each split,
warns when it is not the identity, and refuses volumes without orientation (qform and sform codes
0, as in the first release): those need the v2 download.
"""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pandas as pd

from ..datasets import TaskSpec
from .base import (
    Context, Prepared, Recipe, absolute, binary, holdout, read_table, require_dir, snake, unique,
)

LABELS: tuple[str, ...] = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema",
    "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
)
COLUMNS: tuple[str, ...] = tuple(snake(n) for n in LABELS)
# official split -> (labels CSV, reports CSV, image folders in order of preference)
OFFICIAL = {
    "train": ("train_predicted_labels.csv", "train_reports.csv", ("train_fixed", "train")),
    "valid": ("valid_predicted_labels.csv", "validation_reports.csv", ("valid_fixed", "valid")),
}
VOLUME = re.compile(r"^(train|valid)_(\d+)_([A-Za-z]+)_(\d+)\.nii\.gz$")
VAL_FRACTION = 0.2
FIX = "download it from huggingface.co/datasets/ibrahimhamamci/CT-RATE"


def _dataset_root(source):
    nested = source / "dataset"
    return nested if (nested / "multi_abnormality_labels").is_dir() else source


def _image_folder(ctx: Context, root, split: str):
    names = OFFICIAL[split][2]
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise ctx.error(f"no {split} image folder: expected {root / names[0]} or {root / names[1]}; "
                    f"{FIX} (volumes as {names[1]}/{split}_1/{split}_1_a/{split}_1_a_1.nii.gz)")


def volume_path(folder, volume_name: str, ctx: Context):
    """``train_1_a_1.nii.gz`` -> ``folder/train_1/train_1_a/train_1_a_1.nii.gz``."""
    m = VOLUME.match(volume_name)
    if not m:
        raise ctx.error(f"malformed VolumeName {volume_name!r}; CT-RATE names volumes like "
                        f"train_1_a_1.nii.gz, re-download the label table")
    split, patient, scan, _ = m.groups()
    return folder / f"{split}_{patient}" / f"{split}_{patient}_{scan}" / volume_name


def _header_facts(ctx: Context, path) -> dict:
    """Scaling and orientation codes of one volume's header (the voxels are not read)."""
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for bad files
        raise ctx.error(f"{path} is not a readable NIfTI file ({type(e).__name__}); re-download it")
    hdr = img.header
    if int(hdr["qform_code"]) == 0 and int(hdr["sform_code"]) == 0:
        raise ctx.error(f"{path} has no orientation in its NIfTI header (qform and sform codes "
                        f"0), as in CT-RATE's first release, whose voxels are raw stored values "
                        f"without spacing; {FIX} again (v2 volumes)")
    # nibabel moves scl_slope/scl_inter into the array proxy (unset -> 1, 0): what the reader applies
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    facts = {"scl_slope": slope, "scl_inter": inter, "datatype": str(hdr.get_data_dtype())}
    if slope != 1.0 or inter != 0.0:
        ctx.warnings.append(
            f"{path.name}: NIfTI header holds scl_slope={slope}, scl_inter={inter}; ctbench "
            f"applies it when reading (v2 volumes normally hold HU with identity scaling), so "
            f"check that air reads about -1000 HU")
    return facts


def _split_rows(ctx: Context, root, split: str) -> tuple[list[dict], dict]:
    labels_csv, reports_csv, _ = OFFICIAL[split]
    labels = read_table(ctx, root / "multi_abnormality_labels" / labels_csv,
                        ("VolumeName", *LABELS), FIX)
    unique(ctx, labels["VolumeName"], labels_csv)
    reports = read_table(ctx, root / "radiology_text_reports" / reports_csv,
                         ("VolumeName", "Findings_EN"), FIX).drop_duplicates("VolumeName")
    findings = dict(zip(reports["VolumeName"], reports["Findings_EN"]))
    values = [binary(ctx, labels[n], f"{labels_csv} column {n!r}").tolist() for n in LABELS]
    folder = _image_folder(ctx, root, split)
    rows, facts = [], {}
    for i, name in enumerate(labels["VolumeName"].astype(str)):
        path = volume_path(folder, name, ctx)
        if not path.is_file():
            ctx.skip(name, f"image not found at {path}")
            continue
        if not facts:
            facts = {"volume": name, "folder": folder.name, **_header_facts(ctx, path)}
        report = findings.get(name)
        rows.append({
            "case_id": name[: -len(".nii.gz")], "patient_id": "_".join(name.split("_")[:2]),
            "image": absolute(path), "official_split": split,
            **{c: v[i] for c, v in zip(COLUMNS, values)},
            "report": report if isinstance(report, str) and report.strip() else None,
        })
    return rows, facts


def build(ctx: Context) -> Prepared:
    root = _dataset_root(ctx.source)
    require_dir(ctx, root / "multi_abnormality_labels", "label folder", FIX)
    require_dir(ctx, root / "radiology_text_reports", "report folder", FIX)
    rows, notes = [], {"header": {}}
    for split in OFFICIAL:
        split_rows, facts = _split_rows(ctx, root, split)
        rows += split_rows
        notes["header"][split] = facts
    df = pd.DataFrame(rows, columns=["case_id", "patient_id", "image", "split", "official_split",
                                     *COLUMNS, "report"])
    train = df["official_split"] == "train"
    strata = df.loc[train, list(COLUMNS)].sum(axis=1).clip(upper=4)
    val = holdout(ctx, df.loc[train, "patient_id"], strata, VAL_FRACTION,
                  by="number of positive labels (capped at 4)")
    df["split"] = "test"
    df.loc[train, "split"] = np.where(val, "val", "train")
    mapping = ", ".join(f"{c} = '{n}'" for n, c in zip(LABELS, COLUMNS))
    description = (
        "Cases are volumes (several reconstructions per scan); patient_id = train_N / valid_N. "
        f"Label columns (0/1, CT-RATE's multi_abnormality_labels): {mapping}. report = Findings_EN. "
        "Intensities: HU as stored (v2 volumes: identity NIfTI scaling); the reader applies only "
        "the header's scl_slope/scl_inter and metadata RescaleSlope/RescaleIntercept are never "
        "applied again."
    )
    return Prepared(df, description, notes)


TASKS = (
    TaskSpec(name="abnormality", category="classification", targets=COLUMNS, main_metric="auroc",
             kind="multilabel", description="18 CT-RATE abnormalities (multi-label)"),
    TaskSpec(name="label-retrieval", category="retrieval", targets=COLUMNS,
             main_metric="label_recall@5",
             description="volumes sharing an abnormality (1 positive vs up to 99 negatives)"),
    TaskSpec(name="report-generation", category="report-generation", targets=("report",),
             main_metric="finding_f1", description="Findings section of the radiology report"),
)

RECIPE = Recipe(
    name="ct-rate",
    title="CT-RATE (non-contrast chest CT with reports, Hamamci et al. 2024)",
    version="1",
    source="https://huggingface.co/datasets/ibrahimhamamci/CT-RATE (Hamamci et al., 2024, "
           "arXiv:2403.17834)",
    licence="CC-BY-NC-SA-4.0",
    layout="dataset/{train,valid}[_fixed]/<patient>/<scan>/<volume>.nii.gz, "
           "dataset/multi_abnormality_labels/*_predicted_labels.csv, "
           "dataset/radiology_text_reports/{train,validation}_reports.csv",
    split_rule="official train patients -> 80/20 train/val by patient (seeded, stratified by the "
               "number of positive labels, capped at 4); official validation set -> test.",
    tasks=TASKS,
    build=build,
    collections=("CT-RATE",),
)
