"""Built-in synthetic ``phantom`` dataset: seeded CT-like NIfTI volumes with labels for all seven
task categories, so every command works offline.

Each scan is rasterised analytically: a voxel grid (shape, anisotropic spacing, axis codes) and
its affine give the world (RAS mm) centre of every voxel, where the patient's anatomy
(:mod:`ctbench.phantom_anatomy`) is evaluated. Same seed, same bytes.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import shutil
import secrets
import time as _time
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from .datasets import CARD_FILE, MANIFEST_FILE, DatasetCard, TaskSpec, write_card
from .errors import CTBenchError
from .paths import home
from .phantom_anatomy import (
    CONTRAST_FRACTION, FOV_CENTRE, FOV_MM, LABELS, Patient, liver_volume_ml, paint, sample_patient,
)
from .phantom_truth import CaseTruth, LesionTruth, write_truth
from .splits import make_splits

PHANTOM_VERSION = "5"  # 5: findings visible to simple image features (4: truth.json for the oracle)
DEFAULT_PATIENTS = 100
REPEAT_FRACTION = 0.2  # share of patients with a second scan
ORIENTATIONS = ("RAS", "LPS", "LAS", "LPI", "PSR", "SLP")
SLICE_MM = (3.0, 3.75, 4.0, 5.0)
FINDINGS = ("lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion")
HORIZONS_DAYS = (365.0, 730.0)
COLUMNS = ("case_id", "patient_id", "image", "mask", "split", *FINDINGS, "contrast",
           "liver_volume_ml", "lesion_burden_ml", "time", "event", "lesion_x", "lesion_y",
           "lesion_z", "seed_x", "seed_y", "seed_z", "report")
# Rule-based reading of the phantom's reports: a term per finding, negation within the sentence.
FINDING_TERMS = {
    "lung_nodule": r"\bnodules?\b",
    "liver_lesion": r"\b(liver|hepatic)\b.*\blesions?\b",
    "kidney_cyst": r"\bcysts?\b",
    "pleural_effusion": r"\beffusions?\b",
}
NEGATION = r"\b(no|without)\b"
NOISE_HU = (4.0, 8.0)  # standard deviation of the image noise per scan
PARTIAL_VOLUME_SIGMA = 0.25  # voxels: edges soften, a voxel takes under 1% of a neighbour (4% at 0.4)
_AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0),
         "I": (2, -1.0)}


def scan_affine(
    codes: str, spacing: tuple[float, float, float], centre
) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and voxel-to-world affine of a grid over ``FOV_MM`` around ``centre`` (world mm).

    ``codes`` are nibabel axis codes of the stored axes; ``spacing`` is per world axis (x, y, z).
    """
    a = np.zeros((4, 4))
    a[3, 3] = 1.0
    shape = []
    for v, c in enumerate(codes):
        w, sign = _AXIS[c]
        a[w, v] = sign * spacing[w]
        shape.append(int(round(FOV_MM[w] / spacing[w])))
    a[:3, 3] = np.asarray(centre, float) - a[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return tuple(shape), a


def world_axes(shape: tuple[int, ...], affine: np.ndarray) -> list[np.ndarray]:
    """World x, y, z of the voxel centres as three arrays that broadcast to ``shape``."""
    out = []
    for w in range(3):
        (v,) = np.flatnonzero(affine[w, :3])  # axis-aligned grids only
        vec = affine[w, v] * np.arange(shape[v]) + affine[w, 3]
        out.append(vec.reshape([-1 if i == v else 1 for i in range(3)]))
    return out


def _nifti_gz(data: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = f"ctbench phantom v{PHANTOM_VERSION}".encode()
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)  # mtime=0: same bytes


def _render(p: Patient, shift: np.ndarray, shape, affine, rng: np.random.Generator):
    x, y, z = (a - s for a, s in zip(world_axes(shape, affine), shift))
    hu, lab = paint(p, x.astype(np.float32), y.astype(np.float32), z.astype(np.float32))
    hu = gaussian_filter(hu, PARTIAL_VOLUME_SIGMA)  # slight partial-volume blur
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(*NOISE_HU))
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), lab


# Survival: a Weibull accelerated-failure-time model (so also proportional hazards, with log
# hazard ratio WEIBULL_SHAPE * risk). Its log time noise (a Gumbel draw / WEIBULL_SHAPE) is small
# against the risk's spread, so the C-index of the true risk is ~0.9: what the image shows decides
# most of the ordering, as the self-test's survival row needs on a 20-patient test split. The risk
# is linear in visible volumes (lesion mL, fluid depth), what an image feature measures.
WEIBULL_SHAPE = 2.5
BASE_DAYS = 2400.0
RISK_BURDEN = 0.3  # per 10 mL of nodule and liver-lesion volume
RISK_EFFUSION = 0.7  # per 10 mm of pleural fluid depth (both sides added)
CENSOR_DAYS = (400.0, 4000.0)  # uniform follow-up


def survival_risk(p: Patient) -> float:
    """The linear predictor of a patient's hazard: malignant lesion burden and effusion depth,
    both visible in the image (cysts are benign and do not count)."""
    malignant = sum(les.volume_ml for les in p.lesions if les.kind != "kidney_cyst")
    depth = sum(p.effusion.values())
    return RISK_BURDEN * malignant / 10.0 + RISK_EFFUSION * depth / 10.0


def _survival(p: Patient, rng: np.random.Generator) -> tuple[int, int]:
    """Event time (Weibull AFT on :func:`survival_risk`) and uniform censoring."""
    t_event = BASE_DAYS * math.exp(-survival_risk(p)) * (-math.log1p(-rng.random())) ** (1 / WEIBULL_SHAPE)
    t_censor = rng.uniform(*CENSOR_DAYS)
    return max(1, int(round(min(t_event, t_censor)))), int(t_event <= t_censor)


def _report(p: Patient, rng: np.random.Generator) -> str:
    """Templated report: varied phrasing, negations, measurements, a few uncertain phrasings."""

    def pick(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    def of(kind: str) -> list:
        return sorted((les for les in p.lesions if les.kind == kind), key=lambda les: -les.radius)

    count = {2: "Two", 3: "Three", 4: "Four"}
    out, impression = [], []
    nod = of("lung_nodule")
    if nod:
        d, site = nod[0].diameter_mm, nod[0].site
        if len(nod) > 1:
            out.append(pick([
                f"{count[len(nod)]} pulmonary nodules, the largest measuring {d} mm in the {site}.",
                f"Multiple pulmonary nodules; the largest is {d} mm in the {site}."]))
        elif rng.random() < 0.2:
            out.append(pick([f"Possible {d} mm nodule in the {site}.",
                             f"Small {d} mm opacity in the {site}, probably a nodule."]))
        else:
            out.append(pick([f"A {d} mm nodule in the {site}.",
                             f"{d} mm nodule noted in the {site}.",
                             f"There is a {d} mm solid pulmonary nodule in the {site}."]))
        impression.append(f"Pulmonary nodule{'s' if len(nod) > 1 else ''}, largest in the {site}.")
    else:
        out.append(pick(["No pulmonary nodules.", "No suspicious pulmonary nodule.",
                         "The lungs are clear, with no nodule.", "There is no pulmonary nodule."]))
    if p.effusion:
        size = "small" if max(p.effusion.values()) < 45 else "moderate"
        if len(p.effusion) == 2:
            out.append(pick([f"{size.capitalize()} bilateral pleural effusions.",
                             f"There are {size} layering bilateral pleural effusions."]))
            impression.append("Bilateral pleural effusions.")
        else:
            side = next(iter(p.effusion))
            out.append(pick([f"{size.capitalize()} {side} pleural effusion.",
                             f"There is a {size} layering {side} pleural effusion.",
                             f"Probable {size} {side}-sided pleural effusion."]))
            impression.append(f"{side.capitalize()} pleural effusion.")
    else:
        out.append(pick(["No pleural effusion.", "No pleural effusion or pneumothorax.",
                         "There is no pleural effusion.",
                         "Pleural spaces are clear without effusion."]))
    out.append(pick(["Heart size is normal.", "Normal heart size.", "The heart is not enlarged."]))
    liv = of("liver_lesion")
    if liv:
        d, site = liv[0].diameter_mm, liv[0].site
        if len(liv) > 1:
            out.append(
                f"{count[len(liv)]} hypodense liver lesions, the largest {d} mm in the {site}.")
        elif rng.random() < 0.2:
            out.append(f"Ill-defined {d} mm hypodensity in the {site}, likely a liver lesion.")
        else:
            out.append(pick([f"A {d} mm hypodense lesion in the {site}.",
                             f"Hypodense hepatic lesion measuring {d} mm in the {site}."]))
        impression.append(f"Hypodense liver lesion{'s' if len(liv) > 1 else ''}.")
    else:
        out.append(pick(["No focal liver lesion.", "Liver: no focal lesion.",
                         "The liver is unremarkable without focal lesion."]))
    cys = of("kidney_cyst")
    if cys:
        d, site = cys[0].diameter_mm, cys[0].site
        if len({c.site.split()[-2] for c in cys}) == 2:
            out.append(f"Bilateral renal cysts, the largest {d} mm in the {site}.")
        elif rng.random() < 0.2:
            out.append(f"Small {d} mm hypodensity in the {site}, likely a cyst.")
        else:
            out.append(pick([f"A {d} mm simple cyst in the {site}.",
                             f"Simple renal cyst measuring {d} mm in the {site}."]))
        impression.append(f"Renal cyst{'s' if len(cys) > 1 else ''}.")
    else:
        out.append(pick(["No renal cysts.", "Kidneys are unremarkable without cysts.",
                         "No renal cyst or hydronephrosis."]))
    out.append(pick(["Visualised osseous structures are unremarkable.",
                     "No aggressive osseous abnormality."]))
    impression = impression or [pick(["No acute abnormality.", "Unremarkable study."])]
    return "FINDINGS: " + " ".join(out) + " IMPRESSION: " + " ".join(impression)


def report_findings(text: str) -> dict[str, int]:
    """The four findings a phantom report states as present (1) or absent/unmentioned (0)."""
    found = dict.fromkeys(FINDINGS, 0)
    for sentence in re.split(r"(?<=[.;:])\s+", text.lower()):
        if re.search(NEGATION, sentence):
            continue
        for name, term in FINDING_TERMS.items():
            if re.search(term, sentence):
                found[name] = 1
    return found


def phantom_name(n_patients: int = DEFAULT_PATIENTS, seed: int = 0, resolution: float = 1.0) -> str:
    """Card name of a phantom: ``phantom`` for the built-in one (100 patients, seed 0, resolution
    1), else ``phantom`` plus ``-n<patients>``, ``-seed<seed>``, ``-res<resolution>`` for each
    argument off its default, in that order: ``phantom-n500``, ``phantom-n40-seed3-res2``.

    Results are filed by card name, so phantoms of other arguments never share result folders.
    """
    parts = ["phantom"]
    if n_patients != DEFAULT_PATIENTS:
        parts.append(f"n{n_patients}")
    if seed != 0:
        parts.append(f"seed{seed}")
    if resolution != 1:
        parts.append(f"res{resolution:g}")
    return "-".join(parts)


def phantom_card(n_patients: int, seed: int, resolution: float = 1.0) -> DatasetCard:
    """The dataset card of a phantom (named by :func:`phantom_name`) with its seven tasks."""
    labels = ", ".join(f"{k} {v}" for k, v in LABELS.items())
    description = (
        "Synthetic CT-like thorax/upper-abdomen volumes (int16 HU NIfTI) with anisotropic spacing "
        f"(in-plane {2.5 / resolution:g}-{3.5 / resolution:g} mm, slices {min(SLICE_MM) / resolution:g}-"
        f"{max(SLICE_MM) / resolution:g} mm) and varied axis codes "
        f"({', '.join(ORIENTATIONS)}); ~{REPEAT_FRACTION:.0%} of patients are scanned twice; "
        f"~{CONTRAST_FRACTION:.0%} in the portal-venous phase (contrast = 1: enhanced blood pool, "
        "liver and kidneys). "
        f"Mask labels: {labels} (nodules, liver lesions and kidney cysts; pleural fluid is 0). "
        "liver_volume_ml includes lesions; lesion_burden_ml is the total lesion volume; time is "
        "days, event 1 = death, hazard rising with nodule/liver-lesion burden and effusion; "
        "lesion_x/y/z = world RAS mm centre of the largest lesion (empty where none). "
        "seed_x/y/z = a simulated reader's click for seed-point models (world RAS mm): a point inside the "
        "largest lesion (its centre plus a seeded offset up to half its radius), else the liver's centre "
        "plus up to 5 mm. "
        "Name: 'phantom' for 100 patients, seed 0, resolution 1; otherwise 'phantom' plus "
        "-n<patients>, -seed<seed>, -res<resolution> for each argument off that default."
    )
    tasks = (
        TaskSpec(name="classification", category="classification", targets=FINDINGS,
                 main_metric="auroc", kind="multilabel", description="four findings"),
        TaskSpec(name="regression", category="regression", main_metric="r2",
                 targets=("liver_volume_ml", "lesion_burden_ml"),
                 description="organ/lesion volumes"),
        TaskSpec(name="survival", category="survival", targets=("time", "event"),
                 main_metric="c_index", horizons=HORIZONS_DAYS,
                 description="overall survival, days"),
        TaskSpec(name="retrieval", category="retrieval", targets=("patient_id", *FINDINGS),
                 main_metric="label_recall@5",
                 description="cases sharing a finding (1 positive vs up to 99 negatives) and "
                             "the other scan of the same patient"),
        TaskSpec(name="localisation", category="localisation",
                 targets=("lesion_x", "lesion_y", "lesion_z"), main_metric="centre_error_mm",
                 description="centre of the largest lesion"),
        TaskSpec(name="segmentation", category="segmentation", targets=("mask",),
                 label_names={k: v for k, v in LABELS.items() if k > 0},
                 main_metric="dice_macro", description="organ and lesion labels 1-6"),
        TaskSpec(name="report-generation", category="report-generation", targets=("report",),
                 main_metric="finding_f1", description="templated radiology report"),
    )
    return DatasetCard(name=phantom_name(n_patients, seed, resolution), version=PHANTOM_VERSION,
                       licence="CC0-1.0 (synthetic)", description=description, tasks=tasks,
                       source=f"ctbench.phantom.generate_phantom(n_patients={n_patients}, "
                              f"seed={seed}" + (f", resolution={resolution:g})" if resolution != 1 else ")"))


def _write_dataset(
    folder: Path, n_patients: int, seed: int, progress: Callable[[int, int], None] | None,
    resolution: float = 1.0,
) -> None:
    for sub in ("images", "masks"):
        (folder / sub).mkdir()
    n_repeat = max(1, round(REPEAT_FRACTION * n_patients))
    repeats = set(np.random.default_rng([seed, 3]).permutation(n_patients)[:n_repeat].tolist())
    total, done, rows, truth = n_patients + len(repeats), 0, [], {}
    for i in range(n_patients):
        p = sample_patient(np.random.default_rng([seed, 0, i]))
        t, event = _survival(p, np.random.default_rng([seed, 1, i]))
        offset = np.random.default_rng([seed, 2, i]).uniform([-15, -15, -250], [15, 15, 50])
        largest = max(p.lesions, key=lambda les: les.radius, default=None)
        patient = {
            "patient_id": f"P{i:04d}", **{f: int(p.has(f)) for f in FINDINGS},
            "contrast": int(p.contrast),
            "liver_volume_ml": round(liver_volume_ml(p), 2),
            "lesion_burden_ml": round(sum(les.volume_ml for les in p.lesions), 3),
            "time": t, "event": event,
        }
        for s in range(2 if i in repeats else 1):
            rng = np.random.default_rng([seed, 4, i, s])
            shift = offset + rng.uniform(-4, 4, 3)  # patient -> world, a few mm apart per scan
            centre = np.array(FOV_CENTRE) + offset + rng.uniform(-5, 5, 3)
            codes = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
            inplane = round(float(rng.uniform(2.5, 3.5)) / resolution, 3)
            spacing = (inplane, inplane, float(rng.choice(SLICE_MM)) / resolution)
            shape, affine = scan_affine(codes, spacing, centre)
            image, mask = _render(p, shift, shape, affine, rng)
            case = f"{patient['patient_id']}-s{s + 1}"
            (folder / "images" / f"{case}.nii.gz").write_bytes(_nifti_gz(image, affine))
            (folder / "masks" / f"{case}.nii.gz").write_bytes(_nifti_gz(mask, affine))
            where = (np.array(largest.centre) + shift).round(2) if largest else [np.nan] * 3
            truth[case] = _case_truth(p, patient, case, shape, affine, shift)
            rows.append({
                **patient, "case_id": case, "image": f"images/{case}.nii.gz",
                "mask": f"masks/{case}.nii.gz", "lesion_x": where[0], "lesion_y": where[1],
                "lesion_z": where[2],
                **reader_click(p, largest, shift, np.random.default_rng([seed, 6, i, s])),
                "report": _report(p, np.random.default_rng([seed, 5, i, s])),  # same at any resolution
            })
            done += 1
            if progress is not None:
                progress(done, total)
    df = pd.DataFrame(rows)
    strata = df[list(FINDINGS)].sum(axis=1).clip(upper=2)
    df["split"] = make_splits(df["patient_id"], strata=strata, seed=seed).to_numpy()
    df[list(COLUMNS)].to_csv(folder / MANIFEST_FILE, index=False)
    write_truth(folder, PHANTOM_VERSION, truth)
    write_card(phantom_card(n_patients, seed, resolution), folder)


def reader_click(p: Patient, largest, shift: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """``seed_x/y/z``: where a reader would click for a seed-point model (ctbench.seeds), never the
    localisation target itself: inside the largest lesion, offset from its centre by a uniform point
    of a ball of half its radius; without a lesion, the liver's centre offset by up to 5 mm."""
    centre, radius = (largest.centre, 0.5 * largest.radius) if largest else (p.liver.centre, 5.0)
    u = rng.normal(size=3)
    offset = u / np.linalg.norm(u) * radius * rng.random() ** (1 / 3)
    x, y, z = (np.asarray(centre) + shift + offset).round(2)
    return {"seed_x": float(x), "seed_y": float(y), "seed_z": float(z)}


def _case_truth(p: Patient, patient: dict, case: str, shape, affine: np.ndarray, shift: np.ndarray) -> CaseTruth:
    """The ground truth of one scan for ``truth.json`` (lesion centres in this scan's world mm)."""
    return CaseTruth(
        image=f"images/{case}.nii.gz", mask=f"masks/{case}.nii.gz", shape=tuple(int(n) for n in shape),
        affine=tuple(tuple(float(v) for v in row) for row in affine),
        findings={f: int(patient[f]) for f in FINDINGS}, contrast=patient["contrast"],
        liver_volume_ml=patient["liver_volume_ml"], lesion_burden_ml=patient["lesion_burden_ml"],
        effusion_mm=(round(p.effusion.get("right", 0.0), 3), round(p.effusion.get("left", 0.0), 3)),
        risk=round(survival_risk(p), 6),
        lesions=tuple(LesionTruth(kind=les.kind, centre=tuple(round(float(v), 3) for v in np.add(les.centre, shift)),
                                  radius=round(les.radius, 3)) for les in p.lesions),
    )


def _is_empty_dir(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.iterdir())


def generate_phantom(
    folder: Path,
    n_patients: int = DEFAULT_PATIENTS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    resolution: float = 1.0,
) -> Path:
    """Write a phantom dataset (images/, masks/, manifest.csv, dataset.json, and truth.json: the
    ground truth per scan that the ``oracle`` encoder reads) into ``folder``.

    ``resolution`` divides every voxel spacing (2: 1.25-1.75 mm in-plane, about 8x the voxels);
    the manifest (anatomy, findings, labels, reports, splits) stays the same. The card is named
    by :func:`phantom_name`: ``phantom`` for the defaults (100 patients, seed 0, resolution 1),
    else e.g. ``phantom-n500``, ``phantom-n500-seed3``, ``phantom-n40-res2``, so results of
    another phantom get their own folders. ``folder`` must be missing or empty. The data are
    written into a hidden sibling and renamed into place at the end, so an interrupted run leaves
    no half dataset. ``progress(done, total)`` is called after each scan.
    """
    folder = Path(folder).expanduser()
    if n_patients < 3 or seed < 0 or not 0.5 <= resolution <= 4:  # three patients: one per split
        raise CTBenchError(f"phantom needs n_patients >= 3, seed >= 0 and 0.5 <= resolution <= 4 "
                           f"(got {n_patients}, {seed}, {resolution})")
    if folder.exists() and not _is_empty_dir(folder):
        raise CTBenchError(f"{folder} exists and is not empty; remove it or pick another folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.partial-*"):  # left by killed runs
        if _time.time() - stale.stat().st_mtime > 6 * 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.parent / f".{folder.name}.partial-{secrets.token_hex(8)}"
    tmp.mkdir()  # not mkdtemp: the dataset gets the umask's permissions, not 0700
    try:
        _write_dataset(tmp, n_patients, seed, progress, resolution)
        if _is_empty_dir(folder):
            folder.rmdir()
        try:
            os.rename(tmp, folder)
        except OSError:
            raise CTBenchError(f"{folder} appeared while the phantom was generated") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def ensure_phantom(
    seed: int = 0,
    n_patients: int = DEFAULT_PATIENTS,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """The cached phantom under ``$CTBENCH_HOME/datasets``, generated on first use."""
    folder = home() / "datasets" / f"phantom-v{PHANTOM_VERSION}-n{n_patients}-seed{seed}"
    if (folder / CARD_FILE).is_file():
        return folder
    if folder.exists():  # not written by generate_phantom (its rename is all-or-nothing)
        shutil.rmtree(folder)
    try:
        return generate_phantom(folder, n_patients=n_patients, seed=seed, progress=progress)
    except CTBenchError:
        if (folder / CARD_FILE).is_file():  # a concurrent run finished first: same bytes
            return folder
        raise
