"""TotalSegmentator recipe on a tiny fake v2 download: per-structure masks -> one label map."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from recipe_fakes import volume, write_csv, write_nifti

from ctbench.datasets import open_dataset
from ctbench.errors import CTBenchError
from ctbench.recipes import prepare
from ctbench.recipes.totalseg import LABELS, STRUCTURES

SHAPE = (8, 8, 6)


def fake_totalseg(root, splits=("train", "train", "train", "val", "test", "train")):
    meta = []
    for i, split in enumerate(splits):
        case = root / f"s{i:04d}"
        write_nifti(case / "ct.nii.gz", volume(i, SHAPE))
        for name in STRUCTURES:
            mask = np.zeros(SHAPE, dtype=np.uint8)
            if name == "spleen":
                mask[:4, :4] = 1
            elif name == "liver":
                mask[2:6, 2:6] = 1  # overlaps the spleen in [2:4, 2:4]
            elif name == "costal_cartilages":
                mask[7, 7, 5] = 1
            if not (i == 5 and name in ("brain", "skull")):
                write_nifti(case / "segmentations" / f"{name}.nii.gz", mask)
        meta.append({"image_id": f"s{i:04d}", "age": 50 + i, "gender": "f", "institute": "A",
                     "study_type": "ct thorax", "split": split, "manufacturer": "x"})
    meta.append({"image_id": "s0099", "age": 1, "gender": "m", "institute": "A",
                 "study_type": "ct", "split": "train", "manufacturer": "x"})
    write_csv(root / "meta.csv", meta, sep=";")
    return root


def test_structure_table_is_totalsegmentator_v2():
    assert len(STRUCTURES) == 117 and len(set(STRUCTURES)) == 117
    assert LABELS[1] == "spleen" and LABELS[5] == "liver" and LABELS[25] == "sacrum"
    assert LABELS[26] == "vertebrae_S1" and LABELS[50] == "vertebrae_C1"
    assert LABELS[51] == "heart" and LABELS[91] == "skull" and LABELS[92] == "rib_left_1"
    assert LABELS[115] == "rib_right_12" and LABELS[117] == "costal_cartilages"


def test_prepare_totalseg_combines_masks_once(tmp_path):
    src = fake_totalseg(tmp_path / "Totalsegmentator_dataset_v201")
    out = tmp_path / "out"
    res = prepare("totalsegmentator", src, out)
    m = res.dataset.manifest.set_index("case_id")
    assert res.counts == {"train": 3, "val": 1, "test": 1}
    skipped = dict(res.skipped)
    assert set(skipped) == {"s0005", "s0099"}
    assert "lacks 2 of the 117" in skipped["s0005"] and "image not found" in skipped["s0099"]
    assert m.loc["s0003", "split"] == "val" and m.loc["s0004", "split"] == "test"
    assert m.loc["s0001", "mask"] == "labels/s0001.nii.gz"  # relative to the prepared folder
    path = res.dataset.resolve(m.loc["s0001", "mask"])
    img = nib.load(str(path))
    lab = np.asarray(img.dataobj)
    assert lab.dtype == np.uint8 and lab.shape == SHAPE
    np.testing.assert_allclose(img.affine, nib.load(m.loc["s0001", "image"]).affine)
    assert lab[0, 0, 0] == 1 and lab[5, 5, 0] == 5 and lab[3, 3, 3] == 5  # higher id wins
    assert lab[7, 7, 5] == 117 and lab[7, 0, 0] == 0
    assert sorted(np.unique(lab).tolist()) == [0, 1, 5, 117]
    ds = open_dataset(str(out))
    assert ds.card.task("segmentation").targets == ("mask",)
    assert "1 spleen, 2 kidney_right" in ds.card.description
    assert "117 costal_cartilages" in ds.card.description
    # a second run reuses the label maps already written
    before = path.stat().st_mtime_ns
    prepare("totalsegmentator", src, out)
    assert path.stat().st_mtime_ns == before
    notes = json.loads((out / "prepare.json").read_text())["notes"]
    assert notes == {"label_maps_written": 0, "label_maps_reused": 5}


def test_totalseg_meta_errors(tmp_path):
    with pytest.raises(CTBenchError, match="meta.csv not found"):
        prepare("totalsegmentator", tmp_path, tmp_path / "o")
    write_csv(tmp_path / "meta.csv", [{"image_id": "s0000", "split": "training"}], sep=";")
    with pytest.raises(CTBenchError, match=r"split column holds \['training'\]"):
        prepare("totalsegmentator", tmp_path, tmp_path / "o")
