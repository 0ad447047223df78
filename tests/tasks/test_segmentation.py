"""Segmentation from token grids, through the real runner on the phantom (non-isotropic,
reoriented scans; a rotated token grid of its own), plus the decoder and the Dice metric."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import ctbench.engine as engine
import ctbench.tasks.segmentation as seg
from ctbench.runner import RunConfig, run
from ctbench.tasks.dense import read_labels
from ctbench.types import Features
from tests.dense_fakes import DenseNoiseEncoder, DenseOracleEncoder, record_head_devices, register

FINE_MM = 5.0  # oracle cells: fine enough for Dice > 0.9, coarse enough for a quick test
COARSE_MM = 12.0


def _run(folder, out, model, **kw):
    cfg = dict(model=model, task="segmentation", dataset=str(folder), weights="random", trials=1,
               seed=0, device="cpu", out=str(out), n_boot=200)
    return run(RunConfig(**{**cfg, **kw}))


def test_oracle_tokens_reach_high_dice_on_the_original_voxels(small_phantom, tmp_path, monkeypatch):
    """Tokens holding the organ labels of their cells on a rotated 5 mm grid: after the labels
    go onto that grid and the predictions come back to every scan's own (anisotropic,
    reoriented) voxels, Dice > 0.9. The linear head alone keeps this quick (the decoder has its
    own test below); a quarter of the training and validation patients suffices for a perfect
    feature; one refit seed (multi-seed averaging has its own test below)."""
    monkeypatch.setattr(seg, "HEADS", ("linear",))
    monkeypatch.setattr(engine, "N_PROBE_SEEDS", 1)
    model = register("test-dense-oracle-5mm", DenseOracleEncoder, FINE_MM)
    path, result = _run(small_phantom, tmp_path / "oracle", model, train_fraction=0.25)
    m = result["metrics"]
    assert m["dice_macro"]["value"] > 0.9
    for organ in ("lungs", "heart", "liver", "kidneys"):
        assert m[f"dice_{organ}"]["value"] > 0.9
    assert m["dice_bone"]["value"] > 0.75 and m["dice_lesion"]["value"] > 0.75
    assert m["dice_macro"]["ci_low"] <= m["dice_macro"]["value"] <= m["dice_macro"]["ci_high"]
    assert result["probe"]["best_params"]["probe"] == "linear"

    # the written masks are the predictions on each case's original grid: rescoring one
    # from disk gives the per-case Dice of predictions.csv
    preds = pd.read_csv(path.parent / json.loads(path.read_text())["predictions_file"])
    assert len(result["artifacts"]) == len(preds) == result["split"]["counts"]["test"]
    manifest = pd.read_csv(small_phantom / "manifest.csv").set_index("case_id")
    case = preds["case_id"].iloc[0]
    written = nib.load(str(path.parent / f"predicted_masks/{case}.nii.gz"))
    truth, affine = read_labels(small_phantom / manifest.loc[case, "mask"])
    np.testing.assert_allclose(written.affine, affine)
    got = np.asarray(written.dataobj)
    assert got.shape == truth.shape
    liver = 2 * np.sum((got == 3) & (truth == 3)) / (np.sum(got == 3) + np.sum(truth == 3))
    assert liver == pytest.approx(preds["dice_liver"].iloc[0])


def test_random_tokens_stay_near_chance(small_phantom, tmp_path, monkeypatch):
    """Noise tokens on the same kind of grid: nothing to learn, Dice near that of a constant
    (background) prediction, i.e. near 0."""
    monkeypatch.setattr(seg, "HEADS", ("linear",))
    monkeypatch.setattr(engine, "N_PROBE_SEEDS", 1)
    model = register("test-dense-noise-12mm", DenseNoiseEncoder, COARSE_MM)
    _, result = _run(small_phantom, tmp_path / "noise", model, train_fraction=0.2)
    assert result["metrics"]["dice_macro"]["value"] < 0.15


def _blocky_case(folder, name, rng, classes=3):
    """A 16^3 label map of random 2^3-voxel blocks (1 mm voxels) and 4^3 tokens, each holding
    the one-hot labels of its 8 blocks: sub-token detail only an upsampling head can draw."""
    blocks = rng.integers(0, classes, size=(8, 8, 8))
    labels = blocks.repeat(2, 0).repeat(2, 1).repeat(2, 2).astype(np.uint8)
    path = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(path))
    sub = blocks.reshape(4, 2, 4, 2, 4, 2).transpose(1, 3, 5, 0, 2, 4).reshape(8, 4, 4, 4)
    tokens = np.eye(classes, dtype=np.float32)[sub].transpose(0, 4, 1, 2, 3).reshape(8 * classes, 4, 4, 4)
    token_affine = np.diag([4.0, 4.0, 4.0, 1.0])
    token_affine[:3, 3] = 1.5  # token t covers voxels 4t..4t+3
    return Features(np.zeros(1), tokens, token_affine), seg.MaskTarget(name, path)


def test_decoder_draws_sub_token_detail_that_a_linear_head_cannot(tmp_path):
    rng = np.random.default_rng(0)
    cases = [_blocky_case(tmp_path, f"c{i}", rng) for i in range(8)]
    X = np.empty(8, dtype=object)
    y = np.empty(8, dtype=object)
    for i, (f, t) in enumerate(cases):
        X[i], y[i] = f, t
    assert seg.decoder_factor(X, y) == 4  # 4 mm tokens over 1 mm voxels
    task = seg.SegmentationTask.__new__(seg.SegmentationTask)
    task.label_names = {}
    scores = {}
    for probe, extra in (("linear", {}), ("decoder", {"width": 16})):
        params = {"probe": probe, "lr": 0.01, "weight_decay": 1e-4, "epochs": 20, **extra}
        pred = task.fit_predict(params, X[:6], y[:6], X[6:], [0])
        assert pred[0].probs.shape == ((3, 16, 16, 16) if probe == "decoder" else (3, 4, 4, 4))
        scores[probe] = seg.dice_macro(y[6:], pred)
    assert task.label_names == {1: "1", 2: "2"}  # labels found in the training masks
    assert scores["decoder"] > 0.95
    assert scores["linear"] < 0.6  # one label per 4 mm token cannot draw 2 mm blocks


def test_large_label_sets_train_on_majority_labels(tmp_path, monkeypatch):
    """Over ``SOFT_TARGET_LABELS`` labels the targets are stored as majority labels (int16, not
    a dense distribution per cell); the linear head still learns tokens that name their label."""
    monkeypatch.setattr(seg, "SOFT_TARGET_LABELS", 4)
    rng = np.random.default_rng(1)
    X, y = np.empty(6, dtype=object), np.empty(6, dtype=object)
    for i in range(6):
        tokens_labels = rng.integers(0, 6, size=(4, 4, 4))
        labels = tokens_labels.repeat(4, 0).repeat(4, 1).repeat(4, 2).astype(np.uint8)
        path = tmp_path / f"m{i}.nii.gz"
        nib.save(nib.Nifti1Image(labels, np.eye(4)), str(path))
        aff = np.diag([4.0, 4.0, 4.0, 1.0])
        aff[:3, 3] = 1.5
        X[i] = Features(np.zeros(1), np.eye(6, dtype=np.float32)[tokens_labels].transpose(3, 0, 1, 2), aff)
        y[i] = seg.MaskTarget(f"m{i}", path)
    task = seg.SegmentationTask.__new__(seg.SegmentationTask)
    task.label_names = {}
    params = {"probe": "linear", "lr": 0.05, "weight_decay": 1e-4, "epochs": 30}
    pred = task.fit_predict(params, X[:4], y[:4], X[4:], [0])
    keep, stored = y[0]._grids[next(iter(y[0]._grids))]
    assert keep is None and stored.dtype == np.int16 and stored.shape == (64,)
    assert seg.dice_macro(y[4:], pred) > 0.95


def test_dice_metrics_follow_monai_conventions(tmp_path):
    """Per case, per class Dice; classes absent from a case's truth are ignored (MONAI's
    ignore_empty); macro = mean over foreground classes of the mean over cases."""
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[:2] = 1
    truth[3, 3, 3] = 2
    path = tmp_path / "t.nii.gz"
    nib.save(nib.Nifti1Image(truth, np.eye(4)), str(path))
    t = seg.MaskTarget("t", path)
    pred_labels = truth.copy()
    pred_labels[1] = 0  # half the class-1 voxels missed
    probs = np.eye(3, dtype=np.float16)[pred_labels].transpose(3, 0, 1, 2)
    p = seg.SegPrediction(probs, np.eye(4))
    y, pr = np.array([t, t], dtype=object), np.array([p, p], dtype=object)
    table = seg.dice_table(y, pr)
    np.testing.assert_allclose(table[0], [2 * 31 / (47 + 31), 2 * 16 / (16 + 32), 1.0])
    assert seg.dice_macro(y, pr) == pytest.approx((2 * 16 / 48 + 1.0) / 2)
    assert seg._dice_of(2)(y, pr) == 1.0
    with pytest.raises(ValueError, match="label 5 is absent"):
        seg._dice_of(5)(y, pr)
    np.testing.assert_array_equal(p.labels(t)[0], pred_labels)


def _blocky_split(folder, n=6):
    rng = np.random.default_rng(0)
    X, y = np.empty(n, dtype=object), np.empty(n, dtype=object)
    for i in range(n):
        X[i], y[i] = _blocky_case(folder, f"c{i}", rng)
    return X, y


LINEAR = {"probe": "linear", "lr": 0.01, "weight_decay": 1e-4, "epochs": 10}


def test_head_trains_on_the_task_device_and_identical_fits_give_identical_probabilities(tmp_path, monkeypatch):
    """The head's weights are on the task's device while it trains; a fit is a function of its
    seed (two identical fits on the CPU give the same probabilities, bit for bit), and each
    cell's class probabilities sum to one."""
    seen = record_head_devices(monkeypatch, seg)
    X, y = _blocky_split(tmp_path)
    task = seg.SegmentationTask.__new__(seg.SegmentationTask)
    task.label_names, task.device = {}, "cpu"
    first, second = (task.fit_predict(LINEAR, X[:4], y[:4], X[4:], [0]) for _ in range(2))
    assert seen == [torch.device("cpu")] * 2
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_allclose(a.probs.astype(np.float32).sum(0), 1.0, atol=1e-2)  # float16 storage
    assert seg.dice_macro(y[4:], first) == seg.dice_macro(y[4:], second)


def test_multi_seed_refit_averages_the_seeds_probabilities(tmp_path):
    """What the engine's multi-seed refit gets for a segmentation head: per cell, the mean of
    the class probabilities of each seed's head (one grid per case whatever the seed), scored
    after the argmax, so averaging is meaningful here."""
    X, y = _blocky_split(tmp_path)
    task = seg.SegmentationTask.__new__(seg.SegmentationTask)
    task.label_names, task.device = {}, "cpu"
    assert task.is_stochastic(LINEAR)
    single = [task.fit_predict(LINEAR, X[:4], y[:4], X[4:], [s]) for s in (0, 1)]
    both = task.fit_predict(LINEAR, X[:4], y[:4], X[4:], [0, 1])
    for case in range(2):
        a, b = (p[case].probs.astype(np.float32) for p in single)
        assert not np.allclose(a, b, atol=1e-2)
        np.testing.assert_allclose(both[case].probs.astype(np.float32), (a + b) / 2, atol=1e-3)
        np.testing.assert_array_equal(both[case].affine, single[0][case].affine)


def _fp_cases(tmp_path):
    """Three 4^3 cases on their own voxel sizes: A holds organ (1) and lesion (2), B the organ
    only, C neither; a perfect predictor and a painter that also draws an 8-voxel lesion,
    where the truth is background, on B and C."""
    spacings = {"A": (1.0, 1.0, 1.0), "B": (2.0, 1.5, 3.0), "C": (1.0, 1.0, 1.0)}
    y, perfect, painter = (np.empty(3, dtype=object) for _ in range(3))
    for i, (name, sp) in enumerate(spacings.items()):
        truth = np.zeros((4, 4, 4), np.uint8)
        if name != "C":
            truth[:2] = 1
        if name == "A":
            truth[2:, 2:, 2:] = 2
        affine = np.diag([*sp, 1.0])
        affine[:3, 3] = (-10.0, 5.0, 2.0)
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(truth, affine), str(path))
        y[i] = seg.MaskTarget(name, path)
        painted = truth.copy()
        painted[2:, 2:, 2:] = 2  # background on B and C: the lesion is painted on every case
        for out, labels in ((perfect, truth), (painter, painted)):
            out[i] = seg.SegPrediction(np.eye(3, dtype=np.float16)[labels].transpose(3, 0, 1, 2), affine)
    return y, perfect, painter


def test_false_positives_on_cases_without_the_structure_are_reported(tmp_path):
    """Dice ignores cases without a class, so painting it everywhere costs no Dice; the
    false-positive rate and volume on those cases (lower is better) see it."""
    from ctbench.bootstrap import bootstrap_metrics

    y, perfect, painter = _fp_cases(tmp_path)
    task = seg.SegmentationTask.__new__(seg.SegmentationTask)
    task.label_names = {1: "organ", 2: "lesion"}
    metrics = task.metrics()
    score = {who: {n: fn(y, p) for n, fn in metrics.items()} for who, p in (("perfect", perfect), ("painter", painter))}
    for name in ("dice_macro", "dice_organ", "dice_lesion"):
        assert score["painter"][name] == score["perfect"][name] == 1.0
    assert all(score["perfect"][f"fp_{m}_{c}"] == 0 for m in ("rate", "ml") for c in ("organ", "lesion", "macro"))
    lesion_ml = (8 * 2.0 * 1.5 * 3.0 + 8 * 1.0) / 1000 / 2  # 8 voxels on B (9 mm^3) and C (1 mm^3)
    assert score["painter"]["fp_rate_lesion"] == 1.0
    assert score["painter"]["fp_ml_lesion"] == pytest.approx(lesion_ml)
    assert score["painter"]["fp_rate_organ"] == 0.0  # C never shows organ
    assert score["painter"]["fp_rate_macro"] == 0.5
    assert score["painter"]["fp_ml_macro"] == pytest.approx(lesion_ml / 2)
    # lower is better for every false-positive measure, the main metric keeps its direction
    for name in ("fp_rate_macro", "fp_ml_macro", "fp_rate_lesion", "fp_ml_organ"):
        assert task.direction_of(name) == "minimize"
    assert task.direction_of("dice_macro") == task.direction_of("dice_lesion") == "maximize"
    # undefined (NaN) only where every case holds the class; per-case volumes in predictions.csv
    est = bootstrap_metrics(metrics, y[:1], painter[:1], np.array(["a"]), n_boot=5, seed=0)
    assert np.isnan(est["fp_rate_lesion"].value) and est["dice_macro"].value == 1.0
    cols = task.prediction_columns(y, painter)
    np.testing.assert_allclose(cols["fp_ml_lesion"], [np.nan, 0.072, 0.008])
    np.testing.assert_allclose(cols["fp_ml_organ"], [np.nan, np.nan, 0.0])


def _soft_targets(rng, shape, classes, rows):
    """Label distributions over ``rows`` of ``classes`` labels (others zero) on a grid."""
    t = np.zeros((classes, *shape), np.float32)
    t[:rows] = rng.dirichlet(np.ones(rows), size=shape).transpose(3, 0, 1, 2)
    return torch.from_numpy(t)


def test_batched_loss_is_monai_dice_ce_of_each_case_on_its_valid_cells():
    """The batched loss equals MONAI's DiceCELoss(softmax, class weights) computed case by case
    on the case's valid cells only, averaged over the cases, for soft and hard targets."""
    from monai.losses import DiceCELoss

    from ctbench.tasks.segmentation_heads import dice_ce_loss

    rng = np.random.default_rng(0)
    B, K, shape = 3, 4, (3, 4, 5)
    logits = torch.from_numpy(rng.standard_normal((B, K, *shape)).astype(np.float32))
    valid = torch.from_numpy(rng.random((B, *shape)) < 0.8)
    weight = torch.tensor([0.5, 1.0, 1.5, 1.0])
    soft = torch.stack([_soft_targets(rng, shape, K, rows) for rows in (4, 2, 3)]) * valid[:, None]
    hard = torch.from_numpy(rng.integers(0, K, size=(B, *shape))).masked_fill(~valid, -1).short()
    monai = DiceCELoss(softmax=True, weight=weight)
    for target in (soft, hard):
        ref = []
        for b in range(B):
            keep = valid[b].reshape(-1)
            case = logits[b].reshape(K, -1)[:, keep][None]
            if target.is_floating_point():
                t = target[b].reshape(K, -1)[:, keep][None]
            else:
                t = nn_one_hot(target[b].reshape(-1)[keep].long(), K)
            ref.append(monai(case, t))
        got = dice_ce_loss(logits, target, valid, weight)
        torch.testing.assert_close(got, torch.stack(ref).mean(), rtol=1e-5, atol=1e-6)


def nn_one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, classes).T[None].float()


def test_decoder_output_is_upsampled_coarse_logits_plus_sub_cells_in_place():
    from ctbench.tasks.segmentation_heads import ConvDecoder, pixel_shuffle, upsample

    x = torch.randn(2, 3, 4, 3, 5)
    ref = torch.nn.functional.interpolate(x, scale_factor=4, mode="trilinear", align_corners=False)
    torch.testing.assert_close(upsample(x, 4), ref, rtol=1e-5, atol=1e-5)
    f, k = 2, 3
    sub = torch.randn(1, k * f**3, 2, 3, 4)
    out = pixel_shuffle(sub, f)
    assert out.shape == (1, k, 4, 6, 8)
    c, (i, j, l), (a, b, d) = 2, (1, 0, 1), (1, 2, 3)
    assert out[0, c, a * f + i, b * f + j, d * f + l] == sub[0, c * f**3 + (i * f + j) * f + l, a, b, d]
    torch.manual_seed(0)
    head = ConvDecoder(channels=5, classes=k, width=8, factor=f)
    tokens = torch.randn(2, 5, 2, 3, 4)
    h = head.out(head.body(tokens))
    fine = upsample(h[:, :k], f) + pixel_shuffle(h[:, k:], f)
    torch.testing.assert_close(head(tokens), fine)  # its per-class axis filters start as the identity
    with torch.no_grad():
        head.smooth.weight[2, 1] = torch.tensor([0.0, 0.5, 0.5])  # class 1, last axis: mean with the next cell
    expect = fine.clone()
    expect[:, 1] = 0.5 * (fine[:, 1] + torch.nn.functional.pad(fine[:, 1, :, :, 1:], (0, 1)))
    torch.testing.assert_close(head(tokens), expect)


def test_label_grids_and_training_sets_are_made_once_per_case_and_case_set(tmp_path, monkeypatch):
    """Labels go onto a case's grid once in a run; a training set (standardised tokens and label
    grids stacked) is built once for the tuning trials and once for the refit, whose seeds share it."""
    X, y = _blocky_split(tmp_path)
    calls = {"grid": 0, "build": 0}
    to_grid, build = seg.labels_to_grid, seg.build_training_set

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(seg, "labels_to_grid", counting("grid", to_grid))
    monkeypatch.setattr(seg, "build_training_set", counting("build", build))
    task = seg.SegmentationTask.__new__(seg.SegmentationTask)
    task.label_names, task.device = {}, "cpu"
    for trial_lr in (0.01, 0.02):  # two trials on the training split
        task.fit_predict({**LINEAR, "lr": trial_lr}, X[:4], y[:4], X[4:], [0])
    assert calls == {"grid": 4, "build": 1}
    task.fit_predict(LINEAR, np.concatenate([X[:4], X[4:]]), np.concatenate([y[:4], y[4:]]), X[4:], [0, 1, 2])
    assert calls == {"grid": 6, "build": 2}  # only the validation cases' labels were new


def test_cases_with_different_grid_shapes_train_together(tmp_path):
    """Token grids of two shapes (a model that crops each scan differently): cases are grouped
    by shape for training and prediction, each prediction on its own case's grid."""
    X, y = _blocky_split(tmp_path)
    for i in (1, 3, 5):  # these keep only the first half of their tokens along the last axis
        X[i] = Features(np.zeros(1), X[i].tokens[..., :2].astype(np.float32), X[i].token_affine)
    task = seg.SegmentationTask.__new__(seg.SegmentationTask)
    task.label_names, task.device = {}, "cpu"
    pred = task.fit_predict({**LINEAR, "epochs": 30}, X[:4], y[:4], X[4:], [0])
    assert pred[0].probs.shape == (3, 4, 4, 4) and pred[1].probs.shape == (3, 4, 4, 2)
    train = next(iter(task.fit_cache().entries.values()))[2]
    assert [g.tolist() for g in train.data.groups] == [[0, 2], [1, 3]]
    assert seg.dice_table(y[4:5], pred[:1])[0, 1:].min() > 0.3  # learnt from both shapes


def test_the_probe_code_fingerprint_covers_the_heads_and_the_training_loop():
    from ctbench.probe_code import probe_modules

    names = probe_modules(seg.SegmentationTask.__new__(seg.SegmentationTask))
    for module in ("ctbench.tasks.segmentation", "ctbench.tasks.segmentation_heads", "ctbench.tasks.segmentation_fit",
                   "ctbench.tasks.dense_train", "ctbench.tasks.dense"):
        assert module in names
