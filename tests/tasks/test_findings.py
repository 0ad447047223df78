"""The rule-based finding extractor on hand-written sentences and on the phantom's reports."""

import re

import numpy as np
import pandas as pd
import pytest

from ctbench.tasks.findings import (
    CTRATE_LABELS, LABELS, PHANTOM_LABELS, dataset_labels, extract, finding_vector, mentions,
    phantom_findings, sentences,
)


def _stated(text):
    return {label: status for label, status in extract(text).items() if status}


@pytest.mark.parametrize("text, expected", [
    # negation, forward and inside the mention
    ("No pleural effusion.", {"Pleural effusion": "negative"}),
    ("Without evidence of pleural effusion or pericardial effusion.",
     {"Pleural effusion": "negative", "Pericardial effusion": "negative"}),
    ("The lungs are clear, with no nodule.", {"Lung nodule": "negative"}),
    ("The heart is not enlarged.", {"Cardiomegaly": "negative"}),
    ("Negative for consolidation, atelectasis or bronchiectasis.",
     {"Consolidation": "negative", "Atelectasis": "negative", "Bronchiectasis": "negative"}),
    # post-negation
    ("The previously seen effusion has resolved.", {"Pleural effusion": "negative"}),
    ("Lymphadenopathy is absent.", {"Lymphadenopathy": "negative"}),
    # uncertainty, including hedges that look like negations
    ("Possible small nodule in the left upper lobe.", {"Lung nodule": "uncertain"}),
    ("Small opacity in the right lower lobe, probably a nodule.",
     {"Lung opacity": "uncertain", "Lung nodule": "uncertain"}),
    ("A small pericardial effusion cannot be excluded.", {"Pericardial effusion": "uncertain"}),
    ("Early consolidation is not ruled out.", {"Consolidation": "uncertain"}),
    # several findings in one sentence, negation scope and terminators
    ("nodule and effusion, no cyst",
     {"Lung nodule": "positive", "Pleural effusion": "positive", "Kidney cyst": "negative"}),
    ("No nodule, but a small effusion is present.",
     {"Lung nodule": "negative", "Pleural effusion": "positive"}),
    ("Emphysema and subsegmental atelectasis; no consolidation.",
     {"Emphysema": "positive", "Atelectasis": "positive", "Consolidation": "negative"}),
    # pseudo-negation: the finding is there
    ("No change in the known 6 mm nodule.", {"Lung nodule": "positive"}),
    # CT-RATE wording and organ disambiguation
    ("Atherosclerotic calcifications in the aorta and coronary arteries.",
     {"Arterial wall calcification": "positive", "Coronary artery wall calcification": "positive"}),
    ("Coronary artery calcification.", {"Coronary artery wall calcification": "positive"}),
    ("Pericardial effusion-thickening.", {"Pericardial effusion": "positive"}),
    ("Thyroid nodule. Subcutaneous emphysema. A simple cyst in the liver. Hepatic cyst.", {}),
    ("Cardiomegaly and a hiatal hernia.",
     {"Cardiomegaly": "positive", "Hiatal hernia": "positive"}),
    ("No lymph node was observed in pathological size.", {"Lymphadenopathy": "negative"}),
    ("Ground-glass opacities with interlobular septal thickening and mosaic attenuation.",
     {"Lung opacity": "positive", "Interlobular septal thickening": "positive",
      "Mosaic attenuation pattern": "positive"}),
    ("Peribronchial thickening. Fibrotic sequelae in the right lower lobe.",
     {"Peribronchial thickening": "positive", "Pulmonary fibrotic sequela": "positive"}),
    ("A central venous catheter and a pacemaker.", {"Medical material": "positive"}),
    ("Hypodense hepatic lesion measuring 17 mm. Simple renal cyst.",
     {"Liver lesion": "positive", "Kidney cyst": "positive"}),
    ("The liver is unremarkable. Kidneys are unremarkable without cysts.",
     {"Kidney cyst": "negative"}),
])
def test_hand_written_sentences(text, expected):
    assert _stated(text) == expected


def test_labels_and_policies():
    assert len(CTRATE_LABELS) == 18 and len(set(LABELS)) == 20
    assert set(PHANTOM_LABELS.values()) <= set(LABELS)
    j = LABELS.index("Lung nodule")
    # U-ones by default; U-zeros on request; a negated or unmentioned finding is 0 either way
    assert finding_vector("Possible nodule.")[j] == 1
    assert finding_vector("Possible nodule.", uncertain_positive=False)[j] == 0
    assert finding_vector("No nodule.")[j] == 0 and finding_vector("Normal study.").sum() == 0
    # report level: positive beats uncertain beats negative
    assert extract("No nodule in the right lung. Possible nodule on the left.")["Lung nodule"] \
        == "uncertain"
    assert extract("Possible nodule. IMPRESSION: Lung nodule.")["Lung nodule"] == "positive"


def test_dataset_labels_follow_the_manifest_columns():
    phantom = ["case_id", "report", "lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion"]
    assert dataset_labels(phantom) == ("Lung nodule", "Pleural effusion", "Liver lesion",
                                       "Kidney cyst")
    assert dataset_labels(["case_id", *CTRATE_LABELS, "report"]) == CTRATE_LABELS
    assert dataset_labels(["case_id", "report"]) == LABELS


def test_sentences_and_mentions():
    assert sentences("FINDINGS: A 5.5 mm nodule. IMPRESSION: nodule; no effusion") == [
        "a 5.5 mm nodule", "nodule", "no effusion"]
    # detokenised decoder output ("5 . 5", spaces before punctuation) reads the same
    assert sentences("a 5 . 5 mm nodule . no effusion .") == ["a 5.5 mm nodule", "no effusion"]
    (m,) = mentions("Moderate right pleural effusion.")
    assert (m.label, m.status, m.sentence[m.start:m.end]) == (
        "Pleural effusion", "positive", "effusion")


def test_phantom_reports_read_back_to_their_labels(small_phantom):
    """Every report of the small phantom yields exactly its manifest's four findings."""
    m = pd.read_csv(small_phantom / "manifest.csv")
    got = pd.DataFrame([phantom_findings(r) for r in m["report"]])
    pd.testing.assert_frame_equal(got, m[list(PHANTOM_LABELS)].astype(int))


def test_phantom_report_generator_varies_wording_and_stays_faithful():
    """Many sampled phantom patients (no images): labels read back exactly, and the reports vary
    in phrasing, negate absent findings, hedge some present ones and give measurements."""
    from ctbench.phantom import FINDINGS, _report
    from ctbench.phantom_anatomy import sample_patient

    reports, truth = [], []
    for i in range(300):
        p = sample_patient(np.random.default_rng([7, i]))
        reports.append(_report(p, np.random.default_rng([8, i])))
        truth.append({f: int(p.has(f)) for f in FINDINGS})
    assert [phantom_findings(r) for r in reports] == truth
    statuses = [m.status for r in reports for m in mentions(r)]
    assert {"positive", "uncertain", "negative"} <= set(statuses)
    assert all(r.startswith("FINDINGS: ") and " IMPRESSION: " in r for r in reports)
    assert sum(" mm " in r for r in reports) > 150
    normal_lungs = {r.split(". ")[0] for r, t in zip(reports, truth) if not t["lung_nodule"]}
    assert len(normal_lungs) >= 4  # absent findings are negated in several phrasings
    assert len(set(reports)) > 250  # only some all-normal reports coincide
    for r in reports:  # the impression names the same lobe as the findings
        findings, impression = r.split(" IMPRESSION: ")
        for lobe in re.findall(r"largest in the (\w+ \w+ lobe)", impression):
            assert lobe in findings
