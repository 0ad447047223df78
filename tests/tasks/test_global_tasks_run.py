"""Regression, survival and retrieval through the real runner on the small phantom, with the
oracle encoder (true measurements) and its shuffled-label control."""

import json

import numpy as np
import pandas as pd
import pytest

from ctbench.runner import RunConfig, run
from tests.fakes import strong_survival

COLUMNS = ("lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion",
           "liver_volume_ml", "lesion_burden_ml")


@pytest.fixture
def oracle(small_phantom, monkeypatch):
    from ctbench.registry import MODELS
    from tests.fakes import OracleEncoder, oracle_table

    if "test-oracle" not in MODELS:
        MODELS.register("test-oracle")(OracleEncoder)
    manifest = pd.read_csv(small_phantom / "manifest.csv")
    monkeypatch.setattr(OracleEncoder, "table", oracle_table(manifest, COLUMNS))
    return "test-oracle"


def _run(folder, out, task, model, **kw):
    cfg = RunConfig(model=model, task=task, dataset=str(folder), weights="random", trials=6,
                    seed=0, device="cpu", out=str(out), n_boot=200, **kw)
    return run(cfg)


def _shuffled(src, dst, columns):
    import shutil

    shutil.copytree(src, dst)
    m = pd.read_csv(dst / "manifest.csv")
    perm = np.random.default_rng(1).permutation(len(m))
    for c in columns:
        m[c] = m[c].to_numpy()[perm]
    m.to_csv(dst / "manifest.csv", index=False)
    return dst


def test_regression_oracle_vs_shuffled(small_phantom, tmp_path, oracle):
    _, real = _run(small_phantom, tmp_path / "r", "regression", oracle)
    shuf = _shuffled(small_phantom, tmp_path / "s", ["liver_volume_ml", "lesion_burden_ml"])
    _, control = _run(shuf, tmp_path / "rs", "regression", oracle)
    assert real["metrics"]["r2"]["value"] > 0.9
    assert control["metrics"]["r2"]["value"] < 0.3
    m = real["metrics"]
    assert m["mae"]["value"] <= m["rmse"]["value"]
    assert real["task"]["direction"] == "maximize"


def test_survival_oracle_vs_shuffled_and_km_plot(small_phantom, tmp_path, oracle):
    strong = strong_survival(small_phantom, tmp_path / "strong")
    path, real = _run(strong, tmp_path / "v", "survival", oracle)
    shuf = _shuffled(strong, tmp_path / "s", ["time", "event"])
    _, control = _run(shuf, tmp_path / "vs", "survival", oracle)
    c_real, c_ctrl = real["metrics"]["c_index"]["value"], control["metrics"]["c_index"]["value"]
    assert c_real > 0.8 and c_ctrl < 0.7
    assert {"td_auc@365", "td_auc@730"} <= set(real["metrics"])
    assert (path.parent / "km.png").stat().st_size > 1000 and "km.png" in real["artifacts"]
    preds = pd.read_csv(path.parent / "predictions.csv")
    from lifelines.utils import concordance_index

    c = concordance_index(preds["y_time"], -preds["risk"], preds["y_event"])
    assert c == pytest.approx(c_real)


def test_retrieval_instance_and_label_protocols(small_phantom, tmp_path, oracle):
    path, res = _run(small_phantom, tmp_path / "q", "retrieval", oracle)
    m = res["metrics"]
    # the oracle embeds the findings: repeat scans (same findings) and same-label cases are near
    assert m["label_recall@5"]["value"] > 0.35  # chance: 0.05 (1 positive among 100)
    assert m["instance_recall@10"]["value"] >= m["instance_recall@1"]["value"]
    assert res["probe"] is None and res["protocol"]["queries"]["instance"] > 0
    assert json.loads(path.read_text())["split"]["counts"]["all"] == len(pd.read_csv(small_phantom / "manifest.csv"))


def test_train_fraction_is_nested_and_recorded(small_phantom, tmp_path, oracle):
    from ctbench.engine import Split
    from ctbench.runner import train_subset

    groups = np.repeat([f"p{i}" for i in range(20)], 2)
    split = Split(np.arange(40)[:, None], np.arange(40), groups, [str(i) for i in range(40)])
    sizes, prev = [], set()
    for f in (0.25, 0.5, 1.0):
        sub = train_subset(split, f, seed=3)
        ids = set(sub.case_ids)
        assert prev <= ids  # nested
        prev = ids
        sizes.append(len(set(sub.groups)))
    assert sizes == [5, 10, 20]
    _, res = _run(small_phantom, tmp_path / "f", "regression", oracle, train_fraction=0.5)
    assert res["probe"]["train_fraction"] == 0.5
    full = (pd.read_csv(small_phantom / "manifest.csv").query("split == 'train'")["patient_id"].nunique())
    assert res["split"]["patients"]["train"] == -(-full // 2)
