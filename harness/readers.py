"""Readers that turn an image file (or a DICOM folder) into the canonical volume.

The canonical volume is a MONAI ``MetaTensor`` of shape ``(1, X, Y, Z)``, float32 Hounsfield
units, whose ``affine`` (float64 4x4) maps the file's own voxel index ``(i, j, k)`` to world
millimetres in RAS. Arrays are never reoriented: models and tasks read geometry from the affine.

NIfTI is read with nibabel (its affine is already RAS). NRRD, MetaImage and DICOM are read with
SimpleITK, whose physical space is LPS; we flip x and y to get RAS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from nibabel.filebasedimages import ImageFileError

from .errors import CTBenchError

__all__ = ["MIN_SLICES", "SUPPORTED", "plausibility_warnings", "read_volume", "require_regular", "require_slices",
           "validate_volume"]

log = logging.getLogger("ctbench")

NIFTI = (".nii", ".nii.gz")
ITK = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}
DICOM = (".dcm",)
SUPPORTED = (*NIFTI, *ITK, *DICOM, "a folder holding a DICOM series")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# What nibabel / gzip / SimpleITK raise on unreadable files (truncated, garbage, wrong header).
_CORRUPT = (OSError, EOFError, ValueError, zlib.error, RuntimeError, ImageFileError)
_ITK_NOISE = re.compile(r"^(ITK ERROR: \w+\(0x[0-9a-f]+\): |sitk::ERROR: )")
# What CT looks like (see plausibility_warnings): HU spans about [-1024, 3071]; voxels are a few mm
MIN_HU_RANGE = 100.0
NORMALISED = (-2.0, 2.0)
SPACING_MM = (0.05, 20.0)  # plausible voxel size per axis: (low, high]
# A CT volume has at least this many voxels along every axis; fewer is a slice, a scout or a
# 2-D image that adapters would otherwise encode silently (e.g. one DICOM file of a series)
MIN_SLICES = 4


def read_volume(path: str | Path) -> MetaTensor:
    """Read ``path`` (NIfTI, NRRD, MetaImage, a .dcm file or a DICOM folder) as a canonical volume."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CTBenchError(f"image not found: {p}; check the path and that the file was copied")
    require_regular(p)
    if p.is_dir():
        vol = validate_volume(_read_dicom_dir(p), str(p))
        require_slices(tuple(vol.shape[1:]), p, "dicom")
        return vol
    name = p.name.lower()
    if name.endswith(NIFTI):
        vol = _read_nifti(p)
    elif p.suffix.lower() in ITK:
        vol = _read_itk(p, ITK[p.suffix.lower()])
    elif p.suffix.lower() in DICOM or _has_dicom_magic(p):
        vol = _read_itk(p, "dicom")
    else:
        raise CTBenchError(f"unsupported image format: {p}; supported are {', '.join(SUPPORTED)}. "
                           f"Convert the image to one of these (e.g. NIfTI).")
    vol = validate_volume(vol, str(p))
    require_slices(tuple(vol.shape[1:]), p, vol.meta.get("format"))
    return vol


def require_slices(shape: tuple[int, ...], path: Path, fmt: str | None = None) -> None:
    """Refuse an image with fewer than ``MIN_SLICES`` voxels along any axis: a single slice (one
    DICOM file of a series, a scout, a 2-D export) is not a CT volume, and models would encode
    it without complaint. ``fmt`` ``"dicom"`` words the fix for DICOM files and folders."""
    short = [(axis, int(n)) for axis, n in enumerate(shape) if int(n) < MIN_SLICES]
    if not short:
        return
    axis, n = short[0]
    shown = tuple(int(v) for v in shape)
    rule = f"a CT volume needs at least {MIN_SLICES} voxels along every axis"
    if fmt == "dicom" and path.is_dir():
        raise CTBenchError(f"{path}: the DICOM series read from this folder has only {n} slice(s) (shape {shown}); "
                           f"{rule}. Point the image column at the folder holding the whole series")
    if fmt == "dicom":
        raise CTBenchError(f"{path}: a single DICOM file with {n} slice(s) (shape {shown}), not a volume; "
                           f"{rule}. Point the image column at the series folder ({path.parent}) so that "
                           f"all its slices are read")
    raise CTBenchError(f"{path}: only {n} voxel(s) along axis {axis} (shape {shown}); {rule} (this looks "
                       f"like a single slice or a 2-D image). Export the whole scan as one 3-D volume")


def require_regular(path: Path) -> None:
    """Refuse an image that is not a regular file (a FIFO, device or socket would block or never
    end a read: ``/dev/zero``, a named pipe); for a folder, check every entry a DICOM scan opens.
    Symbolic links are followed: a link to a regular file is fine."""
    entries = _entries(path)
    for entry in entries:
        try:
            mode = os.stat(entry).st_mode
        except FileNotFoundError:
            if entry == path:
                raise CTBenchError(f"image not found: {path}; check the path and that the file was copied") from None
            continue  # a dangling link inside a DICOM folder: nothing to read (ITK skips it too)
        except OSError as err:
            raise CTBenchError(f"{entry}: cannot be read ({err.strerror}); check its permissions") from None
        if stat.S_ISREG(mode) or (entry != path and stat.S_ISDIR(mode)):
            continue
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        fix = (f"remove it from the DICOM folder {path}" if entry != path
               else "point the manifest's image column at the image file itself")
        raise CTBenchError(f"{entry} is {kind}, not an image file (reading it would block or never end); {fix}")


def _entries(path: Path) -> list[Path]:
    """``path`` itself, or the entries of the folder ``path`` (the files a DICOM scan opens)."""
    if not path.is_dir():
        return [path]
    try:
        return sorted(path.iterdir())
    except OSError as err:
        raise CTBenchError(f"{path}: cannot list the folder ({err.strerror}); check its permissions") from None


def plausibility_warnings(vol: MetaTensor) -> list[str]:
    """Why ``vol`` does not look like CT in Hounsfield units, if it does not (empty: plausible).

    The rule: CT intensities span roughly [-1024, 3071] HU and any scan holds both air or fat
    and soft tissue, so a volume whose values all lie within ``NORMALISED`` ([-2, 2]: rescaled
    or normalised data) or span less than ``MIN_HU_RANGE`` HU (nearly constant) is flagged; so
    is a voxel size outside ``SPACING_MM`` ((0.05, 20] mm per axis; e.g. metres written as mm).
    These are warnings: the case is still encoded, the reasons are recorded with the result.
    """
    out = []
    lo, hi = (float(v) for v in torch.aminmax(vol.as_tensor().float()))
    if NORMALISED[0] <= lo and hi <= NORMALISED[1]:
        out.append(f"intensities lie in [{lo:.3g}, {hi:.3g}]: normalised data, not Hounsfield units; "
                   f"give the scan in HU (undo the normalisation, apply the rescale slope/intercept)")
    elif hi - lo < MIN_HU_RANGE:
        out.append(f"intensities span only {hi - lo:.3g} HU ([{lo:.4g}, {hi:.4g}]); CT spans about "
                   f"[-1024, 3071] HU: check the export (rescale slope/intercept, windowing)")
    spacing = np.linalg.norm(np.asarray(vol.affine, dtype=np.float64)[:3, :3], axis=0)
    if np.any(spacing <= SPACING_MM[0]) or np.any(spacing > SPACING_MM[1]):
        shown = ", ".join(f"{v:.4g}" for v in spacing)
        out.append(f"voxel spacing ({shown}) mm is outside ({SPACING_MM[0]:g}, {SPACING_MM[1]:g}] mm; check "
                   f"the header's units and pixel spacing")
    return out


def validate_volume(vol: MetaTensor, source: str) -> MetaTensor:
    """Check that ``vol`` is a finite single-channel 3-D image; return it as ``(1, X, Y, Z)`` float32.

    A trailing singleton 4th spatial dimension (e.g. a one-timepoint NIfTI) is dropped. Errors
    name ``source`` so the user knows which file to fix.
    """
    data = vol.as_tensor() if isinstance(vol, MetaTensor) else torch.as_tensor(vol)
    meta = dict(vol.meta) if isinstance(vol, MetaTensor) else {}
    affine = vol.affine if isinstance(vol, MetaTensor) else torch.eye(4, dtype=torch.float64)
    if data.ndim == 5 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 4 or data.shape[0] != 1:
        shape = tuple(data.shape[1:]) if data.ndim and data.shape[0] == 1 else tuple(data.shape)
        raise CTBenchError(f"{source}: expected a single-channel 3-D image, got shape {shape}; "
                           f"export the scan as one 3-D volume")
    if min(data.shape) == 0:
        raise CTBenchError(f"{source}: image has an empty axis (shape {tuple(data.shape[1:])}); "
                           f"the file is incomplete, re-export it")
    data = data.to(torch.float32)
    bad = int((~torch.isfinite(data)).sum())
    if bad:
        raise CTBenchError(f"{source}: {bad} of {data.numel()} voxels are NaN or Inf; fix or "
                           f"re-export the image (HU must be finite)")
    affine = torch.as_tensor(affine, dtype=torch.float64)
    ok = affine.shape == (4, 4) and bool(torch.isfinite(affine).all())
    if not ok or abs(float(torch.det(affine[:3, :3]))) < 1e-12:
        raise CTBenchError(f"{source}: the voxel-to-world matrix is missing or degenerate; "
                           f"re-export the image with valid spacing and orientation")
    meta.pop("affine", None)
    return MetaTensor(data.contiguous(), affine=affine, meta=meta)


def _meta(path: Path, fmt: str, spacing: tuple[float, ...]) -> dict:
    """Metadata every reader records: source, format and per-axis spacing in mm."""
    return {"filename_or_obj": str(path), "format": fmt,
            "spacing": tuple(float(s) for s in spacing[:3])}


def _make(arr: np.ndarray, affine: np.ndarray, meta: dict) -> MetaTensor:
    """Wrap a file-order array and its RAS affine as a channel-first MetaTensor (unvalidated)."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
    return MetaTensor(t, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _corrupt(path: Path, err: Exception) -> CTBenchError:
    """The one message for any file the library could not decode."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")]  # a C++ path
    first = _ITK_NOISE.sub("", lines[0])[:200] if lines else type(err).__name__
    return CTBenchError(f"{path}: the file looks corrupt or truncated ({first}); re-download or "
                        f"re-export it")


def _read_nifti(path: Path) -> MetaTensor:
    """NIfTI via nibabel: nibabel's chosen affine (sform/qform) and scl_slope/inter applied."""
    try:
        img = nib.load(str(path))
        arr = img.get_fdata(dtype=np.float32)
    except _CORRUPT as err:
        raise _corrupt(path, err) from None
    affine = np.asarray(img.affine, dtype=np.float64)
    spacing = tuple(np.linalg.norm(affine[:3, :3], axis=0))
    return _make(arr, affine, _meta(path, "nifti", spacing))


def _itk_affine(img: sitk.Image) -> np.ndarray:
    """RAS affine from ITK geometry: diag(-1,-1,1) @ (origin + direction @ diag(spacing) @ index).

    Images with fewer than 3 dimensions are padded with identity so validation can report them;
    images with more keep their first three axes (a singleton 4th axis is squeezed later).
    """
    dim = img.GetDimension()
    d = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    n = min(dim, 3)
    lps = np.eye(4)
    lps[:n, :n] = d[:n, :n] * np.asarray(img.GetSpacing(), dtype=np.float64)[:n]
    lps[:n, 3] = np.asarray(img.GetOrigin(), dtype=np.float64)[:n]
    return _LPS_TO_RAS @ lps


def _itk_array(img: sitk.Image) -> np.ndarray:
    """Voxel array in ITK index order (i, j, k, ...); GetArrayFromImage gives (..., k, j, i)."""
    arr = sitk.GetArrayFromImage(img)
    return arr.transpose(tuple(range(arr.ndim))[::-1])


def _read_itk(path: Path, fmt: str) -> MetaTensor:
    """NRRD, MetaImage or a single DICOM file via SimpleITK (GDCM applies Rescale Slope/Intercept)."""
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise _corrupt(path, err) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CTBenchError(f"{path}: has {img.GetNumberOfComponentsPerPixel()} components per "
                           f"voxel (colour or vector image); a CT volume has one, export the "
                           f"grey-level scan instead")
    affine = _itk_affine(img)
    meta = _meta(path, fmt, img.GetSpacing())
    if fmt == "dicom" and img.HasMetaDataKey("0020|000e"):
        meta["series_uid"] = img.GetMetaData("0020|000e").strip()
    return _make(_itk_array(img), affine, meta)


def _read_dicom_dir(folder: Path) -> MetaTensor:
    """The DICOM series in ``folder`` with the most slices, ordered along the slice normal."""
    try:
        with _quiet_itk():  # ITK prints "No Series were found"; we raise a clear error instead
            uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as err:
        raise _corrupt(folder, err) from None
    if not uids:
        raise CTBenchError(f"{folder}: no DICOM series found in this folder (subfolders are not "
                           f"searched); point to the folder that holds the .dcm slices")
    files = {u: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), u)) for u in uids}
    uid = max(sorted(files), key=lambda u: len(files[u]))  # most slices; ties -> smallest UID
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[uid])
    reader.MetaDataDictionaryArrayUpdateOn()  # per-slice tags, for the slice-grid check
    try:
        with _quiet_itk():  # ITK's "non uniform sampling" warning is replaced by our check
            img = reader.Execute()
    except RuntimeError as err:
        raise _corrupt(folder, err) from None
    _check_slice_grid(reader, img, folder)
    affine = _itk_affine(img)
    meta = _meta(folder, "dicom", img.GetSpacing())
    meta["series_uid"] = uid
    if len(files) > 1:
        others = ", ".join(f"{u} ({len(files[u])} slices)" for u in sorted(files) if u != uid)
        meta["note"] = (f"{folder} holds {len(files)} DICOM series; chose {uid} because it has "
                        f"the most slices ({len(files[uid])}); ignored: {others}")
        log.warning(meta["note"])
    return _make(_itk_array(img), affine, meta)


def _check_slice_grid(reader: sitk.ImageSeriesReader, img: sitk.Image, folder: Path) -> None:
    """Refuse series whose slices are not on the regular grid the affine describes.

    ITK builds one origin + uniform slice step from the sorted slices; missing slices, variable
    spacing or gantry tilt would silently misplace voxels, so compare every slice's
    ImagePositionPatient with where the affine puts it.
    """
    worst = 0.0
    for k in range(img.GetSize()[2]):
        if not reader.HasMetaDataKey(k, "0020|0032"):
            continue
        ipp = np.array([float(v) for v in reader.GetMetaData(k, "0020|0032").split("\\")])
        worst = max(worst, float(np.linalg.norm(ipp - img.TransformIndexToPhysicalPoint((0, 0, k)))))
    if worst > max(0.01, 0.05 * img.GetSpacing()[2]):
        raise CTBenchError(f"{folder}: slice positions are off a regular grid by up to {worst:.2f} "
                           f"mm (missing slices, variable slice spacing or gantry tilt); re-export "
                           f"the complete series, or resample it to a regular grid (e.g. NIfTI)")


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's console warnings for a call whose outcome we report ourselves."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _has_dicom_magic(path: Path) -> bool:
    """True for a DICOM Part 10 file ('DICM' after the 128-byte preamble), whatever its name."""
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False
