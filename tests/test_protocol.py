"""The fair-comparison rules of docs/protocol.md, proven through the path users hit: the
``ctbench run`` command line with tuning on, on the small phantom."""

import json

import numpy as np
import pandas as pd
import pytest

from ctbench.registry import MODELS
from tests.cli_helpers import run_cli as _cli
from tests.fakes import CARD, ConstantEncoder, HistogramEncoder

if "test-constant" not in MODELS:
    MODELS.register("test-constant")(ConstantEncoder)


class WideHistogramEncoder(HistogramEncoder):
    """The histogram encoder with its 24 bins repeated 4 times: another embedding size (96)."""

    card = CARD.model_copy(update={"name": "test-histogram-wide", "embedding_dim": 96})

    def encode(self, volume):
        f = super().encode(volume)
        rng = np.random.default_rng(0)  # the same fixed mixing for every case
        mix = rng.normal(size=(24, 96))
        return type(f)((f.embedding @ mix).astype(np.float32))


if "test-histogram-wide" not in MODELS:
    MODELS.register("test-histogram-wide")(WideHistogramEncoder)




def _run(monkeypatch, capsys, folder, out, model, task, trials=4, *extra) -> dict:
    code, stdout, err = _cli(monkeypatch, capsys, "run", "--model", model, "--task", task, "--dataset",
                             str(folder), "--weights", "random", "--trials", str(trials), "--bootstrap", "200",
                             "--device", "cpu", "--out", str(out), *extra)
    assert code == 0, err[-2000:]
    return json.loads((out / "result.json").read_text())


def test_test_cases_never_reach_tuning_and_are_scored_once(small_phantom, tmp_path, monkeypatch, capsys):
    """A spy on every probe fit and on the bootstrap: while tuning, no test case is fitted on
    or predicted; the refit predicts the test split once and the bootstrap scores it once."""
    import ctbench.engine as engine
    import ctbench.runner as runner
    from ctbench.tasks.classification import ClassificationTask

    splits, fits, scored = {}, [], []
    real_split, real_fit, real_boot = runner._split, ClassificationTask.fit_predict, engine.bootstrap_metrics

    def spy_split(task, dataset, rows, feats, name):
        splits[name] = real_split(task, dataset, rows, feats, name)
        return splits[name]

    def spy_fit(self, params, X_train, y_train, X_eval, seeds):
        fits.append((X_train.copy(), X_eval.copy()))
        return real_fit(self, params, X_train, y_train, X_eval, seeds)

    def spy_boot(metrics, y, pred, groups, **kw):
        scored.append(np.asarray(y).copy())
        return real_boot(metrics, y, pred, groups, **kw)

    monkeypatch.setattr(runner, "_split", spy_split)
    monkeypatch.setattr(ClassificationTask, "fit_predict", spy_fit)
    monkeypatch.setattr(engine, "bootstrap_metrics", spy_boot)
    result = _run(monkeypatch, capsys, small_phantom, tmp_path / "spy", "test-histogram", "classification", 5)

    test_rows = {r.tobytes() for r in splits["test"].X}
    assert len(fits) == 5 + 1  # five tuning trials, one refit (a linear or MLP probe)
    for X_train, X_eval in fits[:-1]:
        assert not test_rows & {r.tobytes() for r in X_train}
        assert not test_rows & {r.tobytes() for r in X_eval}
        assert len(X_eval) == len(splits["val"].X)
    X_fit, X_test = fits[-1]
    assert not test_rows & {r.tobytes() for r in X_fit}
    assert {r.tobytes() for r in X_test} == test_rows
    assert len(scored) == 1 and np.array_equal(scored[0], splits["test"].y)
    assert result["probe"]["trials"] == 5 == result["probe"]["trials_requested"]


def test_embedding_size_does_not_change_the_search(small_phantom, tmp_path, monkeypatch, capsys):
    """A 24-d and a 96-d model draw the same startup trials (same seed, same dimension-free
    space); the effective penalty follows the dimension; the budget equals completed trials."""
    import optuna

    db = f"sqlite:///{tmp_path / 'studies.db'}"
    results = [_run(monkeypatch, capsys, small_phantom, tmp_path / m, m, "classification", 12, "--storage", db)
               for m in ("test-histogram", "test-histogram-wide")]
    studies = [optuna.load_study(study_name=r["probe"]["study"], storage=db) for r in results]
    startup = [[t.params for t in s.trials[:10]] for s in studies]
    assert startup[0] == startup[1]
    for r, s in zip(results, studies):
        assert r["probe"]["trials"] == 12 == sum(t.state.name == "COMPLETE" for t in s.trials)
        params, penalty = r["probe"]["best_params"], r["probe"]["effective_penalty"]
        dim = r["model"]["card"]["embedding_dim"]
        if "c_per_dim" in params:
            assert penalty["C"] == pytest.approx(params["c_per_dim"] / dim)
        else:
            assert penalty["alpha"] == pytest.approx(params.get("alpha_per_dim", params.get("l2_per_dim")) * dim)


@pytest.mark.parametrize("task", ["classification", "regression", "survival", "retrieval"])
def test_a_constant_encoder_scores_chance(small_phantom, tmp_path, monkeypatch, capsys, task):
    """Identical features for every scan: predictions cannot depend on the case, so AUROC and
    C-index are exactly 0.5, R^2 is at most 0 and retrieval equals its chance values."""
    result = _run(monkeypatch, capsys, small_phantom, tmp_path / task, "test-constant", task)
    m = result["metrics"]
    if task == "classification":
        assert m["auroc"]["value"] == 0.5 and m["auroc"]["ci_low"] == m["auroc"]["ci_high"] == 0.5
    elif task == "regression":
        assert m["r2"]["value"] <= 1e-9 and m["pearson_r"]["value"] is None
    elif task == "survival":
        assert m["c_index"]["value"] == 0.5
    else:
        chance = result["protocol"]["chance"]
        for name in ("label_recall@1", "label_recall@5", "instance_recall@1", "instance_map"):
            assert m[name]["value"] == pytest.approx(chance[name], abs=1e-12), name
    if task != "retrieval":
        preds = pd.read_csv(tmp_path / task / "predictions.csv")
        p_cols = [c for c in preds.columns if c.startswith("p_") or c == "risk"]
        assert (preds[p_cols].nunique() == 1).all()  # one prediction for every test case


def test_a_probe_fit_that_fails_fails_its_trial_not_the_run(small_phantom, tmp_path, monkeypatch, capsys):
    """A Cox fit that does not converge (here: forced for the first two fits) is recorded as a
    failed trial; the run completes its budget with the other trials."""
    from lifelines.exceptions import ConvergenceError

    from ctbench.tasks import survival_probes

    fit, calls = survival_probes.PCACox.fit, []

    def diverge(self, X, y):
        calls.append(1)
        if len(calls) <= 2:
            raise ConvergenceError("Convergence halted due to matrix inversion problems")
        return fit(self, X, y)

    monkeypatch.setattr(survival_probes.PCACox, "fit", diverge)
    result = _run(monkeypatch, capsys, small_phantom, tmp_path / "cox", "test-histogram", "survival", 6)
    probe = result["probe"]
    assert probe["trials"] == 6 and probe["best_params"]["probe"] == "coxph"
    assert probe["trials_failed"] >= 1 and "ConvergenceError" in probe["failures"][0]


def test_convergence_warnings_are_counted_per_trial(small_phantom, tmp_path, monkeypatch, capsys):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from ctbench.tasks.regression import RegressionTask

    real = RegressionTask.fit_predict

    def warn_twice(self, *a, **k):
        warnings.warn("lbfgs failed to converge", ConvergenceWarning)
        warnings.warn("lbfgs failed to converge", ConvergenceWarning)
        warnings.warn("unrelated chatter", UserWarning)
        return real(self, *a, **k)

    monkeypatch.setattr(RegressionTask, "fit_predict", warn_twice)
    result = _run(monkeypatch, capsys, small_phantom, tmp_path / "w", "test-histogram", "regression", 3)
    warned = result["probe"]["convergence_warnings"]
    assert warned["per_trial"] == {"0": 2, "1": 2, "2": 2} and warned["tuning"] == 6
    assert warned["refit"] == 2 * len(result["probe"]["seeds"])


def test_train_fraction_subsets_every_split_the_probe_is_fitted_on(small_phantom, tmp_path, monkeypatch, capsys):
    manifest = pd.read_csv(small_phantom / "manifest.csv")
    patients = manifest.groupby("split")["patient_id"].nunique()
    result = _run(monkeypatch, capsys, small_phantom, tmp_path / "f", "test-histogram", "regression", 3,
                  "--train-fraction", "0.5")
    split, probe = result["split"], result["probe"]
    assert split["patients"]["train"] == -(-patients["train"] // 2)
    assert split["patients"]["val"] == -(-patients["val"] // 2)
    assert split["patients"]["test"] == patients["test"]  # the test split is never subset
    assert probe["fitted_cases"] == split["counts"]["train"] + split["counts"]["val"]
    assert probe["fitted_cases"] < probe["available_cases"]["train"] + probe["available_cases"]["val"]


def test_survival_horizons_come_from_training_events_only(small_phantom):
    """Changing the test split's event times leaves the time-dependent AUC horizons alone."""
    from ctbench.datasets import load_dataset_folder
    from ctbench.tasks.survival import SurvivalTask

    ds = load_dataset_folder(small_phantom)
    spec = ds.card.task("survival").model_copy(update={"horizons": ()})
    before = SurvivalTask(spec, ds).horizons
    test = ds.manifest["split"] == "test"
    ds.manifest.loc[test, "time"] = ds.manifest.loc[test, "time"] * 100
    assert SurvivalTask(spec, ds).horizons == before
    train = ds.manifest[(ds.manifest["split"] == "train") & (ds.manifest["event"] == 1)]["time"]
    assert before == pytest.approx(tuple(np.quantile(train, [0.25, 0.5, 0.75])))


def test_study_names_carry_the_probe_code(small_phantom, tmp_path, monkeypatch):
    """Editing a task's probe code gives a new study: stale trials never mix with new code."""
    import shutil

    import ctbench.tasks.survival_probes as sp
    from ctbench.datasets import load_dataset_folder
    from ctbench.probe_code import probe_code_hash, probe_modules
    from ctbench.tasks.survival import SurvivalTask

    ds = load_dataset_folder(small_phantom)
    task = SurvivalTask(ds.card.task("survival"), ds)
    assert {"ctbench.tasks.survival", "ctbench.tasks.survival_probes", "ctbench.probes",
            "ctbench.engine"} <= set(probe_modules(task))
    first = probe_code_hash(task)
    copy = tmp_path / "survival_probes.py"
    shutil.copy(sp.__file__, copy)
    monkeypatch.setattr(sp, "__file__", str(copy))
    assert probe_code_hash(task) == first  # same source, same fingerprint
    copy.write_text(copy.read_text() + "\n# edited\n")
    assert probe_code_hash(task) != first


@pytest.mark.parametrize("task", ["localisation", "segmentation", "report-generation"])
def test_a_constant_encoder_scores_chance_on_dense_and_text_tasks(small_phantom, tmp_path, monkeypatch, capsys,
                                                                   task):
    """The same tokens for every scan: a report generator writes one report for all; a dense
    head only knows where the scan lies (its token grid's world positions), so it can learn a
    position prior at best, which scores no better than that prior computed here without any
    model: each scan's centre plus the training cases' mean offset of the lesion from it."""
    import ctbench.engine as engine

    monkeypatch.setattr(engine, "N_PROBE_SEEDS", 1)
    result = _run(monkeypatch, capsys, small_phantom, tmp_path / task, "test-constant", task, 1,
                  "--train-fraction", "0.5")
    m, preds = result["metrics"], pd.read_csv(tmp_path / task / "predictions.csv")
    if task == "report-generation":
        assert preds["p_report"].nunique() == 1
        assert m["finding_f1"]["ci_low"] <= m["finding_f1"]["value"] <= m["finding_f1"]["ci_high"]
    elif task == "localisation":
        import nibabel as nib

        manifest = pd.read_csv(small_phantom / "manifest.csv").set_index("case_id")
        cols = ["lesion_x", "lesion_y", "lesion_z"]
        img = {c: nib.load(str(small_phantom / p)) for c, p in manifest["image"].items()}
        centre = {c: i.affine[:3, :3] @ ((np.array(i.shape) - 1) / 2) + i.affine[:3, 3] for c, i in img.items()}
        train = manifest[(manifest["split"] == "train") & manifest[cols].notna().all(axis=1)]
        offset = np.mean([train.loc[c, cols].to_numpy(float) - centre[c] for c in train.index], axis=0)
        truth = preds[[f"y_{c}" for c in cols]].to_numpy()
        prior = np.stack([centre[c] + offset for c in preds["case_id"]])
        prior_error = np.linalg.norm(truth - prior, axis=1).mean()
        assert m["centre_error_mm"]["value"] >= 0.9 * prior_error
    else:
        assert m["dice_macro"]["value"] < 0.3
