"""Optuna studies a user can read: named like result folders with the protocol hash as a suffix,
the main metric named, and user attributes saying which run they belong to, read back through
Optuna's own API on the stored study (what optuna-dashboard reads)."""

import json
import re
import sqlite3

import optuna
import pandas as pd
import pytest

import ctbench.study as study_module
from ctbench.datasets import Dataset, DatasetCard, TaskSpec, load_dataset_folder
from ctbench.provenance import PROTOCOL_VERSION
from ctbench.registry import TASKS
from ctbench.safe_paths import is_identifier
from ctbench.study import probe_families, study_name
from tests.cli_helpers import run_cli

SPEC = TaskSpec(name="nodule", category="classification", targets=("lung_nodule",), main_metric="auroc")
NAME = re.compile(r"(?P<dataset>[^/]+)/(?P<task>[^/]+)/(?P<model>[^/]+)/(?P<weights>[^/]+)/"
                  r"(?P<run>seed\d+-frac[0-9.]+(?:-(?:opts|model)[0-9a-f]{8})*)-(?P<hash>[0-9a-f]{16})")


def _dataset(name: str = "lidc", version: str = "1", splits: tuple[str, ...] = ("train", "val")) -> Dataset:
    """A two-case dataset; its card is built unvalidated, as names of any shape must stay safe here
    even though cards refuse them today."""
    m = pd.DataFrame({"case_id": ["a", "b"], "patient_id": ["a", "b"], "image": ["x", "y"], "split": list(splits),
                      "lung_nodule": [0, 1]})
    return Dataset(DatasetCard.model_construct(name=name, version=version, licence="-", tasks=(SPEC,)), m, root=None)


def _name(ds=None, model="voxelfm-tiny", sha="ab" * 32, seed=0, frac=1.0, opts=None, code="c0de") -> str:
    return study_name(ds or _dataset(), SPEC, model, sha, "prep-v1", seed, frac, opts, code)


# names ------------------------------------------------------------------------------------------


def test_names_read_like_result_folders_with_the_hash_last():
    got = NAME.fullmatch(_name())
    assert got and got.group("dataset", "task", "model", "weights", "run") == (
        "lidc", "nodule", "voxelfm-tiny", "ab" * 6, "seed0-frac1")
    assert NAME.fullmatch(_name(sha="random", frac=0.25, opts="opts1a2b3c4d")).group("weights", "run") == (
        "random", "seed0-frac0.25-opts1a2b3c4d")


def test_whatever_defines_the_search_gives_another_study(monkeypatch):
    base = _name()
    others = [_name(code="c0df"), _name(ds=_dataset(splits=("val", "train"))), _name(ds=_dataset(version="2")),
              _name(sha="ab" * 6 + "cd" + "ab" * 25), _name(seed=1), _name(frac=0.5), _name(opts="opts1a2b3c4d")]
    monkeypatch.setattr(study_module, "PROTOCOL_VERSION", PROTOCOL_VERSION + "x")
    others.append(_name())
    assert len({base, *others}) == len(others) + 1
    # weights that differ beyond the 12 digits shown: the readable part is equal, the hash is not
    assert _name(sha="ab" * 6 + "cd" + "ab" * 25).rsplit("-", 1)[0] == base.rsplit("-", 1)[0]


@pytest.mark.parametrize("dataset, model", [("../../etc", "a/b"), ("/abs/data", "..\\m"), ("Lung CT", "x" * 600),
                                            ("", "<script>")])
def test_untrusted_names_stay_one_readable_part_each(dataset, model):
    name = _name(ds=_dataset(name=dataset), model=model)
    parts = name.split("/")
    assert len(parts) == 5 and all(is_identifier(p) for p in parts) and ".." not in name and len(name) < 512
    assert NAME.fullmatch(name)


def test_names_that_slugify_alike_stay_apart():
    assert _name(ds=_dataset(name="Lung")) != _name(ds=_dataset(name="lung"))
    assert _name(model="a/b") != _name(model="a-b")


def test_probe_families_are_read_from_the_search_space(small_phantom):
    ds = load_dataset_folder(small_phantom)
    families = {}
    for category in ("classification", "survival", "localisation"):
        spec = next(t for t in ds.card.tasks if t.category == category)
        families[category] = probe_families(TASKS.get(category)(spec, ds))
    # a global task tunes one family per study (linear by default; survival's is penalised Cox)
    assert families == {"classification": ["linear"], "survival": ["coxph"], "localisation": ["attention-pool"]}
    task = TASKS.get("survival")(next(t for t in ds.card.tasks if t.category == "survival"), ds)
    task.use_probe("mlp", "cls")
    assert probe_families(task) == ["deepcox"]


# the stored study, through ctbench run ------------------------------------------------------------


def _run(monkeypatch, capsys, folder, tmp_path, trials: int) -> dict:
    out = tmp_path / f"res{trials}"
    code, _, err = run_cli(monkeypatch, capsys, "run", "--model", "test-histogram", "--task", "classification",
                           "--dataset", str(folder), "--weights", "random", "--trials", str(trials),
                           "--bootstrap", "20", "--device", "cpu", "--out", str(out))
    assert code == 0, err[-2000:]
    return json.loads((out / "result.json").read_text())


def test_a_run_leaves_a_readable_study_that_resumes(small_phantom, tmp_path, monkeypatch, capsys, ctbench_home):
    result = _run(monkeypatch, capsys, small_phantom, tmp_path, 2)
    db = ctbench_home / "studies" / "optuna.db"
    with sqlite3.connect(db) as con:  # a plain SQLite file: optuna-dashboard sqlite:///<this path>
        assert con.execute("select count(*) from studies").fetchone() == (1,)
    storage = f"sqlite:///{db}"
    (summary,) = optuna.get_all_study_summaries(storage)
    task, ds = result["task"], load_dataset_folder(small_phantom)
    assert summary.study_name == result["probe"]["study"]
    assert NAME.fullmatch(summary.study_name).group("dataset", "task", "model", "weights", "run") == (
        ds.card.name, "classification", "test-histogram", "random", "seed0-frac1")

    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert study.metric_names == [task["main_metric"]] == ["auroc"]
    attrs = study.user_attrs
    assert {k: attrs[k] for k in ("model", "variant", "weights", "task", "category", "dataset", "dataset_version",
                                  "split_hash", "protocol_version", "budget")} == {
        "model": "test-histogram", "variant": None, "weights": "random", "task": "classification",
        "category": "classification", "dataset": ds.card.name, "dataset_version": ds.card.version,
        "split_hash": ds.split_hash(), "protocol_version": PROTOCOL_VERSION, "budget": 2}
    assert attrs["probe_families"] == ["linear"] and attrs["probe_code"] == result["probe"]["code"]
    assert (attrs["probe_family"], attrs["probe_view"]) == ("linear", "cls")
    assert {t.params["probe"] for t in study.trials} <= set(attrs["probe_families"])

    again = _run(monkeypatch, capsys, small_phantom, tmp_path, 2)  # resumed: the budget is already spent
    assert again["probe"]["study"] == summary.study_name and len(study.trials) == 2
    more = _run(monkeypatch, capsys, small_phantom, tmp_path, 3)  # a larger budget extends the same study
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert more["probe"]["study"] == summary.study_name and len(optuna.get_all_study_summaries(storage)) == 1
    assert len(study.trials) == 3 and study.user_attrs["budget"] == 3
