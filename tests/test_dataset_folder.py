"""Loading a prepared dataset folder: a manifest whose patient spans two splits is refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ctbench.datasets import DatasetCard, TaskSpec, load_dataset_folder, write_card
from ctbench.errors import CTBenchError

TASK = TaskSpec(name="nodule", category="classification", targets=("nodule",), main_metric="auroc")


def _folder(tmp_path: Path, rows: list[tuple[str, str, str]], parquet: bool = False) -> Path:
    folder = tmp_path / "ds"
    folder.mkdir()
    write_card(DatasetCard(name="user", version="1", licence="CC0-1.0", tasks=(TASK,)), folder)
    frame = pd.DataFrame(rows, columns=["case_id", "patient_id", "split"])
    frame["image"], frame["nodule"] = "a.nii.gz", 0
    if parquet:
        frame.to_parquet(folder / "manifest.parquet")
    else:
        frame.to_csv(folder / "manifest.csv", index=False)
    return folder


def test_patient_in_two_splits_is_refused_naming_file_patient_splits_and_fix(tmp_path):
    folder = _folder(tmp_path, [("c1", "p1", "train"), ("c2", "p1", "test"), ("c3", "p2", "val"),
                                ("c4", "p3", "train"), ("c5", "p3", "val")])
    with pytest.raises(CTBenchError) as err:
        load_dataset_folder(folder)
    msg = str(err.value)
    assert str(folder / "manifest.csv") in msg
    assert "'p1'" in msg and "train, test" in msg and "1 more patient" in msg
    assert "one split" in msg  # the fix


def test_the_parquet_manifest_is_named_too(tmp_path):
    pytest.importorskip("pyarrow")
    folder = _folder(tmp_path, [("c1", "p1", "val"), ("c2", "p1", "test")], parquet=True)
    with pytest.raises(CTBenchError, match=r"manifest\.parquet: patient_id 'p1' appears in splits val, test"):
        load_dataset_folder(folder)


def test_repeat_scans_in_one_split_load(tmp_path):
    folder = _folder(tmp_path, [("c1", "p1", "train"), ("c2", "p1", "train"), ("c3", "p2", "test")])
    assert len(load_dataset_folder(folder).manifest) == 3
