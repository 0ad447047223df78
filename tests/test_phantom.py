"""The built-in synthetic phantom: determinism, geometry, HU, labels, reports, card, caching."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctbench.datasets import load_dataset_folder
from ctbench.errors import CTBenchError
from ctbench.phantom import (
    COLUMNS,
    FINDINGS,
    PHANTOM_VERSION,
    SLICE_MM,
    ensure_phantom,
    generate_phantom,
    phantom_card,
    phantom_name,
    report_findings,
)
from ctbench.phantom_truth import read_truth
from tests.conftest import SMALL_PHANTOM_PATIENTS

CATEGORIES = ("classification", "regression", "survival", "retrieval", "localisation",
              "segmentation", "report-generation")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _files(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def _arrays(folder: Path, row: pd.Series) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    img = nib.load(folder / row["image"])
    return img, np.asarray(img.dataobj), np.asarray(nib.load(folder / row["mask"]).dataobj)


@pytest.fixture(scope="module")
def manifest(small_phantom: Path) -> pd.DataFrame:
    return pd.read_csv(small_phantom / "manifest.csv")


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate_phantom(tmp_path / "a", n_patients=6, seed=0)
    b = generate_phantom(tmp_path / "b", n_patients=6, seed=0)
    c = generate_phantom(tmp_path / "c", n_patients=6, seed=1)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) == 3 + 2 * 7  # manifest, card, truth; 6 patients + 1 repeat scan, image + mask each
    assert fa == fb
    assert all(v[4:8] == b"\0\0\0\0" for k, v in fa.items() if k.endswith(".gz"))  # gzip mtime
    pd.testing.assert_frame_equal(pd.read_csv(a / "manifest.csv"), pd.read_csv(b / "manifest.csv"))
    assert fa["manifest.csv"] != fc["manifest.csv"]
    assert fa["images/P0000-s1.nii.gz"] != fc["images/P0000-s1.nii.gz"]
    assert not list(tmp_path.glob(".*partial*"))
    assert a.stat().st_mode & 0o777 == 0o777 & ~_umask()  # readable by others, like any new folder


def test_card_and_manifest_load(small_phantom: Path, manifest: pd.DataFrame) -> None:
    ds = load_dataset_folder(small_phantom)
    assert ds.card.name == f"phantom-n{SMALL_PHANTOM_PATIENTS}" and ds.card.version == PHANTOM_VERSION
    assert ds.card.licence == "CC0-1.0 (synthetic)"
    for name in CATEGORIES:
        assert ds.card.task(name).category == name
        ds.require_columns(ds.card.task(name).targets)
    cls = ds.card.task("classification")
    assert cls.targets == FINDINGS and cls.kind == "multilabel" and cls.main_metric == "auroc"
    assert ds.card.task("survival").horizons
    assert ds.card.task("localisation").main_metric == "centre_error_mm"
    assert ds.card.task("segmentation").label_names[1] == "lungs"  # int keys back from the JSON card
    assert sorted(ds.card.task("segmentation").label_names) == [1, 2, 3, 4, 5, 6]
    assert tuple(manifest.columns) == COLUMNS
    assert len(manifest) == SMALL_PHANTOM_PATIENTS + round(0.2 * SMALL_PHANTOM_PATIENTS)
    assert all(ds.resolve(p).is_file() for p in [*manifest["image"], *manifest["mask"]])
    for f in FINDINGS:  # every finding both present and absent; prevalence roughly 20-60 %
        assert 0.15 <= manifest[f].mean() <= 0.65


def test_geometry_varies(small_phantom: Path, manifest: pd.DataFrame) -> None:
    codes, spacings = set(), set()
    for _, row in manifest.iterrows():
        img = nib.load(small_phantom / row["image"])
        msk = nib.load(small_phantom / row["mask"])
        assert np.allclose(img.affine, msk.affine) and img.shape == msk.shape
        assert img.get_data_dtype() == np.int16 and msk.get_data_dtype() == np.uint8
        assert np.prod(img.shape) < 600_000
        code = nib.aff2axcodes(img.affine)
        codes.add(code)
        sp = dict(zip(code, img.header.get_zooms()))
        inplane = [sp.get(c) or sp[o] for c, o in (("R", "L"), ("A", "P"))]
        slice_mm = sp.get("S") or sp["I"]
        assert all(2.5 <= s <= 3.5 for s in inplane) and inplane[0] == inplane[1]
        assert min(SLICE_MM) <= slice_mm <= max(SLICE_MM)
        spacings.add((round(float(inplane[0]), 3), float(slice_mm)))
        fov = np.array(img.header.get_zooms()) * img.shape
        assert 180 < fov.min() and fov.max() < 260  # field of view in mm per axis
    assert len(codes) >= 4 and any(c[2] not in "SI" for c in codes)  # permuted axes too
    assert len(spacings) >= 10


def test_organ_hu_and_masks(small_phantom: Path, manifest: pd.DataFrame) -> None:
    assert 0.3 < manifest["contrast"].mean() < 0.7
    both_phases = pd.concat([manifest[manifest["contrast"] == c].head(4) for c in (0, 1)])
    for _, row in both_phases.iterrows():
        img, hu, mask = _arrays(small_phantom, row)
        assert set(np.unique(mask)) <= set(range(7)) and {1, 2, 3, 4, 5} <= set(np.unique(mask))
        assert abs(hu[mask == 1].mean() - (-840)) < 60  # lungs (denser beside fluid and nodules)
        if row.contrast:  # portal-venous phase: enhanced blood pool, liver and kidneys
            assert 135 < hu[mask == 2].mean() < 210 and 95 < hu[mask == 3].mean() < 125
            assert 120 < hu[mask == 4].mean() < 185
        else:
            assert 25 < hu[mask == 2].mean() < 55 and 75 < hu[mask == 3].mean() < 90  # denser than real, see phantom_anatomy
            assert 20 < hu[mask == 4].mean() < 42
        assert hu[mask == 5].mean() > 300  # bone
        corners = hu[[0, -1]][:, [0, -1]][:, :, [0, -1]]
        assert corners.max() < -950  # air outside the body
        voxel_ml = np.prod(img.header.get_zooms()) / 1000
        liver_ml = (mask == 3).sum() * voxel_ml  # lesions inside the liver are label 6
        low = 0.8 * (row.liver_volume_ml - row.lesion_burden_ml)
        assert low < liver_ml < 1.1 * row.liver_volume_ml


def test_lesion_centre_is_a_lesion(small_phantom: Path, manifest: pd.DataFrame) -> None:
    has = manifest["lesion_x"].notna()
    assert (has == (manifest["lesion_burden_ml"] > 0)).all() and has.sum() >= 10
    for _, row in manifest[has].iterrows():
        img, hu, mask = _arrays(small_phantom, row)
        world = [row.lesion_x, row.lesion_y, row.lesion_z, 1.0]
        ijk = np.rint(np.linalg.inv(img.affine) @ world)[:3].astype(int)
        assert mask[tuple(ijk)] == 6
        near = tuple(slice(max(i - 1, 0), i + 2) for i in ijk)
        assert -250 < hu[near][mask[near] == 6].mean() < 90  # soft tissue / fluid, not lung or bone


def test_repeat_scans_same_patient_same_split(manifest: pd.DataFrame, small_phantom: Path) -> None:
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1
    assert set(manifest["split"]) == {"train", "val", "test"}
    repeats = manifest.groupby("patient_id").filter(lambda g: len(g) == 2)
    assert repeats["patient_id"].nunique() == round(0.2 * SMALL_PHANTOM_PATIENTS)
    same = ["patient_id", *FINDINGS, "liver_volume_ml", "lesion_burden_ml", "time", "event"]
    for pid, pair in repeats.groupby("patient_id"):
        first, second = pair.iloc[0], pair.iloc[1]
        assert first.case_id != second.case_id
        assert first[same].equals(second[same])
        a, b = (nib.load(small_phantom / r["image"]) for r in (first, second))
        assert a.shape != b.shape or not np.allclose(a.affine, b.affine)
        if pd.notna(first.lesion_x):  # same lesion, moved by a few mm at most
            shift = np.subtract(first[["lesion_x", "lesion_y", "lesion_z"]].to_numpy(float),
                                second[["lesion_x", "lesion_y", "lesion_z"]].to_numpy(float))
            assert np.abs(shift).max() <= 8.0


def test_survival_depends_on_image(manifest: pd.DataFrame) -> None:
    pat = manifest.drop_duplicates("patient_id")
    assert set(pat["event"]) == {0, 1} and (pat["time"] > 0).all()
    sick = (pat["lesion_burden_ml"] > 2) | (pat["pleural_effusion"] == 1)
    assert pat.loc[sick, "time"].median() < pat.loc[~sick, "time"].median()


def test_truth_sidecar_matches_manifest_and_images(small_phantom: Path, manifest: pd.DataFrame) -> None:
    """``truth.json`` (what the oracle reads) agrees with the manifest and with the images' grids."""
    truth = read_truth(small_phantom / "truth.json")
    assert truth.phantom_version == PHANTOM_VERSION and set(truth.cases) == set(manifest["case_id"])
    for _, row in manifest.iterrows():
        t = truth.cases[row.case_id]
        img = nib.load(small_phantom / row["image"])
        assert t.image == row["image"] and t.mask == row["mask"]
        assert t.shape == img.shape and np.allclose(t.affine, img.affine, atol=1e-4)
        assert t.findings == {f: int(row[f]) for f in FINDINGS} and t.contrast == row.contrast
        assert t.liver_volume_ml == row.liver_volume_ml and t.lesion_burden_ml == pytest.approx(row.lesion_burden_ml)
        assert (t.effusion_mm[0] > 0 or t.effusion_mm[1] > 0) == bool(row.pleural_effusion)
        volume = sum(4 / 3 * np.pi * les.radius**3 / 1000 for les in t.lesions)
        assert volume == pytest.approx(row.lesion_burden_ml, abs=0.01)
        if t.largest is not None:  # the localisation target is the largest lesion's centre
            assert np.allclose(t.largest.centre, row[["lesion_x", "lesion_y", "lesion_z"]].to_numpy(float), atol=0.01)


def test_survival_is_calibrated_to_the_image(small_phantom: Path, manifest: pd.DataFrame) -> None:
    """The hazard follows visible findings strongly: the generator's own risk (lesion burden and
    effusion depth) orders the patients' times with a C-index near 0.9, and about a quarter of
    the patients are censored, so 20 test patients separate a good model from chance."""
    from lifelines.utils import concordance_index

    truth = read_truth(small_phantom / "truth.json")
    pat = manifest.drop_duplicates("patient_id")
    risk = np.array([truth.cases[c].risk for c in pat["case_id"]])
    c = concordance_index(pat["time"], -risk, pat["event"])
    assert 0.72 < c < 0.95
    assert 0.05 < 1 - pat["event"].mean() < 0.45


def test_findings_move_the_hu_histogram(small_phantom: Path, manifest: pd.DataFrame) -> None:
    """Version 5: what simple image features need. Part-solid nodules put ground glass
    (-650..-350 HU, a density nothing else has) in the image, effusions a litre-scale share of
    water-like voxels; counted from the pixels alone."""
    glass, fluid = [], []
    for _, row in manifest.iterrows():
        img = nib.load(small_phantom / row["image"])
        hu = np.asarray(img.dataobj)
        voxel_ml = float(np.prod(img.header.get_zooms())) / 1000
        glass.append(np.count_nonzero((hu > -650) & (hu < -350)) * voxel_ml)
        fluid.append(np.count_nonzero((hu >= 0) & (hu < 25)) * voxel_ml)
    glass, fluid = np.array(glass), np.array(fluid)
    nodule, effusion = manifest["lung_nodule"].to_numpy() == 1, manifest["pleural_effusion"].to_numpy() == 1
    assert glass[~nodule].max() < 1.5 < glass[nodule].min()  # mL; without nodules: edge voxels only
    assert np.median(fluid[effusion]) > np.median(fluid[~effusion]) + 100  # mL


def test_reports_match_labels(manifest: pd.DataFrame) -> None:
    uncertain = 0
    for _, row in manifest.iterrows():
        text = row.report
        assert text.startswith("FINDINGS: ") and " IMPRESSION: " in text
        assert report_findings(text) == {f: int(row[f]) for f in FINDINGS}
        sentences = re.split(r"(?<=[.;:])\s+", text)
        for term, finding in (("nodule", "lung_nodule"), ("effusion", "pleural_effusion"),
                              ("cyst", "kidney_cyst")):
            said = [s for s in sentences if term in s.lower()]
            if row[finding]:
                assert any(not re.search(r"\b(no|without)\b", s, re.I) for s in said)
            else:  # absent findings are negated or not mentioned
                assert all(re.search(r"\b(no|without)\b", s, re.I) for s in said)
        if row.lung_nodule or row.liver_lesion or row.kidney_cyst:
            assert re.search(r"\b\d+ mm\b", text)
        if not any(row[f] for f in FINDINGS):
            assert re.search(r"\bNo pleural effusion|without effusion|no pleural effusion", text)
        uncertain += bool(re.search(r"\b(Possible|Probable|probably|likely)\b", text))
    assert uncertain >= 2
    assert manifest["report"].nunique() > 0.8 * len(manifest)


def test_ensure_phantom_caches(ctbench_home: Path) -> None:
    calls: list[tuple[int, int]] = []
    path = ensure_phantom(seed=2, n_patients=3, progress=lambda d, t: calls.append((d, t)))
    assert path == ctbench_home / "datasets" / f"phantom-v{PHANTOM_VERSION}-n3-seed2"
    assert calls[-1] == (4, 4) and [d for d, _ in calls] == [1, 2, 3, 4]
    before = (path / "manifest.csv").stat().st_mtime_ns
    assert ensure_phantom(seed=2, n_patients=3, progress=lambda d, t: calls.append((d, t))) == path
    assert len(calls) == 4 and (path / "manifest.csv").stat().st_mtime_ns == before


def test_interrupted_generation_leaves_nothing(tmp_path: Path) -> None:
    def boom(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_phantom(tmp_path / "ph", n_patients=3, progress=boom)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep")
    with pytest.raises(CTBenchError, match="not empty"):
        generate_phantom(tmp_path / "full", n_patients=3)
    with pytest.raises(CTBenchError, match="n_patients"):
        generate_phantom(tmp_path / "tiny", n_patients=2)


def test_resolution_halves_the_spacing_and_keeps_the_patients(tmp_path: Path) -> None:
    a = generate_phantom(tmp_path / "a", n_patients=3, seed=2)
    b = generate_phantom(tmp_path / "b", n_patients=3, seed=2, resolution=2.0)
    ma, mb = pd.read_csv(a / "manifest.csv"), pd.read_csv(b / "manifest.csv")
    # same anatomy, findings, labels, splits and report wording (drawn apart from the image noise)
    pd.testing.assert_frame_equal(ma, mb)
    for image in ma["image"]:
        ia, ib = nib.load(a / image), nib.load(b / image)
        assert np.allclose(np.array(ib.header.get_zooms()) * 2, ia.header.get_zooms(), atol=1e-3)
        assert all(abs(nb - 2 * na) <= 1 for na, nb in zip(ia.shape, ib.shape))
        assert nib.aff2axcodes(ia.affine) == nib.aff2axcodes(ib.affine)
    assert "resolution=2" in (b / "dataset.json").read_text()
    assert load_dataset_folder(b).card.name == "phantom-n3-seed2-res2"
    with pytest.raises(CTBenchError, match="resolution"):
        generate_phantom(tmp_path / "c", n_patients=3, resolution=8.0)


def test_phantoms_of_other_arguments_get_their_own_card_name(tmp_path: Path) -> None:
    """Results are filed by card name: only the built-in arguments give ``phantom``."""
    assert phantom_card(100, 0).name == phantom_name() == "phantom"
    names = {phantom_name(n, s, r) for n in (100, 500) for s in (0, 3) for r in (1.0, 1.5, 2.0)}
    assert len(names) == 12
    assert phantom_name(500) == "phantom-n500" and phantom_name(500, 3) == "phantom-n500-seed3"
    assert phantom_name(40, 0, 2.0) == "phantom-n40-res2" and phantom_name(100, 0, 1.5) == "phantom-res1.5"
    a = generate_phantom(tmp_path / "a", n_patients=3, seed=1)
    b = generate_phantom(tmp_path / "b", n_patients=4, seed=1)
    assert load_dataset_folder(a).card.name == "phantom-n3-seed1"
    assert load_dataset_folder(b).card.name == "phantom-n4-seed1"
