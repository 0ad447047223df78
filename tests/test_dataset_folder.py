"""Loading a prepared dataset folder: a manifest whose patient spans two splits is refused; so are
card or task names that are not identifiers, empty or path-unsafe ids and files that cannot be
decoded, each with one message naming the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

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


# --- names become folder names: plain identifiers only ---------------------------------------


@pytest.mark.parametrize("bad", ["../x", "/abs", "two words"])
@pytest.mark.parametrize("field", ["name", "tasks.0.name"])
def test_a_card_or_task_name_that_is_not_an_identifier_is_refused(tmp_path, field, bad):
    folder = _folder(tmp_path, [("c1", "p1", "train")])
    card = json.loads((folder / "dataset.json").read_text())
    if field == "name":
        card["name"] = bad
    else:
        card["tasks"][0]["name"] = bad
    (folder / "dataset.json").write_text(json.dumps(card))
    with pytest.raises(CTBenchError) as err:
        load_dataset_folder(folder)
    msg = str(err.value)
    assert str(folder / "dataset.json") in msg and repr(field) in msg and repr(bad) in msg
    assert "lower-case letters, digits" in msg  # the fix
    assert "\n" not in msg


def test_card_names_are_checked_when_built_in_code_too():
    with pytest.raises(ValidationError, match="not a plain name"):
        TaskSpec(name="Nodule Task", category="classification", targets=("n",), main_metric="auroc")


# --- ids: never empty, case ids usable as file names --------------------------------------------


@pytest.mark.parametrize("column", ["case_id", "patient_id"])
def test_an_empty_id_is_refused_naming_the_row_and_the_fix(tmp_path, column):
    folder = _folder(tmp_path, [("c1", "p1", "train"), ("c2", "p2", "train"), ("c3", "p3", "test")])
    m = pd.read_csv(folder / "manifest.csv")
    m[column] = m[column].astype(object)
    m.loc[1, column] = None
    m.to_csv(folder / "manifest.csv", index=False)
    with pytest.raises(CTBenchError) as err:
        load_dataset_folder(folder)
    msg = str(err.value)
    assert str(folder / "manifest.csv") in msg and "row 2" in msg and f"empty {column}" in msg
    assert "fill it in or remove the row" in msg and "'nan'" not in msg


@pytest.mark.parametrize("case", ["../escape", "a/b", "..", "x\\y"])
def test_a_case_id_that_cannot_be_a_file_name_is_refused(tmp_path, case):
    folder = _folder(tmp_path, [("c1", "p1", "train"), (case, "p2", "train")])
    with pytest.raises(CTBenchError) as err:
        load_dataset_folder(folder)
    msg = str(err.value)
    assert "row 2" in msg and repr(case) in msg and "predicted masks" in msg and "rename" in msg


def test_ids_are_read_as_text(tmp_path):
    folder = _folder(tmp_path, [("007", "0042", "train"), ("8", "9", "test")])
    m = load_dataset_folder(folder).manifest
    assert m["case_id"].tolist() == ["007", "8"] and m["patient_id"].tolist() == ["0042", "9"]


# --- files pandas or JSON cannot decode: one message naming the file and the fix ----------------


@pytest.mark.parametrize("content, needle", [
    (b"case_id,patient_id,image,split,nodule\nc1,p\xe9,a.nii.gz,train,0\n", "not UTF-8"),
    (b"", "the manifest is empty"),
    (b'case_id,patient_id,image,split,nodule\nc1,p1,"a.nii.gz,train,0\n', "not a readable CSV"),
    (b"case_id,patient_id,image,split,nodule\nc1,p1,a,train,0\nc2,p2,a,train,0,9,9\n", "not a readable CSV"),
    (b"case_id,patient_id,image,split,nodule\n", "no case"),
])
def test_an_undecodable_manifest_is_one_clear_error(tmp_path, content, needle):
    folder = _folder(tmp_path, [("c1", "p1", "train")])
    (folder / "manifest.csv").write_bytes(content)
    with pytest.raises(CTBenchError) as err:
        load_dataset_folder(folder)
    msg = str(err.value)
    assert str(folder / "manifest.csv") in msg and needle in msg and "\n" not in msg


@pytest.mark.parametrize("content, needle", [
    ('{"name": "caf\xe9"}'.encode("latin-1"), "not UTF-8"),
    (b"", "not valid JSON"),
    (b'{"name": "x",', "not valid JSON"),
])
def test_an_undecodable_card_is_one_clear_error(tmp_path, content, needle):
    folder = _folder(tmp_path, [("c1", "p1", "train")])
    (folder / "dataset.json").write_bytes(content)
    with pytest.raises(CTBenchError) as err:
        load_dataset_folder(folder)
    assert str(folder / "dataset.json") in str(err.value) and needle in str(err.value)


def test_a_card_with_a_utf8_byte_order_mark_loads(tmp_path):
    folder = _folder(tmp_path, [("c1", "p1", "train")])
    (folder / "dataset.json").write_bytes(b"\xef\xbb\xbf" + (folder / "dataset.json").read_bytes())
    assert load_dataset_folder(folder).card.name == "user"
