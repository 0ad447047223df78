"""BLEU-4, ROUGE-L and finding F1 on hand-computed cases."""

import math

import numpy as np
import pytest

from ctbench.bootstrap import bootstrap_metrics
from ctbench.tasks import text_metrics as tm


def test_bleu4_hand_computed():
    # 1-4-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths -> no brevity penalty
    assert tm.bleu4(["The cat sat on the mat."], ["the cat sat on a mat"]) == pytest.approx(
        (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # all n-grams match but the hypothesis is 6 words for 8: BP = exp(1 - 8/6)
    assert tm.bleu4(["a b c d e f g h"], ["a b c d e f"]) == pytest.approx(math.exp(1 - 8 / 6))
    # corpus level: counts are pooled before the geometric mean (5+4)/(6+4), (3+3)/(5+3), ...
    pooled = (9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25
    assert tm.bleu4(["the cat sat on the mat", "w x y z"], ["the cat sat on a mat", "w x y z"]) \
        == pytest.approx(pooled)
    # an n-gram order without any match: 0 (nltk returns a value below 1e-70)
    no_match = tm.bleu4(["no 4-gram in common here"], ["common here no 4-gram"])
    assert no_match == pytest.approx(0, abs=1e-12)
    assert tm.bleu4(["same words"] * 2, ["same words"] * 2) == pytest.approx(0, abs=1e-12)
    assert tm.bleu4(["one two three four"], ["One, two; three four."]) == pytest.approx(1.0)


def test_rouge_l_hand_computed():
    # LCS(a b c d e, a c e f) = 3: P = 3/4, R = 3/5, F = 2PR/(P+R) = 2/3
    assert tm.rouge_l(["a b c d e"], ["a c e f"]) == pytest.approx(2 / 3)
    assert tm.rouge_l(["a b c d e", "x y"], ["a c e f", "x y"]) == pytest.approx((2 / 3 + 1) / 2)
    assert tm.rouge_l(["a b"], ["c d"]) == 0.0


REFS = ["A lung nodule. No pleural effusion.", "Pleural effusion and a renal cyst.",
        "Cardiomegaly."]
HYPS = ["A lung nodule and a pleural effusion.", "Renal cyst.", "No cardiomegaly."]


def test_finding_f1_hand_computed():
    # nodule TP; effusion FP (case 1) + FN (case 2); cyst TP; cardiomegaly FN
    tp, fp, fn = tm.finding_counts(REFS, HYPS)
    assert (tp.sum(), fp.sum(), fn.sum()) == (2, 1, 2)
    assert tm.finding_f1_micro(REFS, HYPS) == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert tm.finding_f1_macro(REFS, HYPS) == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert tm.finding_precision(REFS, HYPS) == pytest.approx(2 / 3)
    assert tm.finding_recall(REFS, HYPS) == pytest.approx(2 / 4)
    rows = {r["label"]: r for r in tm.per_label_scores(REFS, HYPS)}
    assert rows["Pleural effusion"] == {"label": "Pleural effusion", "support": 1, "tp": 0, "fp": 1,
                                        "fn": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert rows["Emphysema"]["f1"] is None


def test_uncertain_mentions_count_as_positive():
    assert tm.finding_f1_micro(["Lung nodule."], ["Possible small nodule."]) == 1.0
    assert tm.finding_f1_micro(["Lung nodule."], ["No nodule."]) == 0.0


def test_undefined_and_invalid_inputs_raise():
    with pytest.raises(ValueError):
        tm.finding_f1_micro(["Normal study."], ["No acute abnormality."])
    with pytest.raises(ValueError):
        tm.finding_f1_macro(["Normal."], ["Normal."])
    with pytest.raises(ValueError):
        tm.finding_precision(["Nodule."], ["Normal."])
    with pytest.raises(ValueError):
        tm.bleu4(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        tm.rouge_l([], [])


def test_metrics_bootstrap_on_object_arrays():
    y = np.array(REFS * 4, dtype=object)
    p = np.array(HYPS * 4, dtype=object)
    groups = np.repeat(np.arange(6), 2)
    est = bootstrap_metrics({"f1": tm.finding_f1_micro, "rouge": tm.rouge_l, "bleu": tm.bleu4},
                            y, p, groups, n_boot=50, seed=0)
    assert est["f1"].value == pytest.approx(4 / 7)
    assert est["f1"].ci_low <= est["f1"].value <= est["f1"].ci_high
    assert est["rouge"].n_boot == 50
