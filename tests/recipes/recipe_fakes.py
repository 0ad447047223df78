"""Tiny stand-ins for the files public CT datasets ship: NIfTI, MetaImage and DICOM series."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

_TEMPLATE = pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def volume(seed: int, shape=(12, 12, 8), dtype=np.int16) -> np.ndarray:
    """A CT-like array in HU: air outside, soft tissue inside, a seed-dependent bright blob."""
    rng = np.random.default_rng(seed)
    arr = np.full(shape, -1000, dtype=np.float32)
    s = tuple(slice(d // 6, d - d // 6) for d in shape)
    arr[s] = 40
    c = rng.integers(1, np.maximum(np.array(shape) - 1, 2))
    arr[tuple(slice(max(k - 1, 0), k + 1) for k in c)] = rng.uniform(200, 900)
    arr += rng.normal(0, 10, shape)
    return arr.astype(dtype)


def write_nifti(path: Path, data: np.ndarray, spacing=(2.0, 2.0, 3.0), slope=None, inter=None,
                oriented: bool = True) -> Path:
    """A NIfTI file; ``oriented=False`` leaves qform/sform codes 0 (a "blank" header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    img = nib.Nifti1Image(data, affine)
    if oriented:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    else:
        img.set_qform(None, code=0)
        img.set_sform(None, code=0)
    if slope is None:
        nib.save(img, str(path))
        return path
    # nibabel recomputes scl_slope/scl_inter on save; write header + voxels by hand to keep them
    hdr = img.header.copy()
    hdr.set_data_dtype(data.dtype)
    hdr.set_slope_inter(slope, inter)
    hdr["vox_offset"] = 352
    with gzip.open(path, "wb") as f:
        hdr.write_to(f)
        f.write(b"\0" * 4)
        f.write(np.asarray(data).tobytes(order="F"))
    return path


def write_mhd(path: Path, data: np.ndarray, spacing=(2.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0)) -> Path:
    """A MetaImage pair ``.mhd`` + ``.raw`` (LPS geometry, as LUNA16 ships)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return path


def write_dicom_series(folder: Path, seed: int, n_slices: int = 6, size: int = 12,
                       modality: str = "CT", study_uid: str | None = None,
                       patient_id: str = "ANON") -> Path:
    """A DICOM series (one file per slice) made from pydicom's CT_small.dcm; ``modality`` other
    than CT writes one pixel-less object (an RTSTRUCT/SEG stand-in)."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), study_uid or generate_uid()
    if modality != "CT":
        ds = copy.deepcopy(_TEMPLATE)
        del ds.PixelData
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, series, study
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / "1-1.dcm", enforce_file_format=True)
        return folder
    arr = volume(seed, (size, size, n_slices))
    for k in range(n_slices):
        ds = copy.deepcopy(_TEMPLATE)
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [2.0, 2.0]
        ds.SliceThickness = 3.0
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PatientID = patient_id
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, study
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PixelData = (arr[:, :, k].T.astype(np.int32) + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"1-{k + 1:03d}.dcm", enforce_file_format=True)
    return folder


def write_csv(path: Path, rows: list[dict] | pd.DataFrame, sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
    return path
