"""OSIC recipe on a tiny fake competition folder: train.csv + train/<Patient>/*.dcm."""

from __future__ import annotations

import pytest
from recipe_fakes import write_csv, write_dicom_series

from ctbench.datasets import open_dataset
from ctbench.errors import CTBenchError
from ctbench.readers import read_volume
from ctbench.recipes import prepare


def pid(i: int) -> str:
    return f"ID00{i:03d}637202177411956430"


def fake_osic(root, n: int = 12):
    rows = []
    for i in range(n):
        # weeks -4, 2, 9 ...: baseline is week 2 (closest to 0); patient 0 has a tie (-3, 3)
        weeks = (-3, 3, 20) if i == 0 else (-4 - i, 2, 9 + i)
        for w in weeks:
            rows.append({"Patient": pid(i), "Weeks": w, "FVC": 2000 + 100 * i + w,
                         "Percent": 60.0 + i + w / 10, "Age": 60 + i, "Sex": "Male",
                         "SmokingStatus": "Ex-smoker"})
        if i != n - 1:
            write_dicom_series(root / "train" / pid(i), seed=i, n_slices=4)
    write_csv(root / "train.csv", rows)
    write_csv(root / "test.csv", rows[:3])
    return root


def test_prepare_osic_baseline_fvc(tmp_path):
    src = fake_osic(tmp_path / "osic")
    res = prepare("osic", src, tmp_path / "out")
    m = res.dataset.manifest.set_index("case_id")
    assert len(m) == 11 and res.skipped[0][0] == pid(11)
    assert m.loc[pid(4), "fvc_baseline"] == 2000 + 400 + 2 and m.loc[pid(4), "baseline_week"] == 2
    assert m.loc[pid(0), "baseline_week"] == -3 and m.loc[pid(0), "fvc_baseline"] == 1997  # tie -> earlier
    assert m.loc[pid(4), "percent_baseline"] == pytest.approx(64.2)
    assert m.loc[pid(4), "smoking_status"] == "Ex-smoker" and m.loc[pid(4), "age"] == 64
    assert res.counts["test"] >= 2 and res.counts["val"] >= 2
    ds = open_dataset(str(res.folder))
    assert ds.card.task("fvc").targets == ("fvc_baseline",)
    vol = read_volume(m.loc[pid(1), "image"])
    assert tuple(vol.shape) == (1, 12, 12, 4)


def test_osic_errors(tmp_path):
    with pytest.raises(CTBenchError, match="train.csv not found"):
        prepare("osic", tmp_path, tmp_path / "o")
    write_csv(tmp_path / "train.csv", [{"Patient": "a", "Weeks": 0, "FVC": 1, "Percent": 1,
                                        "Age": 1, "Sex": "Male"}])
    with pytest.raises(CTBenchError, match=r"lacks column\(s\) SmokingStatus"):
        prepare("osic", tmp_path, tmp_path / "o")
