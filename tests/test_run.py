"""End to end through the real runner on a small phantom with a deterministic test encoder."""

import json

import numpy as np
import pandas as pd
import pytest

from ctbench.errors import CTBenchError
from ctbench.runner import RunConfig, run


def _cfg(folder, out, **kw):
    base = dict(model="test-histogram", task="classification", dataset=str(folder), weights="random",
                trials=6, seed=0, device="cpu", out=str(out), n_boot=200)
    base.update(kw)
    return RunConfig(**base)


def test_result_file_fields_and_predictions(small_phantom, tmp_path):
    path, result = run(_cfg(small_phantom, tmp_path / "r1"))
    on_disk = json.loads(path.read_text())
    for field in ("ctbench_version", "git_sha", "model", "task", "split", "probe", "metrics",
                  "timings", "environment", "failures", "schema_version"):
        assert field in on_disk
    assert on_disk["model"]["weights"] == {"choice": "random", "sha256": "random", "random_init": True, "path": None}
    assert on_disk["model"]["card"]["name"] == "test-histogram"
    assert on_disk["probe"]["trials"] == 6 and on_disk["probe"]["sampler"] == "TPESampler"
    assert set(on_disk["metrics"]) == {"auroc", "auprc", "balanced_accuracy", "f1"}
    auroc = on_disk["metrics"]["auroc"]
    assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"]
    # predictions beside the result, one row per test case, recomputing the reported AUROC
    preds = pd.read_csv(path.parent / on_disk["predictions_file"])
    assert len(preds) == on_disk["split"]["counts"]["test"]
    from sklearn.metrics import roc_auc_score

    targets = on_disk["task"]["targets"]
    y = preds[[f"y_{t}" for t in targets]].to_numpy()
    p = preds[[f"p_{t}" for t in targets]].to_numpy()
    # the macro average over the labels whose test cases hold both classes (a label with one
    # class has no AUROC and is left out, as the task warns)
    defined = [j for j in range(y.shape[1]) if len(set(y[:, j])) == 2]
    assert defined
    expected = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in defined])
    assert expected == pytest.approx(auroc["value"])


def test_rerun_is_identical_and_uses_cache(small_phantom, tmp_path, ctbench_home):
    _, first = run(_cfg(small_phantom, tmp_path / "a"))
    _, second = run(_cfg(small_phantom, tmp_path / "b"))
    assert first["timings"]["cases_extracted"] > 0
    assert second["timings"]["cases_extracted"] == 0
    assert second["timings"]["cases_cached"] == first["timings"]["cases_extracted"]
    assert first["metrics"] == second["metrics"]
    assert first["probe"]["best_params"] == second["probe"]["best_params"]
    # a fresh study (other storage) with the same seed gives the same numbers too
    _, third = run(_cfg(small_phantom, tmp_path / "c", storage=f"sqlite:///{tmp_path / 'other.db'}"))
    assert third["metrics"] == first["metrics"]


def test_interrupted_extraction_resumes(small_phantom, tmp_path, monkeypatch):
    from tests.fakes import HistogramEncoder

    real = HistogramEncoder.encode
    calls = {"n": 0}

    def dies_after_five(self, volume):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        return real(self, volume)

    monkeypatch.setattr(HistogramEncoder, "encode", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(small_phantom, tmp_path / "x"))
    monkeypatch.setattr(HistogramEncoder, "encode", real)
    _, result = run(_cfg(small_phantom, tmp_path / "y"))
    manifest = pd.read_csv(small_phantom / "manifest.csv")
    assert result["timings"]["cases_cached"] >= 4  # completed batches were kept
    assert result["timings"]["cases_cached"] + result["timings"]["cases_extracted"] == len(manifest)


def test_failing_cases_are_recorded_or_stop_with_strict(small_phantom, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_phantom, broken)
    manifest = pd.read_csv(broken / "manifest.csv")
    victims = manifest[manifest["split"] == "train"]["case_id"].tolist()[:2]
    first = broken / manifest.set_index("case_id").loc[victims[0], "image"]
    first.write_bytes(first.read_bytes()[:200])  # truncated file
    second = broken / manifest.set_index("case_id").loc[victims[1], "image"]
    second.unlink()  # missing file
    _, result = run(_cfg(broken, tmp_path / "out"))
    failed = {f["case_id"]: f["reason"] for f in result["failures"]}
    assert set(failed) == set(victims)
    assert str(first.name) in failed[victims[0]]
    assert "does not exist" in failed[victims[1]]
    assert result["split"]["counts"]["train"] == (manifest["split"] == "train").sum() - 2
    with pytest.raises(CTBenchError, match=victims[0]):
        run(_cfg(broken, tmp_path / "out2", strict=True))


def test_missing_label_column_and_unknown_task(small_phantom, tmp_path):
    import shutil

    ds = tmp_path / "nolabel"
    shutil.copytree(small_phantom, ds)
    m = pd.read_csv(ds / "manifest.csv").drop(columns=["kidney_cyst"])
    m.to_csv(ds / "manifest.csv", index=False)
    with pytest.raises(CTBenchError, match="lacks column.*kidney_cyst"):
        run(_cfg(ds, tmp_path / "o"))
    with pytest.raises(CTBenchError, match="Did you mean classification"):
        run(_cfg(small_phantom, tmp_path / "o", task="clasification"))


ORACLE_COLUMNS = ("lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion",
                  "liver_volume_ml", "lesion_burden_ml")


@pytest.fixture
def oracle(small_phantom, monkeypatch):
    from ctbench.registry import MODELS
    from tests.fakes import OracleEncoder, oracle_table

    if "test-oracle" not in MODELS:
        MODELS.register("test-oracle")(OracleEncoder)
    manifest = pd.read_csv(small_phantom / "manifest.csv")
    monkeypatch.setattr(OracleEncoder, "table", oracle_table(manifest, ORACLE_COLUMNS))
    return "test-oracle"


def test_ground_truth_features_beat_chance_and_shuffled_labels_do_not(small_phantom, tmp_path, oracle):
    """Through the real pipeline: features that carry the truth are learnt (AUROC near 1); the
    same features against shuffled labels stay near chance."""
    import shutil

    _, real = run(_cfg(small_phantom, tmp_path / "real", model=oracle, trials=8))
    shuffled = tmp_path / "shuffled"
    shutil.copytree(small_phantom, shuffled)
    m = pd.read_csv(shuffled / "manifest.csv")
    rng = np.random.default_rng(0)
    for col in ("lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion"):
        m[col] = rng.permutation(m[col].to_numpy())
    m.to_csv(shuffled / "manifest.csv", index=False)
    _, shuf = run(_cfg(shuffled, tmp_path / "shuf", model=oracle, trials=8))
    assert real["metrics"]["auroc"]["value"] > 0.95
    assert shuf["metrics"]["auroc"]["value"] < 0.75
