"""iCTCF recipe on a tiny fake folder in the documented layout (clinical.csv + images/)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from recipe_fakes import volume, write_csv, write_dicom_series, write_nifti

from ctbench.datasets import open_dataset
from ctbench.errors import CTBenchError
from ctbench.recipes import prepare

MORBIDITY = ["Control", "Suspected", "Mild", "Regular", "Severe", "Critically ill"]


def fake_ictcf(root, n: int = 24):
    rows = []
    for i in range(1, n + 1):
        pid = f"Patient {i}"
        morbidity = MORBIDITY[i % 6]
        rows.append({"patient_id": pid, "hospital": "Union", "age": 40 + i,
                     "pcr": "Negative" if morbidity in ("Control", "Suspected") else "Positive",
                     "morbidity": morbidity, "crp": 2.5 * i if i != 3 else "",
                     "ldh": 180 + i, "lymphocyte_count": 1.0 + i / 10, "d_dimer": 0.1 * i})
        if i == 5:
            write_dicom_series(root / "images" / pid, seed=i)
        elif i != n:
            write_nifti(root / "images" / f"{pid}.nii.gz", volume(i))
    write_csv(root / "clinical.csv", rows)
    return root


def test_prepare_ictcf_labels_labs_and_images(tmp_path):
    src = fake_ictcf(tmp_path / "iCTCF")
    res = prepare("ictcf", src, tmp_path / "out", seed=1)
    m = res.dataset.manifest.set_index("case_id")
    assert len(m) == 23 and res.skipped[0][0] == "Patient 24"
    assert m.loc["Patient 6", "covid_positive"] == 0 and np.isnan(m.loc["Patient 6", "severe"])  # Control
    assert m.loc["Patient 2", "covid_positive"] == 1 and m.loc["Patient 2", "severe"] == 0  # Mild
    assert m.loc["Patient 4", "severe"] == 1 and m.loc["Patient 5", "severe"] == 1  # Severe / Critically ill
    assert m.loc["Patient 10", "crp"] == 25.0 and np.isnan(m.loc["Patient 3", "crp"])
    assert m.loc["Patient 7", "image"].endswith("images/Patient 7.nii.gz")
    assert m.loc["Patient 5", "image"].endswith("images/Patient 5")  # a DICOM series folder
    assert sum(res.counts.values()) == 23 and min(res.counts.values()) >= 4
    ds = open_dataset(str(res.folder))
    assert ds.card.task("covid").kind == "binary" and ds.card.task("severity").targets == ("severe",)
    assert ds.card.task("lab-crp").category == "regression"
    assert ds.card.task("lab-lymphocyte-count").targets == ("lymphocyte_count",)


def test_ictcf_validates_values_and_columns(tmp_path):
    src = fake_ictcf(tmp_path / "a", n=4)
    table = pd.read_csv(src / "clinical.csv")
    table.loc[1, "morbidity"] = "Moderate"
    table.to_csv(src / "clinical.csv", index=False)
    with pytest.raises(CTBenchError, match=r"morbidity holds 'Moderate' \(line 3\).*allowed: control"):
        prepare("ictcf", src, tmp_path / "o")
    table.drop(columns=["d_dimer"]).to_csv(src / "clinical.csv", index=False)
    with pytest.raises(CTBenchError, match=r"lacks column\(s\) d_dimer"):
        prepare("ictcf", src, tmp_path / "o")
    table.loc[1, "morbidity"] = "Mild"
    table["ldh"] = table["ldh"].astype(object)
    table.loc[2, "ldh"] = "high"
    table.to_csv(src / "clinical.csv", index=False)
    with pytest.raises(CTBenchError, match="ldh must hold numbers, found 'high'"):
        prepare("ictcf", src, tmp_path / "o")
