"""``ctbench datasets validate DIR``: each problem a prepared folder can have is found, named
(case, file, column) and reported with the others; a clean folder exits 0."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from ctbench.datasets import CARD_FILE, MANIFEST_FILE
from tests.cli_helpers import run_cli

SHAPE = (12, 12, 12)
AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])
AFFINE[:3, 3] = (-11.0, -11.0, -13.75)  # voxel centres around the world origin
CARD = {
    "name": "tiny", "version": "1", "licence": "CC0-1.0",
    "tasks": [
        {"name": "finding", "category": "classification", "targets": ["finding"], "main_metric": "auroc"},
        {"name": "organs", "category": "segmentation", "targets": ["mask"], "label_names": {"1": "organ"},
         "main_metric": "dice_macro"},
        {"name": "lesion", "category": "localisation", "targets": ["x", "y", "z"],
         "main_metric": "centre_error_mm"},
    ],
}
SPLITS = ["train", "train", "val", "val", "test", "test"]


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(data, affine).to_filename(path)


def make_dataset(root: Path) -> Path:
    """Six cases (one per patient), each with an image, a mask on its grid and a lesion centre."""
    folder = root / "tiny"
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(SPLITS):
        case = f"c{i}"
        write_nifti(folder / "images" / f"{case}.nii.gz", rng.uniform(-1000, 1000, SHAPE).astype(np.int16))
        write_nifti(folder / "masks" / f"{case}.nii.gz", rng.integers(0, 2, SHAPE).astype(np.uint8))
        rows.append({"case_id": case, "patient_id": f"p{i}", "image": f"images/{case}.nii.gz",
                     "mask": f"masks/{case}.nii.gz", "split": split, "finding": i % 2,
                     "x": 1.0 * i, "y": -2.0, "z": 3.0})
    pd.DataFrame(rows).to_csv(folder / MANIFEST_FILE, index=False)
    (folder / CARD_FILE).write_text(json.dumps(CARD))
    return folder


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_dataset(tmp_path)


def edit_manifest(folder: Path, fn) -> None:
    m = pd.read_csv(folder / MANIFEST_FILE, dtype={"case_id": str, "patient_id": str})
    fn(m)
    m.to_csv(folder / MANIFEST_FILE, index=False)


def validate(monkeypatch, capsys, folder: Path, *flags: str) -> tuple[int, dict]:
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "validate", str(folder), "--json", *flags)
    return code, json.loads(out)


def failing(report: dict) -> dict[str, list[str]]:
    """Failed check name -> messages of its problems."""
    names = {c["name"] for c in report["checks"] if not c["ok"]}
    return {n: [p["message"] for p in report["problems"] if p["check"] == n] for n in names}


def test_a_clean_folder_validates(monkeypatch, capsys, tiny: Path) -> None:
    code, report = validate(monkeypatch, capsys, tiny)
    assert code == 0 and report["ok"] and report["problems"] == []
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"card", "manifest", "splits", "task finding", "task organs", "task lesion",
                           "images", "masks (mask)", "centres (lesion)"}
    assert checks["images"]["detail"] == "6 of 6 read"
    assert checks["masks (mask)"]["detail"] == "6 of 6 on their image's grid"
    assert "train 2 case(s) / 2 patient(s)" in checks["splits"]["detail"]


def test_the_phantom_validates_with_a_table(monkeypatch, capsys, small_phantom: Path) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "validate", str(small_phantom))
    assert code == 0, out
    for row in ("card", "manifest", "splits", "task segmentation", "images", "masks (mask)"):
        assert row in out
    assert "FAIL" not in out and "valid" in out


def test_a_missing_target_column(monkeypatch, capsys, tiny: Path) -> None:
    edit_manifest(tiny, lambda m: m.drop(columns=["finding"], inplace=True))
    code, report = validate(monkeypatch, capsys, tiny)
    assert code == 1
    (msg,) = failing(report)["task finding"]
    assert "finding" in msg and MANIFEST_FILE in msg and "add them" in msg
    assert set(failing(report)) == {"task finding"}  # the other tasks and files were still checked


def test_a_bad_target_value(monkeypatch, capsys, tiny: Path) -> None:
    edit_manifest(tiny, lambda m: m.__setitem__("finding", [0, 1, 2, 0, 1, 0]))
    code, report = validate(monkeypatch, capsys, tiny)
    assert code == 1
    (msg,) = failing(report)["task finding"]
    assert "'c2'" in msg and "0 or 1" in msg and "holds 2" in msg


def test_unreadable_images_are_all_listed(monkeypatch, capsys, tiny: Path) -> None:
    (tiny / "images" / "c1.nii.gz").unlink()
    (tiny / "images" / "c4.nii.gz").unlink()
    os.mkfifo(tiny / "images" / "c4.nii.gz")
    code, report = validate(monkeypatch, capsys, tiny)
    assert code == 1
    msgs = failing(report)["images"]
    assert len(msgs) == 2
    assert "c1" in msgs[0] and "image not found" in msgs[0]
    assert "c4" in msgs[1] and "named pipe" in msgs[1]
    assert next(c for c in report["checks"] if c["name"] == "images")["detail"] == "4 of 6 read"
    # --quick finds them from the headers too, without reading any image
    code, quick = validate(monkeypatch, capsys, tiny, "--quick")
    assert code == 1 and len(failing(quick)["images"]) == 2 and quick["quick"]


def test_a_patient_in_two_splits(monkeypatch, capsys, tiny: Path) -> None:
    edit_manifest(tiny, lambda m: m.__setitem__("patient_id", ["p0", "p1", "p2", "p0", "p4", "p1"]))
    code, report = validate(monkeypatch, capsys, tiny)
    assert code == 1
    fails = failing(report)
    assert "patient_id 'p0'" in fails["manifest"][0]
    assert len(fails["splits"]) == 2  # every leaking patient, not only the first
    assert "'p0'" in fails["splits"][0] and "c0 (train), c3 (val)" in fails["splits"][0]
    assert "'p1'" in fails["splits"][1] and "make_splits" in fails["splits"][1]
    assert any(c["name"] == "images" and c["ok"] for c in report["checks"])  # checks went on


@pytest.mark.parametrize("quick", [False, True])
def test_a_mask_in_another_world_frame(monkeypatch, capsys, tiny: Path, quick: bool) -> None:
    shifted = AFFINE.copy()
    shifted[:3, 3] += (0.0, 0.0, 25.0)  # same shape, ten slices off
    write_nifti(tiny / "masks" / "c3.nii.gz", np.zeros(SHAPE, np.uint8), shifted)
    code, report = validate(monkeypatch, capsys, tiny, *(["--quick"] if quick else []))
    assert code == 1
    (msg,) = failing(report)["masks (mask)"]
    assert "'c3'" in msg and "another world frame" in msg and "25 mm" in msg and "resample" in msg


def test_a_mask_of_another_shape(monkeypatch, capsys, tiny: Path) -> None:
    write_nifti(tiny / "masks" / "c5.nii.gz", np.zeros((12, 12, 10), np.uint8))
    code, report = validate(monkeypatch, capsys, tiny)
    assert code == 1
    (msg,) = failing(report)["masks (mask)"]
    assert "'c5'" in msg and "(12, 12, 10)" in msg and "(12, 12, 12)" in msg and "voxel grid" in msg


@pytest.mark.parametrize("quick", [False, True])
def test_single_slice_images(monkeypatch, capsys, tiny: Path, quick: bool) -> None:
    write_nifti(tiny / "images" / "c2.nii.gz", np.zeros((12, 12, 1), np.int16))
    dcm = tiny / "dicom" / "slice-001.dcm"
    dcm.parent.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), dcm)
    edit_manifest(tiny, lambda m: m.__setitem__("image", [*m["image"][:5], "dicom/slice-001.dcm"]))
    code, report = validate(monkeypatch, capsys, tiny, *(["--quick"] if quick else []))
    assert code == 1
    two_d, dicom = failing(report)["images"]
    assert "'c2'" in two_d and "c2.nii.gz" in two_d and "at least 4 voxels" in two_d
    assert "'c5'" in dicom and "slice-001.dcm" in dicom and "series folder" in dicom


def test_a_centre_outside_its_image(monkeypatch, capsys, tiny: Path) -> None:
    edit_manifest(tiny, lambda m: m.__setitem__("x", [0.0, 1.0, 2.0, 3.0, 150.0, 5.0]))
    code, report = validate(monkeypatch, capsys, tiny)
    assert code == 1
    (msg,) = failing(report)["centres (lesion)"]
    assert "'c4'" in msg and "outside its image" in msg and "LPS" in msg


def test_a_broken_card_stops_early_and_a_missing_folder_is_a_usage_error(monkeypatch, capsys, tiny: Path) -> None:
    (tiny / CARD_FILE).write_text(json.dumps({**CARD, "licnce": "x"}))
    code, report = validate(monkeypatch, capsys, tiny)
    assert code == 1 and [c["name"] for c in report["checks"]] == ["card"]
    assert "licnce" in report["problems"][0]["message"]
    code, out, err = run_cli(monkeypatch, capsys, "datasets", "validate", str(tiny / "nope"))
    assert code == 2 and "not a folder" in err


def test_the_table_lists_problems_per_case(monkeypatch, capsys, tiny: Path) -> None:
    (tiny / "images" / "c1.nii.gz").unlink()
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "validate", str(tiny))
    assert code == 1
    assert "FAIL" in out and "5 of 6 read" in out
    assert "images: case 'c1': image not found" in out.replace("\n", " ")
