"""Rule-based clinical finding extractor for radiology reports (negation- and uncertainty-aware).

Labels: the 18 CT-RATE abnormalities plus the phantom's two findings CT-RATE lacks (liver
lesion, kidney cyst); the phantom's lung nodule and pleural effusion are CT-RATE labels already.

Per sentence, each label's term patterns give *mentions*; a mention is

- ``negative`` when a negation trigger ("no", "without", "negative for", "absence of", ...)
  precedes it within ``WINDOW`` words with no scope terminator ("but", "however", "which",
  ...) in between, sits inside the mention ("the heart is not enlarged"), or a post-trigger
  follows it ("... is absent", "... not seen", "... has resolved", "... is unlikely");
- ``uncertain`` when a hedge ("possible", "probable", "likely", "suspicious for", "cannot be
  excluded", ...) is in the same window; hedges that read as negations ("cannot be excluded",
  "not ruled out") are never negations;
- ``positive`` otherwise.

A report's label is positive > uncertain > negative over its mentions, ``None`` when never
mentioned. Binary labels count *uncertain as positive* (CheXpert's "U-ones"): a radiologist who
writes "possible nodule" is reporting the nodule, and the phantom writes hedged phrasings only
for findings that are present. Deterministic: same text, same labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

Status = Literal["positive", "uncertain", "negative"]

CTRATE_LABELS: tuple[str, ...] = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema",
    "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela",
    "Pleural effusion", "Mosaic attenuation pattern", "Peribronchial thickening",
    "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
)
# phantom manifest column -> label
PHANTOM_LABELS: dict[str, str] = {
    "lung_nodule": "Lung nodule", "liver_lesion": "Liver lesion",
    "kidney_cyst": "Kidney cyst", "pleural_effusion": "Pleural effusion",
}
LABELS: tuple[str, ...] = CTRATE_LABELS + ("Liver lesion", "Kidney cyst")
UNCERTAIN_AS_POSITIVE = True  # the "U-ones" policy used by every metric
WINDOW = 8  # words a negation or hedge reaches forward (NegEx uses 5-6; lists need more)
POST_WINDOW = 5  # words a post-trigger reaches back

_GAP = r"[\w\s,/-]{0,30}?"  # a few words between two parts of a term
_NOT_CORONARY = r"(?<!coronary )"
_OTHER_ORGAN = r"(?:thyroid|adrenal|liver|hepatic|renal|kidneys?|breast|splenic|spleen|pancrea\w*)"
TERMS: dict[str, tuple[str, ...]] = {
    "Medical material": (
        r"\bmedical (?:material|device)s?\b", r"\bcatheters?\b", r"\bpacemakers?\b",
        r"\bstents?\b", r"\bportacath\b", r"\bport(?:-a-cath)? catheter\b",
        r"\b(?:central|venous) (?:venous )?lines?\b", r"\b(?:endotracheal|nasogastric|chest|"
        r"tracheostomy|drainage) tubes?\b", r"\bsternotomy wires?\b", r"\bsurgical clips?\b",
        r"\b(?:metallic|metal) (?:clips?|implants?|material)\b", r"\bprosthe(?:sis|ses|tic)\b"),
    "Arterial wall calcification": (
        r"\b(?:aortic|aorta|arterial|atherosclerotic|vascular|carotid|iliac)" + _GAP
        + r"\bcalcifi\w*", r"\bcalcifi\w*" + _GAP + r"\b(?:aort\w*|" + _NOT_CORONARY
        + r"arter(?:y|ies|ial)|carotid)\b", r"\bcalcific atherosclero\w*"),
    "Cardiomegaly": (
        r"\bcardiomegaly\b", r"\b(?:heart|cardiac)(?: size| silhouette)?(?: is| appears| was)?"
        r"(?: not)? (?:mildly |moderately |markedly |slightly )?enlarg\w*",
        r"\benlarged (?:heart|cardiac)\b", r"\bincreased (?:heart|cardiac) size\b"),
    "Pericardial effusion": (
        r"\bpericardial[\s-]+(?:thickening[\s-]+)?(?:effusions?|fluid)\b",
        r"\bpericardial and pleural effusions\b"),
    "Coronary artery wall calcification": (
        r"\bcoronary\b" + _GAP + r"\bcalcifi\w*", r"\bcalcifi\w*" + _GAP + r"\bcoronar\w*"),
    "Hiatal hernia": (r"\bhiat(?:al|us) hernia\w*", r"\bhernia\w*" + _GAP + r"\bhiatus\b"),
    "Lymphadenopathy": (
        r"\b(?:lymph)?adenopath\w*", r"\benlarged" + _GAP + r"\blymph nodes?\b",
        r"\blymph nodes?\b" + _GAP + r"\b(?:enlarged|pathologic\w*)"),
    "Emphysema": (r"(?<!subcutaneous )\bemphysema\w*",),
    "Atelectasis": (r"\batelecta\w*", r"\bcollapsed? (?:lung|lobe)\b"),
    "Lung nodule": (
        r"(?<!thyroid )(?<!adrenal )(?<!hepatic )(?<!liver )(?<!renal )(?<!breast )(?<!lymph )"
        r"\b(?:micro)?nodules?\b(?!\s+(?:in|of|within)\s+(?:the\s+)?(?:(?:left|right)\s+)?"
        + _OTHER_ORGAN + r")",),
    "Lung opacity": (
        r"\bopacit(?:y|ies)\b", r"\bground[- ]glass\b", r"\binfiltrat\w*",
        r"\b(?:increased|patchy) densit(?:y|ies)\b"),
    "Pulmonary fibrotic sequela": (
        r"\bfibro(?:tic|sis|atelecta\w*)\b", r"\bsequela\w*", r"\bscar(?:ring|s)?\b",
        r"\bhoneycomb\w*", r"\bparenchymal bands?\b"),
    "Pleural effusion": (
        r"(?<!pericardial )(?<!pericardial-)(?<!thickening-)\beffusions?\b",
        r"\bhydrothorax\b", r"\bpleural fluid\b"),
    "Mosaic attenuation pattern": (r"\bmosaic\w*", r"\bair[- ]trapping\b"),
    "Peribronchial thickening": (
        r"\b(?:peri)?bronch(?:ial|ovascular)(?: walls?)?" + _GAP + r"thicken\w*",
        r"\bthicken\w*" + _GAP + r"\b(?:peri)?bronch(?:ial|ovascular)\b"),
    "Consolidation": (r"\bconsolidat\w*",),
    "Bronchiectasis": (r"\bbronchi(?:ol)?ecta\w*",),
    "Interlobular septal thickening": (
        r"\bseptal thicken\w*", r"\binterlobular sept\w* (?:are |is )?thicken\w*",
        r"\bthicken\w* (?:of )?(?:the )?interlobular sept\w*", r"\bcrazy[- ]paving\b"),
    "Liver lesion": (
        r"\b(?:liver|hepatic)\b" + _GAP + r"\b(?:lesions?|masse?s?|metasta\w*|hypodensit\w*)",
        r"\b(?:lesions?|masse?s?|metasta\w*|hypodensit\w*)" + _GAP + r"\b(?:liver|hepatic)\b"),
    "Kidney cyst": (
        r"\b(?:renal|kidneys?)\b" + _GAP + r"\bcysts?\b",
        r"\bcysts?\b" + _GAP + r"\b(?:renal|kidneys?)\b",
        r"(?<!hepatic )(?<!liver )(?<!thyroid )(?<!pericardial )(?<!bronchogenic )\bcysts?\b"
        r"(?![\w\s,]{0,25}\b" + _OTHER_ORGAN.replace("renal|kidneys?|", "") + r"\b)"),
}
_COMPILED = {label: tuple(re.compile(p) for p in pats) for label, pats in TERMS.items()}
assert set(_COMPILED) == set(LABELS)

# hedges (also the phrases that look like negations but are not)
_HEDGE = re.compile(
    r"\b(?:possible|possibly|probable|probably|likely|suspicious for|suspected|suspicion of|"
    r"suggestive of|suggests?|questionable|equivocal|indeterminate|concerning for|may represent|"
    r"could represent|may be|might be|consider|differential|versus|vs|"
    r"(?:can ?not|could not|not) (?:be )?(?:excluded|ruled out))\b")
_NEG_PRE = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|absent|nor|neither|resolution of)\b")
_NEG_POST = re.compile(
    r"\b(?:absent|not (?:seen|identified|present|detected|demonstrated|visuali[sz]ed|observed)|"
    r"(?:has |have )?resolved|ruled out|excluded|unlikely)\b")
_PSEUDO = re.compile(
    r"\bno (?:significant |interval )?(?:change|increase|decrease|progression)\b|\bnot only\b")
_TERMINATOR = re.compile(
    r"\b(?:but|however|although|though|except|apart from|aside from|other than|whereas|while|yet|"
    r"which|with the exception of|there (?:is|are|was|were))\b")
_HEADER = re.compile(r"\b(?:findings|impression|conclusions?|technique|comparison|history|"
                     r"indication|clinical information)\s*:")
_SENTENCE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[;!?\n]")


@dataclass(frozen=True)
class Mention:
    """One label mentioned in one sentence, with where it sits and how it is stated."""

    label: str
    sentence: str
    start: int
    end: int
    status: Status


def sentences(text: str) -> list[str]:
    """Lower-cased sentences; decimal points and "5 . 5"-style detokenised numbers survive."""
    text = re.sub(r"(\d)\s*\.\s*(\d)", r"\1.\2", text.lower())
    text = _HEADER.sub(". ", text)
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _words(s: str) -> int:
    return len(re.findall(r"\w+", s))


def _spans(pattern: re.Pattern, sentence: str, ignore: list[tuple[int, int]]) -> list[re.Match]:
    return [m for m in pattern.finditer(sentence)
            if not any(a <= m.start() < b for a, b in ignore)]


def _reaches(trigger: re.Match, start: int, end: int, sentence: str, post: bool = False) -> bool:
    """Whether ``trigger`` governs the mention ``[start, end)`` of ``sentence``."""
    if start <= trigger.start() < end:  # inside the mention: "heart is not enlarged"
        return True
    if post:
        between = sentence[end:trigger.start()]
        return trigger.start() >= end and _words(between) <= POST_WINDOW \
            and not _TERMINATOR.search(between)
    between = sentence[trigger.end():start]
    return trigger.end() <= start and _words(between) <= WINDOW and not _TERMINATOR.search(between)


def _sentence_mentions(sentence: str) -> list[Mention]:
    hedges = _spans(_HEDGE, sentence, [])
    shielded = [(m.start(), m.end()) for m in hedges + list(_PSEUDO.finditer(sentence))]
    pre = _spans(_NEG_PRE, sentence, shielded)
    post = _spans(_NEG_POST, sentence, shielded)
    out = []
    for label, patterns in _COMPILED.items():
        for pattern in patterns:
            for m in pattern.finditer(sentence):
                a, b = m.start(), m.end()
                if any(_reaches(t, a, b, sentence) for t in pre) or any(
                        _reaches(t, a, b, sentence, post=True) for t in post):
                    status: Status = "negative"
                elif any(_reaches(h, a, b, sentence) or _reaches(h, a, b, sentence, post=True)
                         for h in hedges):
                    status = "uncertain"
                else:
                    status = "positive"
                out.append(Mention(label, sentence, a, b, status))
    return out


def mentions(text: str) -> list[Mention]:
    """Every label mention in ``text``, sentence by sentence."""
    return [m for s in sentences(text) for m in _sentence_mentions(s)]


_RANK = {"negative": 0, "uncertain": 1, "positive": 2}


@lru_cache(maxsize=65536)
def _extract(text: str) -> tuple[tuple[str, Status], ...]:
    best: dict[str, Status] = {}
    for m in mentions(text):
        if m.label not in best or _RANK[m.status] > _RANK[best[m.label]]:
            best[m.label] = m.status
    return tuple(sorted(best.items()))


def extract(text: str) -> dict[str, Status | None]:
    """Label -> report-level status (positive > uncertain > negative), ``None`` if unmentioned."""
    found = dict(_extract(str(text)))
    return {label: found.get(label) for label in LABELS}


def finding_vector(text: str, labels: tuple[str, ...] = LABELS,
                   uncertain_positive: bool = UNCERTAIN_AS_POSITIVE) -> np.ndarray:
    """Binary ``(len(labels),)`` vector: positive (and, by default, uncertain) mentions are 1."""
    found = dict(_extract(str(text)))
    keep = {"positive", "uncertain"} if uncertain_positive else {"positive"}
    return np.array([int(found.get(label) in keep) for label in labels], dtype=np.int8)


def phantom_findings(text: str) -> dict[str, int]:
    """The phantom's four findings (manifest column names) as read from a report."""
    vec = finding_vector(text, tuple(PHANTOM_LABELS.values()))
    return {col: int(v) for col, v in zip(PHANTOM_LABELS, vec)}


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def dataset_labels(columns) -> tuple[str, ...]:
    """The labels a dataset annotates: those named by a manifest column ("lung_nodule",
    "Lung nodule", ...); all of :data:`LABELS` when it names none."""
    have = {_key(str(c)) for c in columns}
    return tuple(label for label in LABELS if _key(label) in have) or LABELS
