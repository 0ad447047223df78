"""LUNA16 recipe on a tiny fake download: subsetK/<uid>.mhd + .raw and annotations.csv (LPS)."""

from __future__ import annotations

import numpy as np
import pytest
from recipe_fakes import volume, write_csv, write_mhd

from ctbench.datasets import open_dataset
from ctbench.errors import CTBenchError
from ctbench.readers import read_volume
from ctbench.recipes import prepare

ORIGIN = (-100.0, -120.0, -300.0)  # LPS, as in LUNA16 .mhd headers
SPACING = (0.7, 0.8, 2.5)


def uid(fold: int, k: int) -> str:
    return f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{fold}{k}0000000000000000000{fold}"


def fake_luna(root):
    ann = []
    for fold in range(10):
        for k in range(2 if fold == 0 else 1):
            write_mhd(root / f"subset{fold}" / f"{uid(fold, k)}.mhd", volume(fold * 10 + k),
                      spacing=SPACING, origin=ORIGIN)
            if fold % 2 == 0:  # nodule at voxel (3, 4, 2), LPS world mm
                lps = np.array(ORIGIN) + np.array(SPACING) * np.array([3, 4, 2])
                ann.append({"seriesuid": uid(fold, k), "coordX": lps[0], "coordY": lps[1],
                            "coordZ": lps[2], "diameter_mm": 8.0})
    ann.append({"seriesuid": uid(0, 0), "coordX": 0.0, "coordY": 0.0, "coordZ": 0.0,
                "diameter_mm": 4.0})  # a smaller second nodule
    ann.append({"seriesuid": "1.2.3.not.downloaded", "coordX": 1, "coordY": 2, "coordZ": 3,
                "diameter_mm": 5})
    write_csv(root / "annotations.csv", ann)
    return root


def test_prepare_luna16_folds_and_ras_centres(tmp_path):
    src = fake_luna(tmp_path / "luna16")
    res = prepare("luna16", src, tmp_path / "out")
    m = res.dataset.manifest.set_index("case_id")
    assert len(m) == 11 and res.skipped[0][0] == "1.2.3.not.downloaded"
    assert res.counts == {"train": 9, "val": 1, "test": 1}
    assert m.loc[uid(9, 0), "split"] == "test" and m.loc[uid(8, 0), "split"] == "val"
    assert m.loc[uid(0, 0), "nodule_count"] == 2 and m.loc[uid(0, 0), "nodule_diameter_mm"] == 8.0
    assert np.isnan(m.loc[uid(1, 0), "nodule_x"]) and m.loc[uid(1, 0), "nodule_count"] == 0
    # the stored centre is where ctbench's reader puts voxel (3, 4, 2) in RAS world mm
    case = uid(2, 0)
    vol = read_volume(m.loc[case, "image"])
    world = (np.asarray(vol.affine) @ np.array([3, 4, 2, 1.0]))[:3]
    np.testing.assert_allclose(m.loc[case, ["nodule_x", "nodule_y", "nodule_z"]].to_numpy(float),
                               world, atol=1e-4)
    assert world[0] > 0 and world[1] > 0  # LPS negatives became RAS positives
    ds = open_dataset(str(res.folder))
    assert ds.card.task("nodule-localisation").targets == ("nodule_x", "nodule_y", "nodule_z")


def test_luna16_layout_errors(tmp_path):
    with pytest.raises(CTBenchError, match="annotations.csv not found"):
        prepare("luna16", tmp_path, tmp_path / "o")
    write_csv(tmp_path / "annotations.csv", [{"seriesuid": "1", "coordX": "x", "coordY": 1,
                                              "coordZ": 1, "diameter_mm": 3}])
    with pytest.raises(CTBenchError, match="coordX holds a non-number"):
        prepare("luna16", tmp_path, tmp_path / "o")
    write_csv(tmp_path / "annotations.csv", [{"seriesuid": "1", "coordX": 1, "coordY": 1,
                                              "coordZ": 1, "diameter_mm": 3}])
    with pytest.raises(CTBenchError, match="no subset0 ... subset9 folders"):
        prepare("luna16", tmp_path, tmp_path / "o")


def test_luna16_without_the_test_fold_says_so(tmp_path):
    src = fake_luna(tmp_path / "luna16")
    for f in (src / "subset9").iterdir():
        f.unlink()
    with pytest.raises(CTBenchError, match="the 'test' split is empty"):
        prepare("luna16", src, tmp_path / "o")
