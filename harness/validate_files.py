"""File checks of ``ctbench datasets validate``: images, masks and lesion centres.

Images are read with :func:`ctbench.readers.read_volume` (the reader a run uses), or with
``--quick`` from their headers only (NIfTI, NRRD, MetaImage, single DICOM files; a DICOM folder
is then only checked to exist). Masks must lie on their image's voxel grid in world space: same
shape and the same voxel -> world mapping to within a tenth of a voxel. Lesion centres (world
RAS mm) must fall inside their image, which catches LPS/RAS mix-ups. Every case is checked;
failures are collected per case, never stopping at the first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk

from .datasets import Dataset
from .errors import CTBenchError
from .readers import (
    _CORRUPT, _LPS_TO_RAS, DICOM, ITK, NIFTI, SUPPORTED, _corrupt, _has_dicom_magic, plausibility_warnings,
    read_volume, require_regular, require_slices,
)
from .validate import Problem, Report

ALIGN_VOXELS = 0.1  # a mask's grid may differ from its image's by this fraction of a voxel


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape and voxel index -> world RAS mm affine."""

    shape: tuple[int, ...]
    affine: np.ndarray


def header_grid(path: Path, slices: bool = True) -> Grid | None:
    """The grid of an image from its header alone (None for a DICOM folder: its geometry needs
    every file); ``slices`` also refuses images thinner than a volume, as reading would."""
    if not path.exists():
        raise CTBenchError(f"image not found: {path}; check the path and that the file was copied")
    require_regular(path)
    if path.is_dir():
        return None
    name, suffix = path.name.lower(), path.suffix.lower()
    try:
        if name.endswith(NIFTI):
            img = nib.load(str(path))
            shape, affine, fmt = tuple(int(n) for n in img.shape), np.asarray(img.affine, np.float64), "nifti"
        elif suffix in ITK or suffix in DICOM or _has_dicom_magic(path):
            shape, affine = _itk_header(path)
            fmt = "dicom" if ITK.get(suffix) is None else ITK[suffix]
        else:
            raise CTBenchError(f"unsupported image format: {path}; supported are {', '.join(SUPPORTED)}. "
                               f"Convert the image to one of these (e.g. NIfTI).")
    except _CORRUPT as err:
        raise _corrupt(path, err) from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CTBenchError(f"{path}: expected a single-channel 3-D image, got shape {shape}; "
                           f"export the scan as one 3-D volume")
    if slices:
        require_slices(shape, path, fmt)
    return Grid(shape, affine)


def _itk_header(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Size and RAS affine from an ITK-readable header (ITK's LPS flipped to RAS, as the reader)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dim = reader.GetDimension()
    n = min(dim, 3)
    d = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)
    lps = np.eye(4)
    lps[:n, :n] = d[:n, :n] * np.asarray(reader.GetSpacing(), dtype=np.float64)[:n]
    lps[:n, 3] = np.asarray(reader.GetOrigin(), dtype=np.float64)[:n]
    return tuple(int(s) for s in reader.GetSize()), _LPS_TO_RAS @ lps


def read_grid(path: Path, quick: bool) -> tuple[Grid | None, list[str]]:
    """An image's grid and its plausibility warnings: the whole image read as a run reads it,
    or (``quick``) its header only, with no warnings."""
    if quick:
        return header_grid(path), []
    vol = read_volume(path)
    return Grid(tuple(int(n) for n in vol.shape[1:]), np.asarray(vol.affine, np.float64)), plausibility_warnings(vol)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip()


def _safely(fn: Callable[[], object], path: Path) -> object:
    """``fn()``, or the CTBenchError saying why ``path`` could not be read (any library error:
    one bad file must not stop the checks of the others)."""
    try:
        return fn()
    except CTBenchError as e:
        return e
    except Exception as e:  # noqa: BLE001 - reported per case, with the file named
        return CTBenchError(f"{path}: could not be read ({type(e).__name__}: {e}); re-export it")


def check_images(dataset: Dataset, report: Report, quick: bool,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Grid]:
    """Read every image (each distinct file once); returns the grid of each case that read."""
    m = dataset.manifest
    cache: dict[str, object] = {}
    grids: dict[str, Grid] = {}
    problems: list[Problem] = []
    for i, (case, value) in enumerate(zip(m["case_id"], m["image"])):
        if _blank(value):
            problems.append(Problem("images", f"case {case!r}: the image cell is empty; give the path of the "
                                              f"scan (a file, or a DICOM series folder)", case))
        else:
            path = dataset.resolve(value)
            if str(path) not in cache:
                cache[str(path)] = _safely(lambda: read_grid(path, quick), path)
            got = cache[str(path)]
            if isinstance(got, CTBenchError):
                problems.append(Problem("images", f"case {case!r}: {got}", case))
            else:
                grid, warnings = got  # type: ignore[misc]
                if grid is not None:
                    grids[case] = grid
                report.warnings.extend(Problem("images", f"case {case!r}: {path}: {w}", case) for w in warnings)
        if progress:
            progress(i + 1, len(m))
    how = "headers read (--quick)" if quick else "read"
    report.add("images", f"{len(m) - len(problems)} of {len(m)} {how}", problems)
    return grids


def mask_columns(dataset: Dataset) -> list[str]:
    """Manifest columns of label-map paths: the target of every segmentation task."""
    cols = [s.targets[0] for s in dataset.card.tasks if s.category == "segmentation" and len(s.targets) == 1]
    return [c for c in dict.fromkeys(cols) if c in dataset.manifest.columns]


def misalignment(image: Grid, mask: Grid, image_path: Path) -> str | None:
    """How ``mask`` is off ``image``'s voxel grid in world space (None when it is on it)."""
    if tuple(image.shape) != tuple(mask.shape):
        return f"has shape {tuple(mask.shape)} but its image {image_path} has shape {tuple(image.shape)}"
    corners = np.array([[*c, 1.0] for c in itertools.product(*[(0, n - 1) for n in image.shape])]).T
    apart = float(np.linalg.norm((image.affine @ corners - mask.affine @ corners)[:3], axis=0).max())
    tolerance = ALIGN_VOXELS * float(np.linalg.norm(image.affine[:3, :3], axis=0).min())
    if apart > tolerance:
        return (f"lies in another world frame than its image {image_path} (the grids' corner voxels are up to "
                f"{apart:.3g} mm apart; tolerance {tolerance:.2g} mm)")
    return None


def _mask_grid(path: Path, quick: bool) -> Grid:
    """A mask's grid: header only (``quick``) or read and checked as training reads it."""
    from ctbench.tasks.dense import label_geometry, read_labels  # the segmentation category's reader

    if quick:
        shape, affine = label_geometry(path)
    else:
        labels, affine = read_labels(path)
        shape = labels.shape
    return Grid(tuple(int(n) for n in shape), np.asarray(affine, np.float64))


def check_masks(dataset: Dataset, report: Report, quick: bool, grids: dict[str, Grid]) -> None:
    """Every mask readable (integer labels >= 0) and on its image's grid; one row per column."""
    m = dataset.manifest
    for col in mask_columns(dataset):
        name, problems, given, compared, aligned = f"masks ({col})", [], 0, 0, 0
        for case, image, value in zip(m["case_id"], m["image"], m[col]):
            if _blank(value):
                continue  # no target: the case is left out of the task
            given += 1
            path = dataset.resolve(value)
            if not path.exists():
                problems.append(Problem(name, f"case {case!r}: mask not found: {path}; fix the manifest's {col} "
                                              f"column", case))
                continue
            got = _safely(lambda: _mask_grid(path, quick), path)
            if isinstance(got, CTBenchError):
                problems.append(Problem(name, f"case {case!r}: {got}", case))
                continue
            if case not in grids:
                continue  # the image did not read (reported) or is a DICOM folder under --quick
            compared += 1
            why = misalignment(grids[case], got, dataset.resolve(image))  # type: ignore[arg-type]
            aligned += why is None
            if why:
                problems.append(Problem(name, (
                    f"case {case!r}: mask {path} {why}; a label map must be on its image's voxel grid (same "
                    f"shape and voxel-to-world affine): resample it with the image as reference, or fix the "
                    f"{col} column"), case))
        report.add(name, f"{aligned} of {given} on their image's grid"
                         + (f" ({given - compared} not compared)" if given > compared else ""), problems)


def check_centres(dataset: Dataset, report: Report, grids: dict[str, Grid], tasks: dict[str, object]) -> None:
    """Lesion centres of every localisation task inside their images (half a voxel of margin)."""
    m = dataset.manifest
    for spec in dataset.card.tasks:
        if spec.category != "localisation" or spec.name not in tasks:
            continue
        name, problems, checked = f"centres ({spec.name})", [], 0
        xyz = m[list(spec.targets)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        for case, centre in zip(m["case_id"], xyz):
            if np.isnan(centre).any() or case not in grids:
                continue
            checked += 1
            grid = grids[case]
            index = (np.linalg.inv(grid.affine) @ np.append(centre, 1.0))[:3]
            if np.any(index < -1.0) or np.any(index > np.asarray(grid.shape, float)):
                shown = ", ".join(f"{v:.4g}" for v in centre)
                problems.append(Problem(name, (
                    f"case {case!r}: centre ({shown}) mm of columns {', '.join(spec.targets)} lies outside its "
                    f"image (voxel index {', '.join(f'{v:.1f}' for v in index)}, shape {tuple(grid.shape)}); "
                    f"centres are world RAS mm: coordinates in ITK's LPS space (e.g. LUNA16 coordX/coordY) "
                    f"need x and y negated"), case))
        report.add(name, f"{checked - len(problems)} of {checked} inside their images", problems)
