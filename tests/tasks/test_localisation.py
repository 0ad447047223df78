"""Localisation from token grids through the real runner on the phantom (anisotropic,
reoriented scans; a rotated 12 mm token grid of the encoder's own), the shared token cache, and
the attention-pooling head and metrics."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import ctbench.engine as engine
import ctbench.tasks.localisation as loc
import ctbench.tasks.segmentation as seg
from ctbench.runner import RunConfig, run
from ctbench.tasks.localisation import AttentionPool, LocalisationTask, centre_errors, mean_centre_error
from ctbench.types import Features
from tests.dense_fakes import DenseNoiseEncoder, DenseOracleEncoder, record_head_devices, register

CELL_MM = 12.0


def _run(folder, out, model, task="localisation", **kw):
    cfg = dict(model=model, task=task, dataset=str(folder), weights="random", trials=2, seed=0,
               device="cpu", out=str(out), n_boot=200)
    return run(RunConfig(**{**cfg, **kw}))


def _lesion_cases_only(src, dst):
    """The phantom's cases with a lesion, as a dataset of its own (same image files)."""
    dst.mkdir()
    m = pd.read_csv(src / "manifest.csv")
    m = m[m["lesion_x"].notna()].copy()
    for col in ("image", "mask"):
        m[col] = [str(src / p) for p in m[col]]
    m.to_csv(dst / "manifest.csv", index=False)
    (dst / "dataset.json").write_text((src / "dataset.json").read_text())
    return dst, len(m)


def test_oracle_tokens_localise_within_a_token_and_feed_segmentation_from_the_cache(
        small_phantom, tmp_path, monkeypatch):
    """Tokens that mark organ identity (the largest lesion its own) on a rotated 12 mm grid:
    the predicted world centre is within one token of the truth on every scan's own geometry.
    Segmentation then runs on the same cached grids without re-extracting a case."""
    folder, n_lesion = _lesion_cases_only(small_phantom, tmp_path / "lesions")
    model = register("test-dense-oracle-12mm", DenseOracleEncoder, CELL_MM)
    path, loc = _run(folder, tmp_path / "loc", model)
    m = loc["metrics"]
    assert m["centre_error_mm"]["value"] < CELL_MM
    assert m["centre_error_mm"]["ci_low"] <= m["centre_error_mm"]["value"] <= m["centre_error_mm"]["ci_high"]
    assert m["hit_rate_20mm"]["value"] == 1.0 and m["hit_rate_10mm"]["value"] >= 0.75
    assert loc["task"]["direction"] == "minimize"
    assert loc["probe"]["seeds"] == [0, 1, 2]  # a stochastic head: refitted with three seeds
    assert loc["timings"]["cases_extracted"] == n_lesion
    preds = pd.read_csv(path.parent / json.loads(path.read_text())["predictions_file"])
    assert preds["error_mm"].mean() == pytest.approx(m["centre_error_mm"]["value"])
    y = preds[["y_lesion_x", "y_lesion_y", "y_lesion_z"]].to_numpy()
    p = preds[["p_lesion_x", "p_lesion_y", "p_lesion_z"]].to_numpy()
    np.testing.assert_allclose(centre_errors(y, p), preds["error_mm"])

    monkeypatch.setattr(seg, "HEADS", ("linear",))  # quick: the decoder has its own tests
    monkeypatch.setattr(engine, "N_PROBE_SEEDS", 1)  # quick: multi-seed refits are tested above
    _, sg = _run(folder, tmp_path / "seg", model, task="segmentation", trials=1, train_fraction=0.5)
    assert sg["probe"]["seeds"] == [0]
    assert sg["timings"]["cases_extracted"] == 0
    assert sg["timings"]["cases_cached"] == n_lesion
    assert 0.5 < sg["metrics"]["dice_macro"]["value"] <= 1.0  # 12 mm cells: coarse but right


def test_random_tokens_stay_near_chance(small_phantom, tmp_path, monkeypatch):
    """Noise tokens: the head can only learn where lesions tend to lie within the grid (its
    position embedding), many tokens off; that still beats the mean training centre in world
    space, which ignores where each scan's field of view is. Cases without a lesion are left
    out."""
    monkeypatch.setattr(engine, "N_PROBE_SEEDS", 1)  # quick: one refit
    model = register("test-dense-noise-12mm", DenseNoiseEncoder, CELL_MM)
    path, noise = _run(small_phantom, tmp_path / "noise", model)
    manifest = pd.read_csv(small_phantom / "manifest.csv")
    assert noise["excluded_without_target"] == int(manifest["lesion_x"].isna().sum())
    cols = ["lesion_x", "lesion_y", "lesion_z"]
    fit = manifest[manifest["split"].isin(["train", "val"])][cols].dropna().mean().to_numpy()
    test = manifest[manifest["split"] == "test"][cols].dropna().to_numpy()
    baseline = mean_centre_error(test, np.broadcast_to(fit, test.shape))
    err = noise["metrics"]["centre_error_mm"]["value"]
    assert 2 * CELL_MM < err < baseline  # two cells off on average (the oracle lands within one)
    assert noise["metrics"]["hit_rate_10mm"]["value"] <= 0.25


def test_attention_pool_returns_the_softmax_weighted_mean_of_cell_centres():
    torch.manual_seed(0)
    head = AttentionPool(channels=2, width=4)
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 20.0, 0.0]])
    tokens, pos = torch.randn(3, 2), torch.zeros(3, 3)
    logits = head.score(head.tokens(tokens) + head.position(pos))[:, 0]
    expect = torch.softmax(logits, 0) @ centres
    torch.testing.assert_close(head(tokens, pos, centres), expect)
    with torch.no_grad():  # a dominant logit on cell 2 -> its centre
        head.score[1].weight.zero_()
        head.score[1].bias.zero_()
        head.tokens.weight.zero_()
        head.tokens.bias.zero_()
        head.tokens.weight[0, 0] = 100.0
        head.score[1].weight[0, 0] = 1.0
    tokens = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(head(tokens, pos, centres), centres[2], atol=1e-3, rtol=0)


def test_centre_error_and_hit_rates():
    from ctbench.tasks.localisation import _hit_rate

    y = np.zeros((4, 3))
    p = np.array([[3.0, 4.0, 0.0], [0, 0, 9.0], [12.0, 0, 0], [0, 30.0, 0]])
    np.testing.assert_allclose(centre_errors(y, p), [5.0, 9.0, 12.0, 30.0])
    assert mean_centre_error(y, p) == pytest.approx(14.0)
    assert [_hit_rate(r)(y, p) for r in (5, 10, 20)] == [0.25, 0.5, 0.75]


def _synthetic_cases(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Random 4-channel tokens on a 3^3 grid; the target is the world centre of the cell where
    channel 0 peaks."""
    rng = np.random.default_rng(0)
    X, y = np.empty(n, dtype=object), np.zeros((n, 3))
    affine = np.diag([4.0, 5.0, 6.0, 1.0])
    affine[:3, 3] = [-10.0, 3.0, 7.0]
    for i in range(n):
        tokens = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        X[i] = Features(np.zeros(1), tokens, affine)
        y[i] = affine[:3, :3] @ np.unravel_index(int(np.argmax(tokens[0])), (3, 3, 3)) + affine[:3, 3]
    return X, y


SYNTHETIC_PARAMS = {"probe": "attention-pool", "lr": 0.01, "weight_decay": 1e-4, "width": 16, "epochs": 10}


def test_head_trains_on_the_task_device_and_identical_fits_give_identical_centres(monkeypatch):
    """The head's weights are on the task's device while it trains; a fit is a function of its
    seed (two identical fits on the CPU predict the same centres, bit for bit)."""
    seen = record_head_devices(monkeypatch, loc)
    X, y = _synthetic_cases()
    task = LocalisationTask.__new__(LocalisationTask)
    task.device = "cpu"
    first, second = (task.fit_predict(SYNTHETIC_PARAMS, X[:4], y[:4], X[4:], [0]) for _ in range(2))
    assert seen == [torch.device("cpu")] * 2
    assert first.shape == (2, 3) and np.all(np.isfinite(first))
    np.testing.assert_array_equal(first, second)


def test_multi_seed_refit_averages_the_seeds_centres():
    """What the engine's multi-seed refit gets for a localisation head: per case, the mean of
    the centres each seed's head predicts (world mm), so averaging is meaningful here."""
    X, y = _synthetic_cases()
    task = LocalisationTask.__new__(LocalisationTask)
    task.device = "cpu"
    assert task.is_stochastic(SYNTHETIC_PARAMS)
    single = [task.fit_predict(SYNTHETIC_PARAMS, X[:4], y[:4], X[4:], [s]) for s in (0, 1)]
    both = task.fit_predict(SYNTHETIC_PARAMS, X[:4], y[:4], X[4:], [0, 1])
    assert both.shape == (2, 3) and not np.allclose(single[0], single[1])
    np.testing.assert_allclose(both, (single[0] + single[1]) / 2, rtol=0, atol=1e-4)


def test_batched_attention_pool_equals_the_case_by_case_one():
    torch.manual_seed(0)
    head = AttentionPool(channels=4, width=8)
    tokens, pos, centres = torch.randn(3, 10, 4), torch.rand(3, 10, 3), torch.randn(3, 10, 3) * 50
    batched = head(tokens, pos, centres)
    one_by_one = torch.stack([head(tokens[b], pos[b], centres[b]) for b in range(3)])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-4)


def test_batched_training_follows_the_case_by_case_loop(monkeypatch):
    """On one grid shape and without early stopping, the batched fit takes the same steps as the
    earlier loop (each case's loss over the batch size, backpropagated one case at a time), so
    it predicts the same centres up to float rounding."""
    import ctbench.tasks.dense_train as dense_train
    from ctbench.tasks.dense import TokenScaler

    monkeypatch.setattr(dense_train, "PLATEAU_EPOCHS", 10**6)
    X, y = _synthetic_cases(10)
    task = LocalisationTask.__new__(LocalisationTask)
    task.device = "cpu"
    got = task.fit_predict(SYNTHETIC_PARAMS, X[:8], y[:8], X[8:], [3])

    scaler = TokenScaler(X[:8])
    cases = [loc._case(f, scaler) for f in X]
    torch.manual_seed(3)
    head = AttentionPool(4, SYNTHETIC_PARAMS["width"])
    opt = torch.optim.AdamW(head.parameters(), lr=SYNTHETIC_PARAMS["lr"], weight_decay=SYNTHETIC_PARAMS["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=SYNTHETIC_PARAMS["epochs"] * 2)
    rng = np.random.default_rng(3)
    for _ in range(SYNTHETIC_PARAMS["epochs"]):
        order = rng.permutation(8)
        for s in range(0, 8, 4):
            opt.zero_grad()
            for i in order[s : s + 4]:
                toks, pos, centres, origin = cases[i]
                rel = torch.from_numpy(y[i] - origin).float()
                (torch.nn.functional.smooth_l1_loss(head(toks, pos, centres), rel) / 4).backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        expect = np.stack([head(*cases[i][:3]).double().numpy() + cases[i][3] for i in (8, 9)])
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-3)


def test_cases_with_different_grid_shapes_are_localised():
    """Grids of two shapes train in batches of one shape each and every case gets a centre."""
    X, y = _synthetic_cases(8)
    for i in (1, 4, 6):
        t = X[i].tokens[:, :2].astype(np.float32)
        X[i] = Features(np.zeros(1), t, X[i].token_affine)
        peak = np.unravel_index(int(np.argmax(t[0])), t.shape[1:])
        y[i] = X[i].token_affine[:3, :3] @ peak + X[i].token_affine[:3, 3]
    task = LocalisationTask.__new__(LocalisationTask)
    task.device = "cpu"
    pred = task.fit_predict({**SYNTHETIC_PARAMS, "epochs": 30}, X[:6], y[:6], X[6:], [0])
    assert pred.shape == (2, 3) and np.all(np.isfinite(pred))
    train = next(iter(task.fit_cache().entries.values()))[2]
    assert [g.tolist() for g in train.data.groups] == [[0, 2, 3, 5], [1, 4]]


def test_the_probe_code_fingerprint_covers_the_training_loop():
    from ctbench.probe_code import probe_modules

    names = probe_modules(LocalisationTask.__new__(LocalisationTask))
    assert {"ctbench.tasks.localisation", "ctbench.tasks.dense", "ctbench.tasks.dense_train"} <= set(names)
