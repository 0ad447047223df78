"""NSCLC-Radiomics recipe on a tiny fake TCIA download (DICOM series + clinical CSV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from recipe_fakes import volume, write_csv, write_dicom_series

from ctbench.datasets import open_dataset
from ctbench.errors import CTBenchError
from ctbench.readers import read_volume
from ctbench.recipes import prepare
from ctbench.recipes.nsclc import CLINICAL


def fake_nsclc(root: Path, n: int = 12) -> Path:
    coll = root / "NSCLC-Radiomics"
    rows = []
    for i in range(1, n + 1):
        pid = f"LUNG1-{i:03d}"
        rows.append({"PatientID": pid, "age": 60 + i, "clinical.T.Stage": 2, "Clinical.N.Stage": 0,
                     "Clinical.M.Stage": 0, "Overall.Stage": "IIIa", "Histology": "adenocarcinoma",
                     "gender": "male", "Survival.time": 100 * i, "deadstatus.event": int(i % 4 != 0)})
        if i == n:
            continue  # listed in the table, not downloaded
        study = coll / pid / f"09-18-2008-StudyID-{i}"
        write_dicom_series(study / "3.000000-NA-78236", seed=i, modality="RTSTRUCT")
        if i == n - 1:
            continue  # only a structure set: no CT
        write_dicom_series(study / f"0.000000-NA-{i}", seed=i, n_slices=6)
        if i == 1:
            write_dicom_series(study / "1.000000-scout", seed=99, n_slices=2)
    write_csv(root / CLINICAL, rows)
    return root


def test_prepare_nsclc_ct_series_survival_and_splits(tmp_path):
    src = fake_nsclc(tmp_path / "manifest-1603198545583")
    res = prepare("nsclc-radiomics", src, tmp_path / "out", seed=3)
    m = res.dataset.manifest.set_index("case_id")
    assert len(m) == 10
    assert {i for i, _ in res.skipped} == {"LUNG1-011", "LUNG1-012"}
    assert "no CT series" in dict(res.skipped)["LUNG1-011"] and "RTSTRUCT" in dict(res.skipped)["LUNG1-011"]
    assert m.loc["LUNG1-001", "image"].endswith("0.000000-NA-1")  # the CT series, not the scout
    assert m.loc["LUNG1-004", "time"] == 400 and m.loc["LUNG1-004", "event"] == 0
    assert m.loc["LUNG1-005", "event"] == 1 and m.loc["LUNG1-005", "sex"] == "male"
    assert res.counts == {"train": 6, "val": 2, "test": 2}
    ds = open_dataset(str(res.folder))
    spec = ds.card.task("survival")
    assert spec.targets == ("time", "event") and spec.horizons == (365.0, 730.0)
    assert ds.card.licence == "CC-BY-NC-3.0"
    # the manifest's image is a DICOM folder ctbench reads back in HU
    vol = read_volume(ds.resolve(m.loc["LUNG1-002", "image"]))
    assert tuple(vol.shape) == (1, 12, 12, 6)
    np.testing.assert_allclose(vol[0].numpy(), volume(2, (12, 12, 6)), atol=1.0)


def test_nsclc_missing_clinical_table_and_patients(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CTBenchError, match="clinical table not found"):
        prepare("nsclc-radiomics", tmp_path / "empty", tmp_path / "o")
    write_csv(tmp_path / "empty" / CLINICAL, [{"PatientID": "LUNG1-001", "Survival.time": 3,
                                               "deadstatus.event": 1}])
    with pytest.raises(CTBenchError, match=r"no patient folders \(LUNG1-001"):
        prepare("nsclc-radiomics", tmp_path / "empty", tmp_path / "o")
