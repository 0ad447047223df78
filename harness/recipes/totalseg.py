"""TotalSegmentator v2: segmentation of 117 anatomical structures on 1228 routine CT scans.

Source: https://zenodo.org/records/10047292 (Wasserthal et al., Radiology: Artificial
Intelligence 2023; https://github.com/wasserth/TotalSegmentator). Licence: CC BY 4.0.

Expected layout::

    meta.csv                                   (image_id;...;split  -- split is train/val/test)
    s0000/ct.nii.gz
    s0000/segmentations/spleen.nii.gz ... costal_cartilages.nii.gz   (117 binary masks)

The task needs one label map per case, so the recipe combines the 117 binary masks into a uint8
label map (``label id`` = position in :data:`STRUCTURES`, 0 = background; where masks overlap, the
higher id wins) written to ``<out>/labels/<image_id>.nii.gz`` on the CT's grid. That is derived
data, not a copy of the images: it is written atomically, referenced relative to the prepared
folder, and cases already combined are skipped when ``prepare`` runs again. Split: the official
``split`` column of meta.csv. Each scan is its own patient (``patient_id`` = ``image_id``): the
release carries no patient identifier.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..datasets import TaskSpec
from .base import Context, Prepared, Recipe, absolute, read_table, unique

_VERTEBRAE = ("S1", "L5", "L4", "L3", "L2", "L1", *(f"T{i}" for i in range(12, 0, -1)),
              *(f"C{i}" for i in range(7, 0, -1)))
STRUCTURES: tuple[str, ...] = (
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus",
    "trachea", "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate",
    "kidney_cyst_left", "kidney_cyst_right", "sacrum", *(f"vertebrae_{v}" for v in _VERTEBRAE),
    "heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right",
    "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
    "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left",
    "superior_vena_cava", "inferior_vena_cava", "portal_vein_and_splenic_vein",
    "iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right",
    "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left",
    "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord",
    "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left",
    "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left",
    "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull",
    *(f"rib_left_{i}" for i in range(1, 13)), *(f"rib_right_{i}" for i in range(1, 13)),
    "sternum", "costal_cartilages",
)
LABELS = {i + 1: name for i, name in enumerate(STRUCTURES)}  # 0 = background
LABEL_DIR = "labels"
OFFICIAL = {"train": "train", "val": "val", "test": "test"}
FIX = "download the TotalSegmentator v2 dataset from zenodo.org/records/10047292"


class _Unusable(Exception):
    """A case whose masks cannot be combined (reason in the message)."""


def combine_masks(case_dir, dest) -> None:
    """Write the label map of ``case_dir``'s per-structure masks to ``dest`` (atomically)."""
    ct = nib.load(str(case_dir / "ct.nii.gz"))
    shape, affine = ct.shape[:3], ct.affine
    seg = case_dir / "segmentations"
    missing = [n for n in STRUCTURES if not (seg / f"{n}.nii.gz").is_file()]
    if missing:
        raise _Unusable(f"{seg} lacks {len(missing)} of the {len(STRUCTURES)} v2 structure masks "
                        f"(e.g. {', '.join(missing[:3])}); {FIX}")
    labels = np.zeros(shape, dtype=np.uint8)
    for label, name in LABELS.items():
        img = nib.load(str(seg / f"{name}.nii.gz"))
        if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-3):
            raise _Unusable(f"{seg / name}.nii.gz is not on the grid of ct.nii.gz "
                            f"(shape {img.shape[:3]} vs {shape}); re-download the case")
        labels[np.asanyarray(img.dataobj).reshape(shape) > 0] = label
    out = nib.Nifti1Image(labels, affine)
    out.set_qform(affine, code=int(ct.header["qform_code"]) or 1)
    out.set_sform(affine, code=int(ct.header["sform_code"]) or 1)
    out.header.set_xyzt_units("mm", "sec")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(gzip.compress(out.to_bytes(), compresslevel=6, mtime=0))


def build(ctx: Context) -> Prepared:
    meta_path = ctx.source / "meta.csv"
    if not meta_path.is_file():
        raise ctx.error(f"meta.csv not found in {ctx.source}; {FIX} and pass its folder")
    meta = read_table(ctx, meta_path, ("image_id", "split"), FIX)
    unique(ctx, meta["image_id"], "meta.csv image_id")
    meta["split"] = meta["split"].astype(str).str.strip()
    bad = sorted(set(meta["split"]) - set(OFFICIAL))
    if bad:
        raise ctx.error(f"meta.csv split column holds {bad}; expected train, val or test")
    rows, combined, reused = [], 0, 0
    for i, (image_id, split) in enumerate(zip(meta["image_id"].astype(str), meta["split"])):
        ctx.tick(i, len(meta))
        case_dir = ctx.source / image_id
        if not (case_dir / "ct.nii.gz").is_file():
            ctx.skip(image_id, f"image not found at {case_dir / 'ct.nii.gz'}")
            continue
        dest = ctx.out / LABEL_DIR / f"{image_id}.nii.gz"
        if dest.is_file():
            reused += 1
        else:
            try:
                combine_masks(case_dir, dest)
            except _Unusable as e:
                ctx.skip(image_id, str(e))
                continue
            except Exception as e:  # unreadable NIfTI: nibabel raises several types
                ctx.skip(image_id, f"masks could not be read ({type(e).__name__}: {e}); re-download")
                continue
            combined += 1
        rows.append({"case_id": image_id, "patient_id": image_id,
                     "image": absolute(case_dir / "ct.nii.gz"),
                     "mask": f"{LABEL_DIR}/{image_id}.nii.gz", "split": OFFICIAL[split]})
    ctx.tick(len(meta), len(meta))
    table = ", ".join(f"{k} {v}" for k, v in {0: "background", **LABELS}.items())
    description = (f"mask = label map combined by the recipe from the 117 per-structure masks "
                   f"(uint8, on the CT grid, higher id wins on overlap). Labels: {table}.")
    return Prepared(pd.DataFrame(rows), description,
                    {"label_maps_written": combined, "label_maps_reused": reused})


TASKS = (
    TaskSpec(name="segmentation", category="segmentation", targets=("mask",), label_names=LABELS,
             main_metric="dice_macro", description="117 TotalSegmentator v2 structures"),
)

RECIPE = Recipe(
    name="totalsegmentator",
    title="TotalSegmentator v2 (117 structures; Wasserthal et al. 2023)",
    version="1",
    source="https://zenodo.org/records/10047292 (Wasserthal et al., Radiol Artif Intell 2023)",
    licence="CC-BY-4.0",
    layout="meta.csv + s####/ct.nii.gz + s####/segmentations/<structure>.nii.gz",
    split_rule="official split column of meta.csv (train/val/test).",
    tasks=TASKS,
    build=build,
    collections=("TotalSegmentator",),
)
