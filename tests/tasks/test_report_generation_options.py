"""Report-generation options as run settings: ``--llm``/``--beam``/``--device`` reach the task,
the environment stays a fallback, a flag on the wrong task is one clear error, and non-default
options get their own Optuna study and result folder while default runs keep today's names."""

import json
import re
import sys

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ctbench.cli import app, main
from ctbench.datasets import Dataset, DatasetCard, TaskSpec
from ctbench.errors import CTBenchError
from ctbench.provenance import PROTOCOL_VERSION
from ctbench.results import result_dir
from ctbench.run_config import RunConfig
from ctbench.runner import run
from ctbench.study import study_key, study_name
from ctbench.task_options import options_tag, task_kwargs
from ctbench.tasks import report_generation as rg
from ctbench.tasks.report_generation import ReportGenerationTask

SPEC = TaskSpec(name="report-generation", category="report-generation", targets=("report",),
                main_metric="finding_f1")
WRONG_TASK = ("--llm applies only to report-generation tasks, not to classification tasks (options of this "
              "category: none; see `ctbench tasks`)")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No option leaks in from the developer's shell; small models run single-threaded."""
    for name in (rg.ENV_LLM, rg.ENV_BEAM, rg.ENV_DEVICE):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_probe(monkeypatch):
    """A one-point search space with three epochs keeps a real run to a few seconds."""

    def tiny(self, trial, seed):
        return {"probe": "perceiver-decoder", "lr": trial.suggest_float("lr", 3e-3, 3e-3),
                "width": 64, "depth": 1, "epochs": trial.suggest_int("epochs", 3, 3)}

    monkeypatch.setattr(ReportGenerationTask, "suggest", tiny)


def _dataset() -> Dataset:
    m = pd.DataFrame({"case_id": ["a"], "patient_id": ["a"], "image": ["x"], "split": ["train"],
                      "report": ["No nodule."], "lung_nodule": [0]})
    return Dataset(DatasetCard(name="d", version="1", licence="-", tasks=(SPEC,)), m, root=None)


def _task(**kw) -> ReportGenerationTask:
    return ReportGenerationTask(SPEC, _dataset(), **kw)


def _cfg(**kw) -> RunConfig:
    return RunConfig(model="test-histogram", task="report-generation", **kw)


def test_run_options_map_to_task_keywords_and_the_environment_is_a_fallback(monkeypatch):
    assert task_kwargs(ReportGenerationTask, SPEC, _cfg()) == {}
    assert task_kwargs(ReportGenerationTask, SPEC, _cfg(task_options={"beam": 2}, device="cpu")) == {
        "beam": 2, "device": "cpu"}
    monkeypatch.setenv(rg.ENV_BEAM, "3")
    monkeypatch.setenv(rg.ENV_DEVICE, "cuda:7")
    assert _task().beam == 3 and _task().device == "cuda:7"  # nothing given: the environment
    given = _task(**task_kwargs(ReportGenerationTask, SPEC, _cfg(task_options={"beam": 2}, device="cpu")))
    assert given.beam == 2 and given.device == "cpu"  # the flags win
    with pytest.raises(CTBenchError, match="--temperature applies only to no registered tasks"):
        task_kwargs(ReportGenerationTask, SPEC, _cfg(task_options={"temperature": 0.5}))


def test_default_options_keep_the_study_name_and_different_options_do_not_share_one(monkeypatch, tmp_path):
    ds = _dataset()
    assert options_tag(_task()) is None and options_tag(_task(beam=1)) is None
    legacy = "|".join(["d", "1", "report-generation", SPEC.version, "test-histogram", "ab" * 8, "prep",
                       ds.split_hash()[:16], "seed0", "frac1", f"protocol{PROTOCOL_VERSION}", "code12ab"])
    assert study_key(ds, SPEC, "test-histogram", "ab" * 32, "prep", 0, 1.0, None, "12ab") == legacy
    monkeypatch.setattr(rg, "check_llm_path", lambda path: None)  # no LM folder needed to name a study
    (tmp_path / "lm").mkdir()
    tags = {options_tag(_task(beam=2)), options_tag(_task(beam=3)), options_tag(_task(llm=str(tmp_path / "lm"))),
            options_tag(_task(llm=str(tmp_path / "lm"), beam=2))}
    assert None not in tags and len(tags) == 4 and all(len(t) == len("opts") + 8 for t in tags)
    assert options_tag(_task(beam=2)) == options_tag(_task(beam=2))  # stable across instances
    # one folder, one spelling: a relative or trailing-slash path names the same study
    monkeypatch.chdir(tmp_path)
    assert options_tag(_task(llm="lm/")) == options_tag(_task(llm=str(tmp_path / "lm")))
    keys = {study_key(ds, SPEC, "test-histogram", "ab" * 32, "prep", 0, 1.0, t, "12ab") for t in tags}
    assert len(keys) == 4 and all(k.startswith(legacy + "|opts") for k in keys)
    names = {study_name(ds, SPEC, "test-histogram", "ab" * 32, "prep", 0, 1.0, t, "12ab") for t in tags}
    assert len(names | {study_name(ds, SPEC, "test-histogram", "ab" * 32, "prep", 0, 1.0, None, "12ab")}) == 5


def test_a_flag_on_a_task_that_does_not_take_it_is_one_clear_error(small_phantom, monkeypatch, capsys):
    args = ["run", "--model", "test-histogram", "--task", "classification", "--dataset", str(small_phantom),
            "--weights", "random", "--llm", "/no/such/lm"]
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, CTBenchError) and str(res.exception) == WRONG_TASK
    res = CliRunner().invoke(app, [a if a != "--llm" else "--beam" for a in args[:-1]] + ["2"])
    assert str(res.exception) == WRONG_TASK.replace("--llm", "--beam")
    monkeypatch.setattr(sys, "argv", ["ctbench", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    assert exit_.value.code == 2 and "Traceback" not in out.out + out.err
    assert " ".join(out.err.split()) == f"error: {WRONG_TASK}"


def test_cli_beam_and_device_reach_the_task_and_get_their_own_study_and_folder(
        small_phantom, tiny_probe, monkeypatch, ctbench_home):
    seen = []

    def device(self):
        seen.append(self.device)
        return torch.device("cpu")

    monkeypatch.setattr(ReportGenerationTask, "_device", device)
    monkeypatch.setenv(rg.ENV_DEVICE, "cuda:7")  # the run's --device wins over it
    res = CliRunner().invoke(app, ["run", "--model", "test-histogram", "--task", "report-generation",
                                   "--dataset", str(small_phantom), "--weights", "random", "--trials", "1",
                                   "--bootstrap", "10", "--device", "cpu", "--beam", "2"])
    assert res.exit_code == 0, res.output
    assert seen and set(seen) == {"cpu"}
    (path,) = (ctbench_home / "results").rglob("result.json")
    result = json.loads(path.read_text())
    assert result["config"]["task_options"] == {"beam": 2} and result["config"]["device"] == "cpu"
    assert result["task"]["options"]["beam"] == 2 and result["task"]["options"]["llm"] is None
    tag = result["task"]["options_tag"]
    assert tag.startswith("opts") and re.fullmatch(
        rf"seed0-frac1-{tag}-[0-9a-f]{{16}}", result["probe"]["study"].split("/")[-1])
    from ctbench.datasets import load_dataset_folder

    name = load_dataset_folder(small_phantom).card.name
    default = result_dir(ctbench_home / "results", name, "report-generation", "test-histogram", "random", 0)
    assert path.parent == default.with_name(f"seed0-{tag}")
    assert json.loads((path.parent / "finding_scores.json").read_text())["options"]["beam"] == 2


def test_a_default_run_keeps_its_study_name_and_result_folder(small_phantom, tiny_probe, ctbench_home):
    path, result = run(_cfg(dataset=str(small_phantom), weights="random", trials=1, device="cpu", n_boot=10))
    from ctbench.datasets import load_dataset_folder

    name = load_dataset_folder(small_phantom).card.name
    assert path == result_dir(ctbench_home / "results", name, "report-generation", "test-histogram",
                              "random", 0) / "result.json"
    study = result["probe"]["study"].split("/")
    assert study[:4] == [name, "report-generation", "test-histogram", "random"]
    assert len(study) == 5 and re.fullmatch(r"seed0-frac1-[0-9a-f]{16}", study[4])
    assert result["config"]["task_options"] == {} and result["task"]["options_tag"] is None
    assert result["task"]["options"]["beam"] == 1


# -- a broken --llm folder: one error naming it, before any extraction -----------------------------

def _lm_folder(tmp_path, case: str):
    folder = tmp_path / "lm"
    if case == "missing":
        return folder
    if case == "a file":
        folder.write_text("not a folder")
        return folder
    folder.mkdir()
    config = {"no config.json": None, "garbage config": "{model_type: gpt2",
              "config not an object": "[1, 2]", "no model_type": '{"n_layer": 1}',
              "unknown model_type": '{"model_type": "my-remote-lm"}',
              "not a causal LM": '{"model_type": "vit"}',
              "no weights": '{"model_type": "gpt2"}'}[case]
    if config is not None:
        (folder / "config.json").write_text(config)
    return folder


@pytest.mark.parametrize("case, needle", [
    ("missing", "does not exist"), ("a file", "is a file"), ("no config.json", "no config.json"),
    ("garbage config", "cannot read"), ("config not an object", "not a JSON object"),
    ("no model_type", "no 'model_type'"), ("unknown model_type", "unknown to the installed transformers"),
    ("not a causal LM", "not a causal"), ("no weights", "no weights there"),
])
def test_a_broken_llm_folder_is_one_clear_error_when_the_task_is_built(tmp_path, case, needle):
    pytest.importorskip("transformers")
    folder = _lm_folder(tmp_path, case)
    with pytest.raises(CTBenchError) as err:
        _task(llm=str(folder))
    assert needle in str(err.value) and str(folder) in str(err.value)


def test_llm_without_transformers_installed_says_how_to_install(tmp_path, monkeypatch):
    folder = _lm_folder(tmp_path, "no weights")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(CTBenchError, match=r"pip install 'ctbench\[llm\]'"):
        _task(llm=str(folder))


def test_weights_that_cannot_be_loaded_are_one_error_naming_the_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ctbench.tasks import report_decoder as rd

    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=8, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "lm")
    weights = tmp_path / "lm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # cut short by a failed copy
    task = _task(llm=str(tmp_path / "lm"))  # the up-front checks pass: the folder looks right
    with pytest.raises(CTBenchError) as err:
        rd.load_llm(task.llm)
    assert str(tmp_path / "lm") in str(err.value) and "cannot load the model" in str(err.value)


# -- report cells that are not report text -----------------------------------------------------

def _reports(values) -> Dataset:
    n = len(values)
    m = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                      "image": ["x"] * n, "split": ["train"] * n, "report": values})
    return Dataset(DatasetCard(name="d", version="1", licence="-", tasks=(SPEC,)), m, root=None)


def test_missing_or_blank_reports_are_left_out_and_never_become_text():
    ds = _reports(["No nodule.", None, float("nan"), "  ", ""])
    task = ReportGenerationTask(SPEC, ds)
    assert task.usable(ds.manifest).tolist() == [True, False, False, False, False]
    assert "nan" not in task.targets(ds.manifest).tolist()
    assert task.targets(ds.manifest[task.usable(ds.manifest)]).tolist() == ["No nodule."]


@pytest.mark.parametrize("values, shown", [(["No nodule.", 3, None], "holds 3 for case 'c1'"),
                                           ([1.5, 2.0, float("nan")], "holds 1.5 for case 'c0'"),
                                           (["ok", True, "fine"], "holds True for case 'c1'")])
def test_numbers_in_the_report_column_are_refused_by_column_and_case(values, shown):
    with pytest.raises(CTBenchError) as err:
        ReportGenerationTask(SPEC, _reports(values))
    assert "column 'report'" in str(err.value) and shown in str(err.value)
    assert "free-text report" in str(err.value)
