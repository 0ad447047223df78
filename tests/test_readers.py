"""Readers: values, spacing and RAS world positions checked against an independent reading.

Every geometry check compares ``vol.affine @ (i, j, k, 1)`` with what another library (or a hand
computation from the DICOM tags) says the same voxel's world position is.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from ctbench.errors import CTBenchError
from ctbench.readers import MIN_SLICES, _read_itk, plausibility_warnings, read_volume, validate_volume

RNG = np.random.default_rng(1234)


def world(vol: MetaTensor, ijk) -> np.ndarray:
    """World RAS mm of voxel ``ijk`` according to the volume's affine."""
    return (vol.affine.numpy() @ np.array([*ijk, 1.0]))[:3]


def sitk_ras(img: sitk.Image, ijk) -> np.ndarray:
    """World RAS mm of ITK index ``ijk`` (ITK gives LPS: flip x and y)."""
    p = img.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk))
    return np.array([-p[0], -p[1], p[2]])


def lps_to_ras(p) -> np.ndarray:
    return np.array([-p[0], -p[1], p[2]], dtype=np.float64)


def rotation(axis, degrees) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def some_voxels(shape, n=12):
    """Corners plus random interior voxels of ``shape``."""
    corners = [tuple(c) for c in np.array(np.meshgrid(*[[0, s - 1] for s in shape])).reshape(3, -1).T]
    rand = [tuple(RNG.integers(0, s) for s in shape) for _ in range(n)]
    return corners + rand


def assert_user_error(excinfo, *needles: str) -> None:
    """A CTBenchError whose one message names the file, with no chained library traceback."""
    msg = str(excinfo.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    err = excinfo.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


# ---------------------------------------------------------------- NIfTI (nibabel-written)

PSL = np.array([[0.0, 0.0, -2.5, 30.0],  # k -> Left (x decreases)
                [-0.7, 0.0, 0.0, 40.0],  # i -> Posterior
                [0.0, 1.3, 0.0, -50.0],  # j -> Superior
                [0.0, 0.0, 0.0, 1.0]])
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation([1, 2, 3], 25) @ np.diag([0.6, 0.9, 2.0])
OBLIQUE[:3, 3] = [-12.5, 80.0, 7.25]


@pytest.mark.parametrize("affine,codes", [(PSL, ("P", "S", "L")), (OBLIQUE, None)], ids=["PSL", "oblique"])
def test_nifti_matches_simpleitk(tmp_path: Path, affine: np.ndarray, codes) -> None:
    """nibabel-written non-RAS NIfTI with scl_slope/inter: values, spacing, world vs SimpleITK."""
    shape = (6, 7, 8)
    stored = RNG.integers(0, 4000, shape).astype(np.int16)
    img = nib.Nifti1Image(stored, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(0.5, -1024.0)
    path = tmp_path / "scan.nii.gz"
    img.to_filename(path)
    if codes:
        assert nib.aff2axcodes(affine) == codes  # the test really is non-RAS

    vol = read_volume(path)
    ref = sitk.ReadImage(str(path))
    assert isinstance(vol, MetaTensor)
    assert vol.shape == (1, *shape) and vol.dtype == torch.float32
    assert vol.affine.dtype == torch.float64
    assert vol.meta["format"] == "nifti" and vol.meta["filename_or_obj"] == str(path)
    assert ref.GetSize() == shape  # ITK index (i, j, k) == nibabel index (i, j, k)
    np.testing.assert_allclose(vol.meta["spacing"], ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(vol.meta["spacing"], np.linalg.norm(affine[:3, :3], axis=0), atol=1e-5)
    for ijk in some_voxels(shape):
        hu = float(vol[0][ijk])
        assert hu == pytest.approx(stored[ijk] * 0.5 - 1024.0)  # slope/inter by hand
        assert hu == pytest.approx(ref.GetPixel(*map(int, ijk)))
        np.testing.assert_allclose(world(vol, ijk), sitk_ras(ref, ijk), atol=1e-3)


def test_nifti_singleton_fourth_dim_is_squeezed(tmp_path: Path) -> None:
    path = tmp_path / "t1.nii"
    nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), PSL).to_filename(path)
    vol = read_volume(path)
    assert vol.shape == (1, 4, 5, 6)
    np.testing.assert_allclose(vol.affine.numpy(), PSL, atol=1e-6)


# ---------------------------------------------------------------- SimpleITK-written formats

@pytest.mark.parametrize("ext", [".nrrd", ".nhdr", ".mha", ".mhd", ".nii.gz"])
def test_itk_written_formats_match(tmp_path: Path, ext: str) -> None:
    """Oblique, flipped, anisotropic image written by SimpleITK: world and values match ITK's own."""
    arr_kji = RNG.integers(-1024, 3000, (5, 6, 7)).astype(np.int16)  # numpy order (k, j, i)
    src = sitk.GetImageFromArray(arr_kji)
    direction = rotation([0.3, -1.0, 0.5], 35) @ np.diag([1.0, -1.0, 1.0])
    src.SetDirection(direction.ravel().tolist())
    src.SetOrigin((10.5, -20.25, 33.0))
    src.SetSpacing((0.8, 1.1, 3.0))
    path = tmp_path / f"scan{ext}"
    sitk.WriteImage(src, str(path))

    vol = read_volume(path)
    ref = sitk.ReadImage(str(path))
    assert vol.shape == (1, 7, 6, 5)  # (i, j, k), not numpy's (k, j, i)
    assert vol.meta["format"] == {".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd"}.get(ext, "mha")
    np.testing.assert_allclose(vol.meta["spacing"], (0.8, 1.1, 3.0), atol=1e-5)
    nib_affine = nib.load(path).affine if ext == ".nii.gz" else None
    for ijk in some_voxels((7, 6, 5)):
        i, j, k = map(int, ijk)
        assert float(vol[0, i, j, k]) == ref.GetPixel(i, j, k) == src.GetPixel(i, j, k)
        assert float(vol[0, i, j, k]) == arr_kji[k, j, i]
        tol = 1e-3 if ext == ".nii.gz" else 1e-6  # NIfTI stores the geometry as float32
        np.testing.assert_allclose(world(vol, ijk), sitk_ras(ref, ijk), atol=tol)
        np.testing.assert_allclose(world(vol, ijk), sitk_ras(src, ijk), atol=tol)
        if nib_affine is not None:
            np.testing.assert_allclose(world(vol, ijk), (nib_affine @ [i, j, k, 1])[:3], atol=1e-4)


# ---------------------------------------------------------------- DICOM

CT_SMALL = get_testdata_file("CT_small.dcm")
PIXELS = [(0, 0), (0, 127), (127, 0), (127, 127), (10, 70), (64, 3), (100, 33)]  # (row, col)


def dicom_world(ds, row: int, col: int) -> np.ndarray:
    """RAS mm of pixel (row, col) by hand: columns move along the row cosine by PixelSpacing[1]."""
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return lps_to_ras(ipp + col * dc * iop[:3] + row * dr * iop[3:])


def test_single_dicom_slice_matches_pydicom(tmp_path: Path) -> None:
    """The single-file DICOM reader's values and geometry (read_volume itself refuses one slice
    as a volume: see test_a_single_dicom_slice_is_refused)."""
    assert CT_SMALL is not None, "pydicom no longer ships CT_small.dcm"
    ds = pydicom.dcmread(CT_SMALL)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) != 0  # rescale matters for this file
    no_ext = tmp_path / "slice"  # same file without an extension: recognised by the DICM magic
    shutil.copy(CT_SMALL, no_ext)
    for path in (CT_SMALL, no_ext):
        vol = validate_volume(_read_itk(Path(path), "dicom"), str(path))
        assert vol.shape == (1, ds.Columns, ds.Rows, 1)
        assert vol.meta["format"] == "dicom"
        assert vol.meta["series_uid"] == ds.SeriesInstanceUID
        ps = [float(v) for v in ds.PixelSpacing]
        np.testing.assert_allclose(vol.meta["spacing"][:2], (ps[1], ps[0]), atol=1e-6)
        for r, c in PIXELS:
            assert float(vol[0, c, r, 0]) == pytest.approx(hu[r, c])
            np.testing.assert_allclose(world(vol, (c, r, 0)), dicom_world(ds, r, c), atol=1e-4)


def test_a_single_dicom_slice_is_refused(tmp_path: Path) -> None:
    """One file of a series (with or without its extension) is a slice, not a volume: the
    message names the file and says to point the image column at the series folder."""
    no_ext = tmp_path / "slice"
    shutil.copy(CT_SMALL, no_ext)
    for path in (Path(CT_SMALL), no_ext):
        with pytest.raises(CTBenchError) as ei:
            read_volume(path)
        assert_user_error(ei, str(path), "single DICOM file", "(128, 128, 1)", "series folder",
                          str(path.parent))


@pytest.mark.parametrize("shape", [(12, 12, 1), (12, 1, 12), (3, 12, 12), (1, 128, 128, 1)])
def test_images_thinner_than_a_volume_are_refused(tmp_path: Path, shape) -> None:
    path = tmp_path / "thin.nii.gz"
    nib.Nifti1Image(np.zeros(shape, np.float32), np.diag([0.8, 0.8, 2.5, 1.0])).to_filename(path)
    with pytest.raises(CTBenchError) as ei:
        read_volume(path)
    assert_user_error(ei, "thin.nii.gz", f"at least {MIN_SLICES} voxels", "3-D volume")


def test_thin_volumes_from_other_formats_are_refused(tmp_path: Path) -> None:
    mha = tmp_path / "thin.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 9, 9), np.float32)), str(mha))  # (k, j, i)
    with pytest.raises(CTBenchError) as ei:
        read_volume(mha)
    assert_user_error(ei, "thin.mha", "(9, 9, 2)", "single slice")


def test_a_volume_of_the_minimum_size_is_read(tmp_path: Path) -> None:
    path = tmp_path / "small.nii.gz"
    nib.Nifti1Image(np.zeros((MIN_SLICES,) * 3, np.float32), np.eye(4)).to_filename(path)
    assert read_volume(path).shape == (1, *(MIN_SLICES,) * 3)


def write_series(folder: Path, n: int, *, prefix: str, oblique: bool, order: list[int],
                 tilt_mm: float = 0.0) -> list:
    """Write an n-slice series derived from CT_small.dcm; returns the datasets by slice index s.

    Slice s holds stored pixels ``base + 100 * s``; its position moves by -2.5 mm * s along the
    slice normal while InstanceNumber grows (as on many scanners). Files are written in ``order``
    under names that do not sort by position. ``tilt_mm`` shifts each slice in-plane along the
    column cosine (a gantry-tilted acquisition).
    """
    base = pydicom.dcmread(CT_SMALL)
    pix = base.pixel_array[:100, :].astype(np.int16)  # 100 rows x 128 columns: non-square
    series_uid = generate_uid(entropy_srcs=[prefix, "series"])
    if oblique:
        row = np.array([np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0])
        col = np.array([0.0, 0.0, -1.0])
    else:
        row, col = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    normal = np.cross(row, col)
    out = []
    for s in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[prefix, str(s)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = s + 1
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ipp = np.array([-20.0, 15.0, 40.0]) - 2.5 * s * normal + tilt_mm * s * col
        ds.ImagePositionPatient = [float(v) for v in ipp]
        ds.PixelSpacing = [0.5, 0.8]  # [between rows, between columns]
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        if "SliceLocation" in ds:
            del ds.SliceLocation
        ds.Rows, ds.Columns = pix.shape
        ds.PixelData = (pix + 100 * s).astype(np.int16).tobytes()
        out.append(ds)
    for name_no, s in enumerate(order):
        out[s].save_as(folder / f"{prefix}_{name_no:02d}.dcm", enforce_file_format=True)
    return out


def test_a_dicom_series_of_too_few_slices_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "scout"
    folder.mkdir()
    write_series(folder, 2, prefix="s", oblique=False, order=[1, 0])
    with pytest.raises(CTBenchError) as ei:
        read_volume(folder)
    assert_user_error(ei, "scout", "only 2 slice(s)", "whole series")


def test_dicom_folder_picks_largest_series_and_orders_by_normal(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    big = write_series(folder, 6, prefix="b", oblique=True, order=[3, 0, 5, 1, 4, 2])
    small = write_series(folder, 2, prefix="a", oblique=False, order=[1, 0])
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("ctbench")
    logger.addHandler(handler)
    try:
        vol = read_volume(folder)
    finally:
        logger.removeHandler(handler)

    uid = big[0].SeriesInstanceUID
    assert vol.meta["series_uid"] == uid and vol.meta["format"] == "dicom"
    note = vol.meta["note"]
    assert uid in note and small[0].SeriesInstanceUID in note and "most slices" in note
    assert any(r.levelno == logging.WARNING and r.getMessage() == note for r in records)
    assert vol.shape == (1, 128, 100, 6)  # (columns, rows, slices)
    np.testing.assert_allclose(vol.meta["spacing"], (0.8, 0.5, 2.5), atol=1e-4)

    pix = big[0].pixel_array.astype(np.float64)  # slice 0's stored values
    iop = np.array(big[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    seen, along = [], []
    for k in range(6):
        s = round(((float(vol[0, 0, 0, k]) + 1024) / 2 - pix[0, 0]) / 100)  # which slice landed at k
        seen.append(s)
        along.append(float(np.array(big[s].ImagePositionPatient, float) @ normal))
        for r, c in [(0, 0), (99, 127), (50, 10), (7, 90)]:
            assert float(vol[0, c, r, k]) == pytest.approx((pix[r, c] + 100 * s) * 2 - 1024)
            np.testing.assert_allclose(world(vol, (c, r, k)), dicom_world(big[s], r, c), atol=1e-3)
    assert sorted(seen) == list(range(6))
    assert np.all(np.diff(along) > 0)  # strictly ordered along the slice normal


@pytest.mark.parametrize("problem", ["missing slice", "gantry tilt"])
def test_dicom_irregular_slice_grid_is_refused(tmp_path: Path, problem: str) -> None:
    """ITK would average the slice step (only printing a warning); we refuse instead."""
    folder = tmp_path / "irregular"
    folder.mkdir()
    tilt = 0.8 if problem == "gantry tilt" else 0.0
    write_series(folder, 5, prefix="s", oblique=False, order=[0, 1, 2, 3, 4], tilt_mm=tilt)
    if problem == "missing slice":
        (folder / "s_02.dcm").unlink()
    with pytest.raises(CTBenchError) as ei:
        read_volume(folder)
    assert_user_error(ei, "irregular", "regular grid", problem.split()[-1])


# ---------------------------------------------------------------- user errors

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CTBenchError) as ei:
        read_volume(tmp_path / "nope.nii.gz")
    assert_user_error(ei, "nope.nii.gz", "not found")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(CTBenchError) as ei:
        read_volume(path)
    assert_user_error(ei, "scan.png", "unsupported", ".nii.gz", ".nrrd", ".mha", ".dcm")


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii", "cut.nrrd", "cut.mha"])
def test_truncated_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    data = RNG.normal(size=(32, 32, 32)).astype(np.float32)
    if name.startswith("cut.nii"):
        nib.Nifti1Image(data, np.eye(4)).to_filename(path)
    else:
        sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CTBenchError) as ei:
        read_volume(path)
    assert_user_error(ei, name, "corrupt or truncated", "re-")


def test_two_dimensional_images(tmp_path: Path) -> None:
    nii, mha = tmp_path / "flat.nii.gz", tmp_path / "flat.mha"
    nib.Nifti1Image(np.zeros((10, 12), np.float32), np.eye(4)).to_filename(nii)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.float32)), str(mha))
    for path in (nii, mha):
        with pytest.raises(CTBenchError) as ei:
            read_volume(path)
        assert_user_error(ei, path.name, "3-D")


def test_four_dimensional_image(tmp_path: Path) -> None:
    path = tmp_path / "dyn.nii.gz"
    nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)).to_filename(path)
    with pytest.raises(CTBenchError) as ei:
        read_volume(path)
    assert_user_error(ei, "dyn.nii.gz", "3-D", "(4, 5, 6, 2)")


def test_nan_voxels(tmp_path: Path) -> None:
    path = tmp_path / "holes.nii.gz"
    data = np.zeros((5, 5, 5), np.float32)
    data[0, 0, 0] = data[1, 2, 3] = np.nan
    data[4, 4, 4] = np.inf
    nib.Nifti1Image(data, np.eye(4)).to_filename(path)
    with pytest.raises(CTBenchError) as ei:
        read_volume(path)
    assert_user_error(ei, "holes.nii.gz", "3 of 125", "NaN")


def test_folder_without_dicom(tmp_path: Path) -> None:
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    other = tmp_path / "notes_dir"
    other.mkdir()
    (other / "readme.txt").write_text("no images here")
    for folder in (empty, other):
        with pytest.raises(CTBenchError) as ei:
            read_volume(folder)
        assert_user_error(ei, folder.name, "no DICOM series")


def test_validate_volume_shapes() -> None:
    aff = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64))
    ok = validate_volume(MetaTensor(torch.zeros(1, 2, 3, 4, 1, dtype=torch.int16), affine=aff), "x.nii")
    assert ok.shape == (1, 2, 3, 4) and ok.dtype == torch.float32
    assert torch.equal(ok.affine, aff)
    for bad, needle in [(torch.zeros(1, 0, 3, 4), "empty axis"), (torch.zeros(2, 2, 3, 4), "3-D"),
                        (torch.zeros(1, 2, 3), "3-D")]:
        with pytest.raises(CTBenchError, match=needle) as ei:
            validate_volume(MetaTensor(bad, affine=aff), "some/file.nrrd")
        assert "some/file.nrrd" in str(ei.value)


# ---------------------------------------------------------------- not a regular file

def _call_with_timeout(fn, fifo: Path | None = None, seconds: float = 15.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) when it does not return in time.
    A reader left blocked on ``fifo`` is released by opening and closing its write end."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still blocked after {seconds}s (reading a FIFO/device never ends)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.mark.parametrize("via_link", [False, True], ids=["fifo", "link-to-fifo"])
def test_a_fifo_is_refused_without_reading_it(tmp_path: Path, via_link: bool) -> None:
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    path = fifo
    if via_link:
        path = tmp_path / "scan.nii.gz"
        path.symlink_to(fifo)
    with pytest.raises(CTBenchError) as ei:
        _call_with_timeout(lambda: read_volume(path), fifo)
    assert_user_error(ei, str(path), "named pipe (FIFO)", "image column")


def test_a_fifo_mask_is_refused_without_reading_it(tmp_path: Path) -> None:
    from ctbench.tasks.dense import read_labels

    fifo = tmp_path / "mask.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(CTBenchError) as ei:
        _call_with_timeout(lambda: read_labels(fifo), fifo)
    assert_user_error(ei, str(fifo), "named pipe (FIFO)")


def test_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CTBenchError) as ei:
        _call_with_timeout(lambda: read_volume("/dev/zero"))
    assert_user_error(ei, "/dev/zero", "a device", "image column")


def test_a_fifo_inside_a_dicom_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    write_series(folder, 3, prefix="s", oblique=False, order=[0, 1, 2])
    os.mkfifo(folder / "extra.dcm")
    with pytest.raises(CTBenchError) as ei:
        _call_with_timeout(lambda: read_volume(folder), folder / "extra.dcm")
    assert_user_error(ei, str(folder / "extra.dcm"), "named pipe", "remove it from the DICOM folder")


# ---------------------------------------------------------------- plausibility (warnings)

def _volume(values: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> MetaTensor:
    return MetaTensor(torch.as_tensor(values, dtype=torch.float32)[None],
                      affine=torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64)))


def test_plausible_ct_has_no_warning() -> None:
    hu = RNG.uniform(-1024, 1500, size=(8, 8, 8))
    assert plausibility_warnings(_volume(hu)) == []


@pytest.mark.parametrize("values, needle", [
    (RNG.uniform(0, 1, size=(8, 8, 8)), "normalised data"),
    (RNG.normal(0, 0.5, size=(8, 8, 8)).clip(-2, 2), "normalised data"),
    (np.full((8, 8, 8), 40.0), "span only 0 HU"),
], ids=["unit-range", "z-scored", "constant"])
def test_intensities_that_are_not_hu_are_flagged(values: np.ndarray, needle: str) -> None:
    (warning,) = plausibility_warnings(_volume(values))
    assert needle in warning and "HU" in warning


@pytest.mark.parametrize("spacing", [(1e6, 1e6, 1e6), (0.7, 0.7, 25.0), (0.01, 0.7, 1.0)])
def test_an_implausible_spacing_is_flagged(spacing) -> None:
    (warning,) = plausibility_warnings(_volume(RNG.uniform(-1024, 1500, size=(8, 8, 8)), spacing))
    assert "voxel spacing" in warning and "(0.05, 20] mm" in warning


def test_a_nifti_in_metres_is_flagged_after_reading(tmp_path: Path) -> None:
    path = tmp_path / "metres.nii.gz"
    nib.Nifti1Image(RNG.uniform(-1000, 1000, size=(6, 6, 6)).astype(np.int16),
                    np.diag([1e6, 1e6, 1e6, 1.0])).to_filename(path)
    (warning,) = plausibility_warnings(read_volume(path))
    assert "1e+06" in warning
