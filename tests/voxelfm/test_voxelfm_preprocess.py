"""Preprocessing: axis order, resampling rules, foreground crop, and exact geometry tracking."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from ctbench.errors import CTBenchError
from voxelfm.preprocess import (
    PreprocessConfig,
    _resize_matrix,
    foreground_box,
    max_tokens_size,
    preprocess,
    token_affine,
)


def meta(array, affine):
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None], affine=torch.as_tensor(affine))


def test_axis_order_is_k_j_i_of_the_file():
    vol = torch.arange(56 * 42 * 28, dtype=torch.float32).reshape(56, 42, 28) - 1000
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    cfg = PreprocessConfig(crop_background=False, max_tokens=None, hu_max=1e9)
    x, a = preprocess(meta(vol, aff), cfg)
    assert x.shape == (28, 42, 56) and x.dtype == torch.float32
    assert torch.allclose(x * 461.3 - 573.8, vol.permute(2, 1, 0), atol=0.05)
    # index (d, h, w) of the input -> canonical (i, j, k) = (w, h, d) -> world
    assert np.allclose(a @ [1, 2, 3, 1], aff @ [3, 2, 1, 1])


def test_intensity_clip_and_normalisation():
    vol = torch.tensor([-3000.0, -1000.0, 0.0, 1900.0, 5000.0]).repeat(14 * 14 * 14 // 5 + 1)[: 14**3]
    x, _ = preprocess(meta(vol.reshape(14, 14, 14), np.eye(4)), PreprocessConfig(crop_background=False))
    hu = x * 461.3 - 573.8
    assert hu.min() >= -1000.01 and hu.max() <= 1900.01
    assert abs(x.min().item() - (-1000 + 573.8) / 461.3) < 1e-5


def test_isotropic_rule():
    cfg = PreprocessConfig(crop_background=False, max_tokens=None)
    # anisotropic: target max(min spacing, 0.75) = 0.75; size round(n * s / t) per axis
    aff = np.diag([0.5, 0.5, 1.0, 1.0])  # spacing (i, j, k) -> (D, H, W) spacing (1.0, 0.5, 0.5)
    x, a = preprocess(meta(torch.zeros(60, 50, 40), aff), cfg)
    size = [round(40 * 1.0 / 0.75), round(50 * 0.5 / 0.75), round(60 * 0.5 / 0.75)]  # 53, 33, 40
    assert tuple(x.shape) == tuple(n - n % 14 for n in size)
    assert np.allclose(np.linalg.norm(a[:3, :3], axis=0), [40 / 53, 50 * 0.5 / 33, 0.75])
    # already isotropic (even below 0.75 mm): the reference does not resample
    x, a = preprocess(meta(torch.zeros(30, 29, 28), np.diag([0.5, 0.5, 0.5, 1.0])), cfg)
    assert tuple(x.shape) == (28, 28, 28) and np.allclose(np.linalg.norm(a[:3, :3], axis=0), 0.5)


def test_resize_affine_matches_monai_resize():
    from monai.transforms import Resize

    aff = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -20], [0, 3.0, 0, 5], [0, 0, 0, 1]])
    x = meta(torch.rand(10, 12, 7), aff)
    y = Resize((25, 9, 7), mode="trilinear", align_corners=False)(x)
    assert np.allclose(aff @ _resize_matrix((10, 12, 7), (25, 9, 7)), y.affine.numpy())


def brute_force_box(hu, threshold, k):
    mask = (hu > threshold).float()[None, None]
    conv = F.conv3d(mask, torch.ones(1, 1, k, k, k), padding="same")[0, 0]
    keep = conv > k**3 * 0.5
    idx = keep.nonzero()
    lo = [max(v - k // 2, 0) for v in idx.min(0).values.tolist()]
    hi = [min(v + k // 2, n - 1) for v, n in zip(idx.max(0).values.tolist(), hu.shape)]
    return tuple(slice(a, b + 1) for a, b in zip(lo, hi))


@pytest.mark.parametrize("k,shape", [(5, (17, 13, 11)), (21, (34, 30, 26))])
def test_foreground_box_matches_convolution(k, shape):
    g = torch.Generator().manual_seed(k)
    hu = torch.full(shape, -1000.0)
    hu[3:-4, 2:-6, 4:-1] = 30.0
    hu += 900 * (torch.rand(shape, generator=g) > 0.8)  # speckle noise around the body
    assert foreground_box(hu, -800, k) == brute_force_box(hu, -800, k)
    assert foreground_box(torch.full(shape, -1000.0), -800, k) is None


def test_max_tokens_rule():
    assert max_tokens_size((434, 434, 364), 14, 25_000) == (434, 434, 364)  # 24,986 tokens
    size = max_tokens_size((700, 512, 512), 14, 25_000)
    tokens = math.prod(n // 14 for n in size)
    assert 22_000 < tokens <= 25_000
    assert abs(size[0] / size[1] - 700 / 512) < 0.01


def test_too_small_volume():
    with pytest.raises(CTBenchError, match="too small"):
        preprocess(meta(torch.zeros(40, 40, 10), np.eye(4)), PreprocessConfig(crop_background=False))


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(degrees)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K


SHAPE = (84, 76, 46)
SPACING = (0.9, 1.2, 2.5)
SIGNED_PERM = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], float)  # far from RAS
AFFINE = np.eye(4)
AFFINE[:3, :3] = rotation((1, 2, 0.5), 25) @ SIGNED_PERM @ np.diag(SPACING)
AFFINE[:3, 3] = (12.3, -40.5, 77.0)
BLOB_VOXEL = (39.8, 29.4, 24.9)  # (i, j, k), inside the body box below
BLOB = (AFFINE @ [*BLOB_VOXEL, 1])[:3]


def blob_volume():
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    dist2 = ((world - BLOB) ** 2).sum(-1).reshape(SHAPE)
    vol = np.full(SHAPE, -1000.0)
    body = (slice(18, 68), slice(16, 60), slice(12, 40))
    vol[body] = 20.0 + 1200.0 * np.exp(-dist2[body] / (2 * 3.0**2))
    return meta(vol, AFFINE)


@pytest.mark.parametrize("max_tokens", [None, 12])
def test_blob_geometry_through_encode(max_tokens):
    from ctbench.adapters.voxelfm import VoxelFMEncoder

    enc = VoxelFMEncoder(weights="random", variant="tiny", max_tokens=max_tokens)
    vol = blob_volume()
    pre = enc.preprocess(vol)  # MetaTensor (D, H, W) with the tracked affine
    x, aff = pre.as_tensor(), pre.affine.numpy()
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    # isotropic up to the rounding/truncation of output sizes (the resize keeps the volume's extent)
    assert np.allclose(spacing, spacing[0], rtol=0.05)
    if max_tokens is None:  # the foreground crop removed air around the body
        uncropped, _ = preprocess(vol, PreprocessConfig(crop_background=False, max_tokens=None))
        assert all(a < b for a, b in zip(x.shape, uncropped.shape))
    # the input affine maps the blob's preprocessed argmax voxel back onto the blob
    peak = np.unravel_index(int(torch.argmax(x)), tuple(x.shape))
    assert np.linalg.norm((aff @ [*peak, 1])[:3] - BLOB) <= spacing.max()
    # the test is only meaningful if the blob is not on a token boundary
    u = (np.linalg.inv(aff) @ [*BLOB, 1])[:3]
    margin = np.abs((u + 0.5) / 14 - np.round((u + 0.5) / 14)) * 14
    assert margin.min() > 1.5, margin

    feats = enc.encode(vol)
    grid = feats.tokens.shape[1:]
    assert grid == tuple(n // 14 for n in x.shape)
    assert np.allclose(feats.token_affine, token_affine(aff, 14))
    cells = np.stack(np.meshgrid(*[np.arange(n) for n in grid], indexing="ij"), -1).reshape(-1, 3)
    centres = np.c_[cells, np.ones(len(cells))] @ feats.token_affine.T
    nearest = tuple(cells[np.argmin(((centres[:, :3] - BLOB) ** 2).sum(-1))])
    assert nearest == tuple(int(v) // 14 for v in peak)
    # token centres: voxel 14 a + 6.5
    assert np.allclose(feats.token_affine @ [1, 2, 3, 1], aff @ [20.5, 34.5, 48.5, 1])


def _oblique(spacing, degrees=20.0):
    """An affine rotated about z with the given column norms (spacings)."""
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    return aff


def test_isotropy_rule_is_exact_equality_as_in_the_reference():
    """0.6 mm spacings that differ by float noise: the reference (``sD == sH == sW``) resamples
    to 0.75 mm; the tolerant rule keeps the native 0.6 mm."""
    aff = _oblique([0.6, 0.6 * (1 + 1e-12), 0.6])
    from voxelfm.preprocess import is_isotropic

    assert not is_isotropic(aff) and is_isotropic(aff, 1e-6) and is_isotropic(np.diag([0.6, 0.6, 0.6, 1.0]))
    vol = meta(torch.zeros(70, 56, 42), aff)
    x, a = preprocess(vol, PreprocessConfig(crop_background=False, max_tokens=None))
    size = [round(n * 0.6 / 0.75) for n in (42, 56, 70)]  # (D, H, W) = (k, j, i): 34, 45, 56
    assert tuple(x.shape) == tuple(n - n % 14 for n in size)
    assert np.allclose(np.linalg.norm(a[:3, :3], axis=0), [42 * 0.6 / 34, 56 * 0.6 / 45, 0.75])
    x, a = preprocess(vol, PreprocessConfig(crop_background=False, max_tokens=None, isotropy_rtol=1e-6))
    assert tuple(x.shape) == (42, 56, 70) and np.allclose(np.linalg.norm(a[:3, :3], axis=0), 0.6)


def test_dicom_series_get_the_reference_dicom_window(tmp_path):
    """A DICOM series read by ctbench's reader is clipped to [-1000, 1000] under the default
    ``reference`` rule (the reference's DICOM loader), to [-1000, 1900] under ``nifti``; the
    same voxels from a NIfTI file get [-1000, 1900]."""
    import nibabel as nib
    import SimpleITK as sitk

    from ctbench.adapters.voxelfm import VoxelFMEncoder
    from ctbench.readers import read_volume

    hu = np.full((16, 30, 30), -1000, dtype=np.int16)  # (slices, rows, cols)
    hu[4:12, 8:22, 8:22] = 1500  # bone-like: above 1000, below 1900
    series = tmp_path / "series"
    series.mkdir()
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((1.0, 1.0, 1.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(hu.shape[0]):
        sl = img[:, :, z]
        for tag, value in (("0008|0060", "CT"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|0013", str(z + 1)), ("0020|0032", f"0\\0\\{z}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|1052", "0"), ("0028|1053", "1")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"{z:03d}.dcm"))
        writer.Execute(sl)
    nifti = tmp_path / "same.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)).astype(np.float32), np.eye(4)), nifti)
    dcm_vol, nii_vol = read_volume(series), read_volume(nifti)
    assert dcm_vol.meta["format"] == "dicom" and float(dcm_vol.max()) == 1500.0

    def top(enc, vol):  # the largest network input, back in HU
        x, _ = enc.prepare(vol)
        return float(x.max()) * 461.3 - 573.8

    ref = VoxelFMEncoder(weights="random", variant="tiny", crop_background=False)
    wide = VoxelFMEncoder(weights="random", variant="tiny", crop_background=False, hu_window="nifti")
    assert top(ref, dcm_vol) == pytest.approx(1000.0, abs=0.05)
    assert top(ref, nii_vol) == pytest.approx(1500.0, abs=0.05)
    assert top(wide, dcm_vol) == pytest.approx(1500.0, abs=0.05)
    assert ref.settings["hu_window_by_format"] == {"nifti": [-1000.0, 1900.0], "dicom": [-1000.0, 1000.0]}
    assert ref.preprocessing_id != wide.preprocessing_id
    with pytest.raises(CTBenchError, match="hu_window 'wide' is not one of reference, nifti, dicom"):
        VoxelFMEncoder(weights="random", variant="tiny", hu_window="wide")
    with pytest.raises(CTBenchError, match="isotropy 'loose'"):
        VoxelFMEncoder(weights="random", variant="tiny", isotropy="loose")
