"""Read-back and re-scoring of saved predictions (the leaderboards' paired bootstrap) for the
categories whose scoring layout differs from what ``fit_predict`` returns: every metric on the
layout equals the task's own metric, on the full set and on patient resamples, after a round
trip through predictions.csv."""

from __future__ import annotations

import io
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import ctbench.tasks.segmentation as seg
from ctbench.bootstrap import patient_resamples
from ctbench.datasets import TaskSpec
from ctbench.leaderboards.paired import align
from ctbench.leaderboards.schema import TaskInfo
from ctbench.leaderboards.scoring import can_score, make_scorer
from ctbench.errors import CTBenchError
from ctbench.tasks import report_scores as rs
from ctbench.tasks import retrieval_scores
from ctbench.tasks import text_metrics as tm
from ctbench.tasks.report_generation import ReportGenerationTask, _names
from ctbench.tasks.retrieval import RetrievalTask


def _round_trip(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` written as predictions.csv and read as the leaderboards read it."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    buf.seek(0)
    return pd.read_csv(buf, dtype={"case_id": str, "patient_id": str})


def _value(fn, y, pred) -> float:
    try:
        return float(fn(y, pred))
    except ValueError:
        return float("nan")


def _assert_same(task_metrics: dict, layout_metrics: dict, task_arrays, layout_arrays, patients) -> None:
    """Every task metric equals its layout twin on the full set and on 100 patient resamples."""
    assert set(task_metrics) <= set(layout_metrics)
    (y, pred), (ly, lpred) = task_arrays, layout_arrays
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for idx in [np.arange(len(patients))] + patient_resamples(patients, 100, 1):
            for name, fn in task_metrics.items():
                want, got = _value(fn, y[idx], pred[idx]), _value(layout_metrics[name], ly[idx], lpred[idx])
                assert got == pytest.approx(want, abs=1e-9, nan_ok=True), name


def _segmentation_cases(tmp_path):
    """Six random label maps on anisotropic voxels and three-class predictions: case 2 holds a
    label (5) beyond the head's classes, case 3 lacks label 2."""
    rng = np.random.default_rng(0)
    y, pred = np.empty(6, dtype=object), np.empty(6, dtype=object)
    for i in range(6):
        truth = rng.integers(0, 3, size=(5, 5, 5)).astype(np.uint8)
        if i == 2:
            truth[0, 0, 0] = 5
        if i == 3:
            truth[truth == 2] = 0
        affine = np.diag([1.0, 1.5, 2.0, 1.0])
        nib.save(nib.Nifti1Image(truth, affine), str(tmp_path / f"{i}.nii.gz"))
        y[i] = seg.MaskTarget(str(i), tmp_path / f"{i}.nii.gz")
        pred[i] = seg.SegPrediction(rng.random((3, 5, 5, 5)).astype(np.float16), affine)
    return y, pred


def test_segmentation_rescores_dice_and_false_positives_without_the_masks(tmp_path):
    """Named, unnamed, test-only and never-seen labels: Dice per structure and macro, and the
    false-positive rates and volumes, from predictions.csv alone."""
    y, pred = _segmentation_cases(tmp_path)
    names = {1: "organ", 2: "lesion", 7: "never"}  # 3, 4 and 5 are unnamed; 7 appears nowhere
    task = seg.SegmentationTask.__new__(seg.SegmentationTask)
    task.label_names = dict(names)
    frame = pd.DataFrame({"case_id": [str(i) for i in range(6)], "patient_id": list("aabbcc"),
                          **task.prediction_columns(y, pred)})
    spec = TaskSpec(name="s", category="segmentation", targets=("mask",), main_metric="dice_macro", label_names=names)
    scoring = seg.SegmentationTask.for_scoring(spec)
    layout = scoring.from_prediction_frame(_round_trip(frame))
    assert layout[0].shape == (6, 2 * 6)  # organ, lesion, 3, 4, 5, never
    _assert_same(task.metrics(), scoring.rescoring_metrics(), (y, pred), layout, frame["patient_id"].to_numpy())
    assert {"dice_3", "fp_rate_5", "fp_ml_never"} <= set(scoring.rescoring_metrics())


def _reports():
    refs = ["Small lung nodule in the right upper lobe. No pleural effusion. The liver is normal.",
            "Liver lesion noted. Simple kidney cyst on the left.", "Normal study. No nodule.",
            "Possible pleural effusion. Lung nodule in the left lower lobe.", "", "None"]
    hyps = ["Lung nodule in the right upper lobe. No pleural effusion.", "No liver lesion. Kidney cyst present.",
            "Normal study. No nodule.", "Pleural effusion. No nodule in the left lower lobe.", "Kidney cyst.",
            "None"]
    return np.array(refs, dtype=object), np.array(hyps, dtype=object)


def test_report_generation_rescores_findings_and_text_metrics_from_per_case_values():
    """Finding F1 (micro, macro), precision, recall, ROUGE-L and corpus BLEU-4 from per-case
    finding vectors, ROUGE-L and BLEU counts (reports of one word, empty or read as NaN
    included)."""
    refs, hyps = _reports()
    labels = ("Lung nodule", "Pleural effusion", "Liver lesion", "Kidney cyst")
    task = ReportGenerationTask.for_scoring(TaskSpec(name="r", category="report-generation", targets=("report",),
                                                     main_metric="finding_f1"))
    frame = pd.DataFrame({"case_id": list("abcdef"), "patient_id": list("aabbcd"), "y_report": refs,
                          "p_report": hyps, "y_findings": [_names(r, labels) for r in refs],
                          "p_findings": [_names(h, labels) for h in hyps], **rs.per_case_columns(refs, hyps)})
    layout = task.from_prediction_frame(_round_trip(frame))
    metrics = {"finding_f1": lambda r, h: tm.finding_f1_micro(r, h, labels),
               "finding_f1_macro": lambda r, h: tm.finding_f1_macro(r, h, labels),
               "finding_precision": lambda r, h: tm.finding_precision(r, h, labels),
               "finding_recall": lambda r, h: tm.finding_recall(r, h, labels),
               "bleu4": tm.bleu4, "rouge_l": tm.rouge_l}
    _assert_same(metrics, task.rescoring_metrics(), (refs, hyps), layout, frame["patient_id"].to_numpy())
    # a corpus with 4-gram matches: BLEU-4 far from 0, still equal
    stats = np.array([rs.bleu_statistics(r, h) for r, h in zip(refs[:4], hyps[:4])])
    assert rs.bleu_from_statistics(stats) == pytest.approx(tm.bleu4(refs[:4], hyps[:4]), abs=1e-12)
    assert tm.bleu4(refs[:4], hyps[:4]) > 0.2


def test_retrieval_rescores_per_case_sums_of_its_queries():
    """Per-query rows summed per case: the ratio of sums is the mean over the queries of any
    set of patients, and the cases align across models as one row each."""
    rng = np.random.default_rng(0)
    rows = []
    for case in range(12):
        patient = f"p{case // 2}"
        for label in ("a", "b")[: 1 + case % 2]:
            rows.append({"protocol": "label", "label": label, "case_id": f"c{case}", "patient_id": patient,
                         **{f"recall@{k}": rng.random() for k in retrieval_scores.KS}})
        rows.append({"protocol": "instance", "label": "", "case_id": f"c{case}", "patient_id": patient,
                     **{f"recall@{k}": rng.random() for k in retrieval_scores.KS}, "ap": rng.random()})
    frame = _round_trip(pd.DataFrame(rows))
    for main in ("label_recall@5", "instance_map"):
        spec = TaskSpec(name="r", category="retrieval", targets=("patient_id", "a"), main_metric=main)
        task = RetrievalTask.for_scoring(spec)
        cases = task.per_case_frame(frame)
        assert cases["case_id"].is_unique and len(cases) == 12
        protocol = retrieval_scores.protocol_of(main)
        queries = frame[frame["protocol"] == protocol].reset_index(drop=True)
        column = retrieval_scores.protocol_metrics(protocol)[main]
        metric = task.rescoring_metrics()[main]
        y, pred = task.from_prediction_frame(cases)
        for idx in [np.arange(12)] + patient_resamples(cases["patient_id"].to_numpy(), 50, 0):
            drawn = cases["case_id"].to_numpy()[idx]
            want = np.mean(np.concatenate([queries.loc[queries["case_id"] == c, column].to_numpy() for c in drawn]))
            assert metric(y[idx], pred[idx]) == pytest.approx(want, abs=1e-12)
    assert set(retrieval_scores.protocol_metrics("label")) | set(retrieval_scores.protocol_metrics("instance")) == set(
        RetrievalTask.metric_table(task))


def test_scorers_come_from_the_registered_class():
    info = dict(version="1", targets=("x",), direction="maximize", dataset="d")
    assert not can_score(TaskInfo(name="t", category="not-installed", main_metric="m", **info))
    assert make_scorer(TaskInfo(name="t", category="not-installed", main_metric="m", **info), pd.DataFrame()) is None
    unknown = TaskInfo(name="t", category="regression", main_metric="no-such-metric", **info)
    frame = pd.DataFrame({"case_id": ["a"], "patient_id": ["a"], "y_x": [1.0], "p_x": [2.0]})
    assert can_score(unknown) and make_scorer(unknown, frame) is None


def test_a_case_listed_twice_is_refused_where_cases_are_aligned():
    twice = pd.DataFrame({"case_id": ["a", "a"], "patient_id": ["p", "p"]})
    with pytest.raises(CTBenchError, match="lists case_id 'a' twice"):
        align({"m": [twice]}, "d/t")
