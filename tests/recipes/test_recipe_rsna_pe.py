"""RSNA-PE recipe on a tiny fake competition folder: slice-level train.csv + DICOM series."""

from __future__ import annotations

import numpy as np
import pytest
from recipe_fakes import write_csv, write_dicom_series

from ctbench.datasets import open_dataset
from ctbench.errors import CTBenchError
from ctbench.recipes import prepare


def fake_rsna(root, n: int = 12):
    rows = []
    for i in range(n):
        study, series = f"6897fa9de1{i:02d}", f"43e0d6bc{i:02d}"
        negative = int(i % 2 == 0)
        indeterminate = int(i == 3)
        for k in range(3):
            rows.append({"StudyInstanceUID": study, "SeriesInstanceUID": series,
                         "SOPInstanceUID": f"{series}.{k}",
                         "pe_present_on_image": int(not negative and not indeterminate and k == 1),
                         "negative_exam_for_pe": negative if not indeterminate else 0,
                         "qa_motion": 0, "qa_contrast": 0, "flow_artifact": 0,
                         "rv_lv_ratio_gte_1": int(i == 5), "rv_lv_ratio_lt_1": int(i != 5),
                         "leftsided_pe": 0, "chronic_pe": 0, "true_filling_defect_not_pe": 0,
                         "rightsided_pe": int(not negative), "acute_and_chronic_pe": 0,
                         "central_pe": 0, "indeterminate": indeterminate})
        if i != n - 1:
            write_dicom_series(root / "train" / study / series, seed=i, n_slices=3, size=8)
    write_csv(root / "train.csv", rows)
    return root


def test_prepare_rsna_pe_study_labels(tmp_path):
    src = fake_rsna(tmp_path / "rsna")
    res = prepare("rsna-pe", src, tmp_path / "out", seed=2)
    m = res.dataset.manifest.set_index("case_id")
    assert len(m) == 11 and res.skipped[0][0] == "6897fa9de111"
    assert m.loc["6897fa9de100", "pe_present"] == 0 and m.loc["6897fa9de101", "pe_present"] == 1
    assert np.isnan(m.loc["6897fa9de103", "pe_present"])  # indeterminate: no label
    assert m.loc["6897fa9de101", "pe_on_any_image"] == 1 and m.loc["6897fa9de105", "rv_lv_ratio_gte_1"] == 1
    assert m.loc["6897fa9de101", "image"].endswith("train/6897fa9de101/43e0d6bc01")
    assert (m.index == m["patient_id"]).all()
    ds = open_dataset(str(res.folder))
    assert ds.card.task("pe").targets == ("pe_present",) and ds.card.task("pe").kind == "binary"


def test_rsna_pe_errors(tmp_path):
    src = fake_rsna(tmp_path / "a", n=3)
    write_csv(src / "train.csv", [{"StudyInstanceUID": "s", "SeriesInstanceUID": "x",
                                   "SOPInstanceUID": "1", "pe_present_on_image": 0,
                                   "negative_exam_for_pe": 2, "indeterminate": 0}])
    with pytest.raises(CTBenchError, match="negative_exam_for_pe must hold 0 or 1, found 2"):
        prepare("rsna-pe", src, tmp_path / "o")
    (src / "train.csv").unlink()
    with pytest.raises(CTBenchError, match="train.csv not found"):
        prepare("rsna-pe", src, tmp_path / "o")
