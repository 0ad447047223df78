"""CT-RATE recipe on a tiny fake download with CT-RATE's file names and CSV columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recipe_fakes import volume, write_csv, write_nifti

from ctbench.datasets import open_dataset
from ctbench.errors import CTBenchError
from ctbench.recipes import prepare
from ctbench.recipes.ctrate import COLUMNS, LABELS


def fake_ctrate(root: Path, n_train: int = 10, n_valid: int = 4, missing: str = "train_3_a_2",
                images: str = "train") -> Path:
    """``root/dataset/...`` as on the hub: two reconstructions for odd patients."""
    ds = root / "dataset"
    rng = np.random.default_rng(0)
    for split, n, folder in (("train", n_train, images), ("valid", n_valid, "valid")):
        labels, reports = [], []
        for p in range(1, n + 1):
            for r in range(1, 3 if p % 2 else 2):
                name = f"{split}_{p}_a_{r}"
                if name != missing:
                    write_nifti(ds / folder / f"{split}_{p}" / f"{split}_{p}_a" / f"{name}.nii.gz",
                                volume(p * 10 + r))
                labels.append({"VolumeName": f"{name}.nii.gz",
                               **{n_: int(rng.random() < 0.4) for n_ in LABELS}})
                reports.append({"VolumeName": f"{name}.nii.gz", "ClinicalInformation_EN": "x",
                                "Technique_EN": "y",
                                "Findings_EN": "" if p == 2 else f"Findings of {name}.",
                                "Impressions_EN": "z"})
        csv = "train" if split == "train" else "valid"
        write_csv(ds / "multi_abnormality_labels" / f"{csv}_predicted_labels.csv", labels)
        rep = "train_reports.csv" if split == "train" else "validation_reports.csv"
        write_csv(ds / "radiology_text_reports" / rep, reports)
    return root


def test_prepare_ctrate_splits_labels_reports(tmp_path):
    src = fake_ctrate(tmp_path / "CT-RATE")
    res = prepare("ct-rate", src, tmp_path / "out", seed=0)
    m = res.dataset.manifest
    # 10 train patients (5 with two reconstructions) = 15 volumes, one not downloaded
    assert res.skipped == [("train_3_a_2.nii.gz", res.skipped[0][1])]
    assert "image not found" in res.skipped[0][1]
    assert len(m) == 14 + 6 and res.counts["test"] == 6
    assert res.counts["train"] + res.counts["val"] == 14
    assert set(m.loc[m["split"] == "test", "official_split"]) == {"valid"}
    # patient-level: reconstructions of one patient stay together; ~20% of train patients in val
    assert m.groupby("patient_id")["split"].nunique().max() == 1
    val_patients = m.loc[m["split"] == "val", "patient_id"].nunique()
    assert val_patients == 2
    labels = pd.read_csv(src / "dataset/multi_abnormality_labels/train_predicted_labels.csv")
    row = m.set_index("case_id").loc["train_5_a_2"]
    want = labels.set_index("VolumeName").loc["train_5_a_2.nii.gz"]
    assert [row[c] for c in COLUMNS] == [want[n] for n in LABELS]
    assert COLUMNS[0] == "medical_material" and COLUMNS[-1] == "interlobular_septal_thickening"
    assert row["patient_id"] == "train_5" and row["report"] == "Findings of train_5_a_2."
    assert Path(row["image"]).is_absolute() and Path(row["image"]).is_file()
    assert pd.isna(m.set_index("case_id").loc["train_2_a_1", "report"])  # empty Findings_EN
    # loadable, tasks resolve, header facts recorded
    ds = open_dataset(str(res.folder))
    assert ds.card.task("abnormality").targets == COLUMNS
    assert ds.card.task("abnormality").kind == "multilabel"
    assert ds.card.task("report-generation").targets == ("report",)
    assert ds.card.licence == "CC-BY-NC-SA-4.0" and "huggingface.co" in ds.card.source
    assert res.warnings == []
    # same seed, same bytes
    first = (res.folder / "manifest.csv").read_bytes()
    prepare("ct-rate", src, tmp_path / "out", seed=0)
    assert (res.folder / "manifest.csv").read_bytes() == first


def test_ctrate_strict_prefers_fixed_and_checks_headers(tmp_path):
    src = fake_ctrate(tmp_path / "a")
    with pytest.raises(CTBenchError, match=r"train_3_a_2.nii.gz: image not found"):
        prepare("ct-rate", src, tmp_path / "o1", strict=True)
    # v2 folder name (train_fixed) is found from the dataset/ folder itself
    src2 = fake_ctrate(tmp_path / "b", images="train_fixed", missing="")
    res = prepare("ct-rate", src2 / "dataset", tmp_path / "o2")
    assert "/train_fixed/" in res.dataset.manifest["image"].iloc[0]
    assert res.skipped == []


def test_ctrate_header_scaling_warns_and_blank_header_refused(tmp_path):
    src = fake_ctrate(tmp_path / "a", missing="")
    first = src / "dataset/train/train_1/train_1_a/train_1_a_1.nii.gz"
    write_nifti(first, volume(0) + 1024, slope=1.0, inter=-1024.0)
    res = prepare("ct-rate", src, tmp_path / "o1")
    assert len(res.warnings) == 1 and "scl_inter=-1024.0" in res.warnings[0]
    write_nifti(first, volume(0), oriented=False)
    with pytest.raises(CTBenchError, match="no orientation in its NIfTI header"):
        prepare("ct-rate", src, tmp_path / "o2")


def test_ctrate_folder_errors(tmp_path):
    with pytest.raises(CTBenchError, match="label folder not found.*multi_abnormality_labels"):
        prepare("ct-rate", tmp_path, tmp_path / "o")
    src = fake_ctrate(tmp_path / "a")
    bad = src / "dataset/multi_abnormality_labels/valid_predicted_labels.csv"
    pd.read_csv(bad).drop(columns=["Cardiomegaly"]).to_csv(bad, index=False)
    with pytest.raises(CTBenchError, match="lacks column\\(s\\) Cardiomegaly"):
        prepare("ct-rate", src, tmp_path / "o")
    (src / "dataset/radiology_text_reports/train_reports.csv").unlink()
    with pytest.raises(CTBenchError, match="table not found: .*train_reports.csv is missing"):
        prepare("ct-rate", src, tmp_path / "o")
    with pytest.raises(CTBenchError, match="Did you mean 'ct-rate'"):
        prepare("ctrate", src, tmp_path / "o")


def test_ctrate_label_retrieval_runs_end_to_end(tmp_path, monkeypatch):
    from ctbench.runner import RunConfig, run

    # read in-process: worker start-up would dominate a 20-volume run

    res = prepare("ct-rate", fake_ctrate(tmp_path / "src", missing=""), tmp_path / "out")
    path, result = run(RunConfig(model="test-histogram", task="label-retrieval",
                                 dataset=str(res.folder), weights="random", trials=2, n_boot=20,
                                 device="cpu", out=str(tmp_path / "results")))
    assert path.is_file() and result["split"]["hash"] == res.dataset.split_hash()
    assert result["task"]["targets"] == list(COLUMNS) and result["failures"] == []
    for k in (1, 5, 10):
        assert 0.0 <= result["metrics"][f"label_recall@{k}"]["value"] <= 1.0
    assert (result["metrics"]["label_recall@1"]["value"]
            <= result["metrics"]["label_recall@10"]["value"])
