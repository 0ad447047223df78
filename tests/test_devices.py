"""One device resolution for the run, the dense heads and the report-generation probe: a bad
``--device`` or ``CTBENCH_REPORT_DEVICE`` is one line naming the value and the fix."""

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ctbench.cli import app
from ctbench.datasets import Dataset, DatasetCard, TaskSpec, open_dataset
from ctbench.devices import check_device_name, resolve_device
from ctbench.errors import CTBenchError
from ctbench.runner import RunConfig, task_kwargs
from ctbench.tasks import report_generation as rg
from ctbench.tasks.localisation import LocalisationTask
from ctbench.tasks.segmentation import SegmentationTask

NOT_A_DEVICE = "--device 'gpu' is not a device; use auto, cpu, cuda or cuda:N (e.g. --device cpu)"
NO_GPU = "--device 'cuda' asks for a CUDA GPU but none is visible; use --device cpu (or auto)"


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without a visible CUDA GPU, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_is_the_cpu_without_a_gpu_and_bad_values_are_one_line_errors(no_gpu):
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    assert resolve_device("cpu") == "cpu" and check_device_name(" cuda:1 ") == "cuda:1"
    with pytest.raises(CTBenchError) as e:
        resolve_device("gpu")
    assert str(e.value) == NOT_A_DEVICE
    for name in ("cuda", "cuda:0"):
        with pytest.raises(CTBenchError) as e:
            resolve_device(name)
        assert str(e.value) == NO_GPU.replace("'cuda'", repr(name))
    with pytest.raises(CTBenchError) as e:
        resolve_device("cuda", source=rg.ENV_DEVICE)
    assert str(e.value) == ("CTBENCH_REPORT_DEVICE 'cuda' asks for a CUDA GPU but none is visible; "
                            "use CTBENCH_REPORT_DEVICE=cpu (or auto)")
    for bad in ("cuda:x", "cuda:", "CPU", ""):
        with pytest.raises(CTBenchError, match="is not a device; use auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


def test_a_visible_gpu_is_used_for_auto_and_its_index_is_checked(one_gpu):
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(CTBenchError) as e:
        resolve_device("cuda:1")
    assert str(e.value) == ("--device 'cuda:1': only 1 CUDA GPU(s) are visible (cuda:0 to cuda:0); "
                            "use one of those, --device cuda or auto")


@pytest.mark.parametrize("task_cls", [LocalisationTask, SegmentationTask])
@pytest.mark.parametrize("run_device, task_device", [("cpu", "cpu"), ("auto", "auto")])
def test_the_runs_device_reaches_the_dense_task(small_phantom, task_cls, run_device, task_device):
    """The runner passes ``--device`` to a dense task (it declares ``takes_device``);
    ``auto`` is not passed, so the task resolves it itself when its head trains."""
    dataset = open_dataset(str(small_phantom))
    spec = dataset.card.task(task_cls.category)
    cfg = RunConfig(model="test-histogram", task=spec.name, device=run_device)
    kwargs = task_kwargs(task_cls, spec, cfg)
    assert kwargs == ({"device": "cpu"} if run_device == "cpu" else {})
    task = task_cls(spec, dataset, **kwargs)
    assert task.device == task_device and task.takes_device and task.uses_tokens
    assert task.is_stochastic({"probe": "linear"})


@pytest.mark.parametrize("task_cls", [LocalisationTask, SegmentationTask])
def test_dense_tasks_check_their_device_when_built_and_resolve_it_for_the_head(small_phantom, no_gpu, task_cls):
    dataset = open_dataset(str(small_phantom))
    spec = dataset.card.task(task_cls.category)
    with pytest.raises(CTBenchError) as e:
        task_cls(spec, dataset, device="gpu")
    assert str(e.value) == NOT_A_DEVICE
    assert task_cls(spec, dataset).head_device() == torch.device("cpu")  # auto without a GPU
    with pytest.raises(CTBenchError) as e:
        task_cls(spec, dataset, device="cuda").head_device()
    assert str(e.value) == NO_GPU


def _report_task(**kw) -> rg.ReportGenerationTask:
    spec = TaskSpec(name="report-generation", category="report-generation", targets=("report",),
                    main_metric="finding_f1")
    m = pd.DataFrame({"case_id": ["a"], "patient_id": ["a"], "image": ["x"], "split": ["train"],
                      "report": ["No nodule."], "lung_nodule": [0]})
    return rg.ReportGenerationTask(spec, Dataset(DatasetCard(name="d", version="1", licence="-", tasks=(spec,)),
                                                 m, root=None), **kw)


def test_the_report_device_from_the_environment_is_checked_and_named(monkeypatch, no_gpu):
    monkeypatch.delenv(rg.ENV_DEVICE, raising=False)
    assert _report_task()._device() == torch.device("cpu")
    monkeypatch.setenv(rg.ENV_DEVICE, "gpu")
    with pytest.raises(CTBenchError) as e:  # misspelt: fails when the task is built, before any work
        _report_task()
    assert str(e.value) == ("CTBENCH_REPORT_DEVICE 'gpu' is not a device; use auto, cpu, cuda or cuda:N "
                            "(e.g. CTBENCH_REPORT_DEVICE=cpu)")
    monkeypatch.setenv(rg.ENV_DEVICE, "cuda")
    task = _report_task()
    with pytest.raises(CTBenchError) as e:  # no GPU: a one-line error, not a torch traceback in a trial
        task._device()
    assert str(e.value) == NO_GPU.replace("--device", rg.ENV_DEVICE).replace("use CTBENCH_REPORT_DEVICE cpu",
                                                                            "use CTBENCH_REPORT_DEVICE=cpu")
    with pytest.raises(CTBenchError) as e:  # the run's flag wins, and is the one named
        _report_task(device="cuda:0")._device()
    assert str(e.value) == NO_GPU.replace("'cuda'", "'cuda:0'")
    assert _report_task(device="cpu")._device() == torch.device("cpu")


def test_cli_device_typo_is_one_error_line(small_phantom):
    res = CliRunner().invoke(app, ["run", "--model", "test-histogram", "--task", "localisation", "--dataset",
                                   str(small_phantom), "--weights", "random", "--device", "gpu"])
    assert isinstance(res.exception, CTBenchError) and str(res.exception) == NOT_A_DEVICE
