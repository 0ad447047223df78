"""What every recipe records about its split and its sources: ``prepare.json``'s
``stratification`` (strata too rare for the folds are merged, and said so) and the card's
``collections`` (the public collections the images come from, for contamination flags)."""

from __future__ import annotations

import json

from recipe_fakes import volume, write_csv, write_nifti
from test_recipe_luna16 import fake_luna
from test_recipe_nsclc import fake_nsclc

from ctbench.datasets import open_dataset
from ctbench.recipes import BUILTIN_RECIPES, get_recipe, prepare


def _provenance(folder) -> dict:
    return json.loads((folder / "prepare.json").read_text())


def test_a_rare_event_class_is_merged_and_recorded(tmp_path):
    res = prepare("nsclc-radiomics", fake_nsclc(tmp_path / "src"), tmp_path / "out", seed=3)
    strat = _provenance(res.folder)["stratification"]
    assert strat["by"] == "event"
    # 10 patients, two of them censored: fewer than the 5 test folds, so '0' joins the larger class
    assert {(m["stratum"], m["into"]) for m in strat["merged"]} == {("0", "1")}
    assert strat["merged"][0]["rows"] == 2 and "'0' (2 rows) -> '1'" in strat["note"]
    assert open_dataset(str(res.folder)).card.collections == ("NSCLC-Radiomics", "TCIA", "IDC")


def test_a_rare_label_pair_keeps_its_first_label(tmp_path):
    """iCTCF stratifies by (covid_positive, severe): two severe patients fall back to covid_positive."""
    src = tmp_path / "iCTCF"
    morbidity = ["Control"] * 12 + ["Mild"] * 12 + ["Severe"] * 2
    rows = []
    for i, m in enumerate(morbidity, start=1):
        pid = f"Patient {i}"
        rows.append({"patient_id": pid, "pcr": "Negative" if m == "Control" else "Positive", "morbidity": m,
                     "crp": 1.0, "ldh": 200, "lymphocyte_count": 1.2, "d_dimer": 0.3})
        write_nifti(src / "images" / f"{pid}.nii.gz", volume(i, (6, 6, 4)))
    write_csv(src / "clinical.csv", rows)
    res = prepare("ictcf", src, tmp_path / "out")
    strat = _provenance(res.folder)["stratification"]
    assert strat["by"] == "covid_positive/severe"
    assert {(m["stratum"], m["into"]) for m in strat["merged"]} == {("1/1", "1/0")}
    assert open_dataset(str(res.folder)).card.collections == ("iCTCF", "HUST-19")


def test_an_official_split_says_ctbench_did_not_stratify(tmp_path):
    res = prepare("luna16", fake_luna(tmp_path / "luna"), tmp_path / "out")
    strat = _provenance(res.folder)["stratification"]
    assert strat["by"] is None and strat["merged"] == [] and "official folds" in strat["note"]
    assert open_dataset(str(res.folder)).card.collections == ("LUNA16", "LIDC-IDRI", "TCIA", "IDC")


def test_every_public_recipe_names_its_collections_its_own_name_first():
    for name in BUILTIN_RECIPES:
        recipe = get_recipe(name)
        if name == "mycobacterial":  # a user-supplied cohort: no public collection
            assert recipe.collections == ()
            continue
        assert recipe.collections, name
        own = recipe.collections[0].lower().replace("-", "")
        assert own == name.replace("-", ""), (name, recipe.collections)
