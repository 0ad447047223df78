"""Seed points for seed-conditioned models (``ctbench.seeds``): manifest columns read and checked
per case, handed to the adapter on the volume, part of the cache key; missing columns and seeds
that are the task's target refused up front with one message."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.datasets import DatasetCard, TaskSpec, load_dataset_folder, write_card
from ctbench.errors import CTBenchError
from ctbench.extract import extract
from ctbench.seeds import (
    SEED_META_KEY, case_seeds, check_target_leak, parse_seed_columns, seed_of, seeded_key,
)
from ctbench.types import Features
from ctbench.weights import resolve_weights

CARD = ModelCard(name="test-seeded", title="seed echo", citation="none", licence="CC0-1.0", architecture="none",
                 parameters=0, embedding_dim=4, supervision="none", seed_conditioned=True,
                 input=InputSpec(orientation="native", spacing_mm="native", intensity="HU",
                                 spatial_size="native", axis_order="(1, X, Y, Z)"),
                 weights=WeightsSpec(format="none"), weights_access="none")


class SeedEcho:
    """A seed-conditioned encoder whose embedding is its seed and the image mean: what it was handed."""

    card = CARD
    seed_columns = ("click_x", "click_y", "click_z")
    allow_target_seed = False
    preprocessing_id = "echo"

    def __init__(self) -> None:
        self.weights_ref = resolve_weights(CARD, "auto")

    def encode(self, volume) -> Features:
        return Features(np.r_[seed_of(volume, "test-seeded"), float(volume.mean())])


def _dataset(folder: Path, clicks: list[tuple], centres: list[tuple]) -> Path:
    """Three 6^3 scans, a localisation task on ``lesion_x/y/z`` and reader clicks in ``click_x/y/z``."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for i, (click, centre) in enumerate(zip(clicks, centres)):
        nib.save(nib.Nifti1Image(np.full((6, 6, 6), 10.0 * i, np.float32), np.eye(4)), folder / "images" / f"c{i}.nii.gz")
        rows.append({"case_id": f"c{i}", "patient_id": f"p{i}", "image": f"images/c{i}.nii.gz",
                     "split": ("train", "val", "test")[i], **dict(zip(("click_x", "click_y", "click_z"), click)),
                     **dict(zip(("lesion_x", "lesion_y", "lesion_z"), centre))})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    task = TaskSpec(name="loc", category="localisation", targets=("lesion_x", "lesion_y", "lesion_z"),
                    main_metric="centre_error_mm")
    write_card(DatasetCard(name="seeded", version="1", licence="CC0-1.0", tasks=(task,)), folder)
    return folder


def test_extract_hands_each_case_its_seed_and_keys_the_cache_by_it(tmp_path: Path) -> None:
    ds = load_dataset_folder(_dataset(tmp_path / "ds", [(1.5, 2.0, 3.0), (4.0, "", 6.0), (7.0, 8.0, 9.25)],
                                      [(0, 0, 0)] * 3))
    out = extract(SeedEcho(), "test-seeded", ds, ds.manifest, targets=("lesion_x", "lesion_y", "lesion_z"))
    assert out.features["c0"].embedding.tolist() == [1.5, 2.0, 3.0, 0.0]
    assert out.features["c2"].embedding.tolist() == [7.0, 8.0, 9.25, 20.0]
    assert out.failures == {"c1": "case 'c1' has no seed point: column click_y is empty; give every case a world "
                                  "RAS mm seed in click_x, click_y, click_z"}
    # another seed for the same image is another cache entry; the same seed is found cached
    again = extract(SeedEcho(), "test-seeded", ds, ds.manifest)
    assert (again.cached, again.extracted) == (2, 0)
    ds.manifest.loc[0, "click_x"] = 1.25
    moved = extract(SeedEcho(), "test-seeded", ds, ds.manifest)
    assert (moved.cached, moved.extracted) == (1, 1) and moved.features["c0"].embedding[0] == 1.25


def test_a_manifest_without_the_seed_columns_is_refused_up_front(tmp_path: Path) -> None:
    ds = load_dataset_folder(_dataset(tmp_path / "ds", [(1, 2, 3)] * 3, [(0, 0, 0)] * 3))
    ds.manifest = ds.manifest.drop(columns=["click_z"])
    with pytest.raises(CTBenchError) as e:
        extract(SeedEcho(), "test-seeded", ds, ds.manifest)
    msg = str(e.value)
    assert "click_x, click_y, click_z" in msg and "has no click_z" in msg and "'seeded'" in msg
    assert "--model-option seed_columns=X,Y,Z" in msg and str(tmp_path / "ds" / "manifest.csv") in msg


def test_seeds_that_are_the_target_are_refused_unless_allowed(tmp_path: Path) -> None:
    centres = [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (None, None, None)]
    ds = load_dataset_folder(_dataset(tmp_path / "ds", [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (7, 8, 9)], centres))
    targets = ("lesion_x", "lesion_y", "lesion_z")
    with pytest.raises(CTBenchError) as e:  # same values under other names: a copy of the answer
        extract(SeedEcho(), "test-seeded", ds, ds.manifest, targets=targets, task_name="task 'loc'")
    msg = str(e.value)
    assert "click_x (= lesion_x), click_y (= lesion_y), click_z (= lesion_z) are the target of task 'loc'" in msg
    assert "handed the answer" in msg and "allow_target_seed=true" in msg
    with pytest.raises(CTBenchError, match=r"lesion_x, lesion_y, lesion_z are the target"):  # the same columns
        check_target_leak(ds, targets, targets, "m")
    echo = SeedEcho()
    echo.allow_target_seed = True
    assert len(extract(echo, "test-seeded", ds, ds.manifest, targets=targets).features) == 3
    ds.manifest.loc[0, ["click_x", "click_y", "click_z"]] = [1.5, 2.5, 2.0]  # a click near the centre: allowed
    check_target_leak(ds, targets, ("click_x", "click_y", "click_z"), "m")


def test_case_seeds_name_the_case_and_column() -> None:
    cases = pd.DataFrame({"case_id": ["a", "b", "c"], "x": [1, "oops", 3], "y": [2, 2, np.inf], "z": [3, 3, 3]})
    got = case_seeds(cases, ("x", "y", "z"))
    assert got["a"].tolist() == [1.0, 2.0, 3.0]
    assert got["b"].startswith("case 'b' has no seed point: column x is 'oops', not a finite number")
    assert got["c"].startswith("case 'c' has no seed point: column y is inf, not a finite number")


def test_seed_helpers() -> None:
    assert parse_seed_columns(" a, b ,c") == ("a", "b", "c") == parse_seed_columns(["a", "b", "c"])
    for bad in ("a,b", "a,a,b", "a,,b"):
        with pytest.raises(CTBenchError, match="three distinct manifest columns"):
            parse_seed_columns(bad, "fmcib")
    assert seeded_key("ab" * 32, (1.0, 2.0, 3.0)) == seeded_key("ab" * 32, np.array([1.0, 2.0, 3.0]))
    assert seeded_key("ab" * 32, (1.0, 2.0, 3.0)) != seeded_key("ab" * 32, (1.0, 2.0, 3.0 + 1e-9))
    with pytest.raises(CTBenchError, match=SEED_META_KEY):
        seed_of(type("V", (), {"meta": {}})(), "fmcib")
