"""Tuning curves: best-so-far and Dodge et al. (2019)'s expected maximum validation score,
against hand-computed values and the properties the closed form must have."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import product

import numpy as np
import pytest

from ctbench.tuning_curve import best_so_far, expected_max, fit_seconds, trial_seconds, tuning_curve


def test_hand_computed_example():
    # scores 0.6, 0.9, 0.7 (trial order); sorted 0.6 <= 0.7 <= 0.9, N = 3
    # n=1: mean = 2.2 / 3
    # n=2: 0.6*(1/9) + 0.7*(4/9 - 1/9) + 0.9*(1 - 4/9) = (0.6 + 2.1 + 4.5) / 9 = 7.2 / 9
    # n=3: 0.6*(1/27) + 0.7*(8/27 - 1/27) + 0.9*(1 - 8/27) = (0.6 + 4.9 + 17.1) / 27 = 22.6 / 27
    values = [0.6, 0.9, 0.7]
    assert expected_max(values, "maximize") == pytest.approx([2.2 / 3, 7.2 / 9, 22.6 / 27], abs=1e-12)
    assert best_so_far(values, "maximize") == [0.6, 0.9, 0.9]
    # minimising (an error in mm): the mirror image, expected minimum
    # n=2: 0.6*(1 - 4/9) + 0.7*(4/9 - 1/9) + 0.9*(1/9) = (3.0 + 2.1 + 0.9) / 9 = 6.0 / 9
    assert expected_max(values, "minimize") == pytest.approx([2.2 / 3, 6.0 / 9, (0.6 * 19 + 0.7 * 7 + 0.9) / 27])
    assert best_so_far(values, "minimize") == [0.6, 0.6, 0.6]
    assert tuning_curve(values, "maximize") == {"best_so_far": [0.6, 0.9, 0.9],
                                                "expected_max": expected_max(values, "maximize")}


def test_matches_enumerating_every_draw():
    """The closed form equals the mean best over all N^n equally likely draws with replacement."""
    values = [0.3, 0.8, 0.5, 0.8]
    for n in (1, 2, 3):
        draws = [max(c) for c in product(values, repeat=n)]
        assert expected_max(values, "maximize")[n - 1] == pytest.approx(np.mean(draws), abs=1e-12)
        lows = [min(c) for c in product(values, repeat=n)]
        assert expected_max(values, "minimize")[n - 1] == pytest.approx(np.mean(lows), abs=1e-12)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_properties_on_random_scores(direction):
    """Monotone in n (non-decreasing when maximising), the mean at n=1, bounded by and tending
    to the best observed score; best-so-far is monotone and ends at the best score."""
    rng = np.random.default_rng(0)
    sign = 1 if direction == "maximize" else -1
    for _ in range(200):
        n_obs = int(rng.integers(1, 40))
        values = rng.normal(size=n_obs) * rng.choice([0.01, 1, 100])
        if rng.random() < 0.3:
            values = np.round(values, 1)  # ties
        e = np.asarray(expected_max(values, direction, budget=300)) * sign
        best = max(values * sign)
        assert len(e) == 300
        assert e[0] == pytest.approx(np.mean(values * sign), rel=1e-9, abs=1e-12)
        assert np.all(np.diff(e) >= -1e-9 * (1 + abs(best)))
        assert np.all(e <= best + 1e-9 * (1 + abs(best)))
        assert e[-1] == pytest.approx(best, rel=0.05, abs=0.05 * (np.ptp(values) + 1e-12))
        b = np.asarray(best_so_far(values, direction)) * sign
        assert np.all(np.diff(b) >= 0) and b[-1] == best and b[0] == values[0] * sign


def test_refuses_undefined_scores_and_directions():
    with pytest.raises(ValueError, match="finite"):
        expected_max([0.5, float("nan")], "maximize")
    with pytest.raises(ValueError, match="direction"):
        best_so_far([0.5], "up")
    assert tuning_curve([], "maximize") == {"best_so_far": [], "expected_max": []}


def test_fit_seconds_timed_or_from_trial_times():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert trial_seconds(0.25, start, start + timedelta(seconds=9)) == 0.25  # timed around the fit wins
    assert trial_seconds(None, start, start + timedelta(seconds=1.5)) == 1.5  # older studies: wall time
    assert trial_seconds(None, None, None) is None
    assert fit_seconds([0.4, None, 0.1, 0.2]) == {"per_trial": [0.4, None, 0.1, 0.2], "median": 0.2}
    assert fit_seconds([]) == {"per_trial": [], "median": None}


def test_a_run_records_its_tuning_curve_and_fit_times(small_phantom, tmp_path, monkeypatch, capsys, ctbench_home):
    """``ctbench run``: the curve is computed from the stored study's budget trials (values in
    trial-number order) and each trial's fit time lies within the trial's own wall time."""
    import json

    import optuna

    from tests.cli_helpers import run_cli

    out = tmp_path / "res"
    code, _, err = run_cli(monkeypatch, capsys, "run", "--model", "test-histogram", "--task", "classification",
                           "--dataset", str(small_phantom), "--weights", "random", "--trials", "4",
                           "--bootstrap", "20", "--device", "cpu", "--out", str(out))
    assert code == 0, err[-2000:]
    probe = json.loads((out / "result.json").read_text())["probe"]
    study = optuna.load_study(study_name=probe["study"], storage=f"sqlite:///{ctbench_home / 'studies' / 'optuna.db'}")
    trials = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number)
    values = [t.value for t in trials]
    assert len(values) == 4
    curve = probe["tuning_curve"]
    assert curve["best_so_far"] == [max(values[:n]) for n in range(1, 5)]  # AUROC: maximised
    assert curve["best_so_far"][-1] == probe["best_validation_value"]
    for n in range(1, 5):
        assert curve["expected_max"][n - 1] == pytest.approx(np.mean([max(c) for c in product(values, repeat=n)]))
    fit = probe["trial_fit_s"]
    walls = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    assert len(fit["per_trial"]) == 4 and all(0 < s <= w + 1e-3 for s, w in zip(fit["per_trial"], walls))
    assert fit["median"] == pytest.approx(float(np.median(fit["per_trial"])))
