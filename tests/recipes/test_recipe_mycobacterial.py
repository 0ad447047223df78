"""Mycobacterial (NTM vs TB) recipe on a tiny fake folder, then a real run end to end on it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from recipe_fakes import volume, write_csv, write_nifti

from ctbench.datasets import open_dataset
from ctbench.errors import CTBenchError
from ctbench.recipes import prepare
from ctbench.runner import RunConfig, run


def fake_cohort(root, n_patients: int = 26):
    rows = []
    for p in range(n_patients):
        ntm = p % 2 == 0
        for s in range(2 if p < 4 else 1):  # four patients scanned twice
            case = f"P{p:03d}-{s}"
            data = volume(p * 7 + s)
            data[data > 100] = 900 if ntm else 300  # label-dependent bright blob
            if case != "P025-0":
                write_nifti(root / "scans" / f"{case}.nii.gz", data)
            rows.append({"case_id": case, "patient_id": f"P{p:03d}", "image": f"scans/{case}.nii.gz",
                         "diagnosis": "NTM" if ntm else "tb", "age": 50 + p})
    write_csv(root / "labels.csv", rows)
    return root


def test_prepare_mycobacterial_and_run_end_to_end(tmp_path, monkeypatch):
    # read in-process: worker start-up would dominate a 29-volume run
    src = fake_cohort(tmp_path / "cohort")
    res = prepare("mycobacterial", src, tmp_path / "prepared", seed=0)
    m = res.dataset.manifest
    assert len(m) == 29 and res.skipped[0][0] == "P025-0"
    assert m.groupby("patient_id")["split"].nunique().max() == 1  # repeat scans stay together
    by_case = m.set_index("case_id")
    assert by_case.loc["P000-1", "ntm"] == 1 and by_case.loc["P001-0", "ntm"] == 0
    assert by_case.loc["P003-0", "age"] == 53
    for split in ("train", "val", "test"):  # stratified: both classes everywhere
        assert set(m.loc[m["split"] == split, "ntm"]) == {0, 1}
    ds = open_dataset(str(res.folder))
    assert ds.card.task("ntm-vs-tb").kind == "binary"

    path, result = run(RunConfig(model="test-histogram", task="ntm-vs-tb", dataset=str(res.folder),
                                 weights="random", trials=2, n_boot=20, device="cpu",
                                 out=str(tmp_path / "results")))
    on_disk = json.loads(path.read_text())
    assert on_disk["task"]["dataset"] == "mycobacterial" and on_disk["task"]["name"] == "ntm-vs-tb"
    assert on_disk["split"]["hash"] == ds.split_hash()
    assert on_disk["split"]["counts"]["test"] == int((m["split"] == "test").sum())
    auroc = on_disk["metrics"]["auroc"]
    assert 0.0 <= auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"] <= 1.0
    assert auroc["value"] > 0.5  # the blob's HU separates the classes in the histogram features
    preds = pd.read_csv(path.parent / on_disk["predictions_file"])
    assert set(preds["case_id"]) == set(m.loc[m["split"] == "test", "case_id"])
    assert result["failures"] == []


def test_mycobacterial_layout_errors(tmp_path):
    with pytest.raises(CTBenchError, match="labels.csv not found"):
        prepare("mycobacterial", tmp_path, tmp_path / "o")
    write_csv(tmp_path / "labels.csv", [{"case_id": "a", "patient_id": "p", "image": "a.nii.gz",
                                         "diagnosis": "MAC"}])
    with pytest.raises(CTBenchError, match="diagnosis holds 'MAC'.*allowed: ntm, tb"):
        prepare("mycobacterial", tmp_path, tmp_path / "o")
    write_csv(tmp_path / "labels.csv", [{"case_id": "a", "patient_id": "p", "image": "a.nii.gz",
                                         "diagnosis": "TB"}])
    with pytest.raises(CTBenchError, match="no usable case.*image 'a.nii.gz' not found"):
        prepare("mycobacterial", tmp_path, tmp_path / "o")
    write_nifti(tmp_path / "a.nii.gz", volume(0).astype(np.int16))
    with pytest.raises(CTBenchError, match=r"1 usable patient\(s\) found; a train/val/test split needs"):
        prepare("mycobacterial", tmp_path, tmp_path / "o")
