"""``--precision`` and ``--model-option``: from the command line to the adapter, the feature
cache key, the result folder and result.json; defaults are each model's official precision."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from ctbench.errors import CTBenchError
from ctbench.model_options import encoder_kwargs, model_options_tag, parse_model_options
from ctbench.registry import MODELS
from tests.cli_helpers import run_cli
from tests.fakes import CARD, HistogramEncoder

BUILT_IN = ("voxelfm", "merlin", "ct-clip", "m3d", "radfm", "ct-fm")


class PrecisionEncoder(HistogramEncoder):
    """The histogram test encoder with a precision and one option, as built-in adapters declare them."""

    card = CARD.model_copy(update={"name": "test-precision"})
    default_precision = "fp32"
    built: list[dict] = []

    def __init__(self, weights: str = "random", device: str = "cpu", *, bins: int = 24,
                 precision: str | None = None) -> None:
        super().__init__(weights, device)
        self.precision = precision or self.default_precision
        self.preprocessing_id = self.card.preprocessing_hash({"bins": bins})
        PrecisionEncoder.built.append({"precision": self.precision, "bins": bins})


@pytest.fixture
def model():
    if "test-precision" not in MODELS:
        MODELS.register("test-precision")(PrecisionEncoder)
    PrecisionEncoder.built.clear()
    return "test-precision"


def test_every_built_in_adapter_defaults_to_its_official_fp32_and_takes_bf16() -> None:
    for name in BUILT_IN:
        cls = MODELS.get(name)
        assert cls.default_precision == "fp32", name  # every official inference runs in fp32
        assert "precision" in inspect.signature(cls).parameters, name


def test_option_values_are_read_as_json_else_text() -> None:
    assert parse_model_options(["hu_window=dicom", "max_tokens=null", "crop-background=false",
                                "hu_window_pair=[-1000, 1000]", "bins=12"]) == {
        "hu_window": "dicom", "max_tokens": None, "crop_background": False,
        "hu_window_pair": [-1000, 1000], "bins": 12}
    with pytest.raises(CTBenchError, match="not KEY=VALUE"):
        parse_model_options(["hu_window"])


def test_options_are_checked_against_the_adapter_signature(model) -> None:
    cls = MODELS.get("voxelfm")
    with pytest.raises(CTBenchError, match=r"no option 'window'; its options: .*hu_window.*isotropy"):
        encoder_kwargs("voxelfm", cls, "random", "cpu", options={"window": "dicom"})
    with pytest.raises(CTBenchError, match="use --precision"):
        encoder_kwargs("voxelfm", cls, "random", "cpu", options={"precision": "bf16"})
    with pytest.raises(CTBenchError, match="takes no precision setting"):
        encoder_kwargs("test-histogram", HistogramEncoder, "random", "cpu", precision="bf16")
    # defaults, and options equal to them, keep the default result folder; others get their own
    assert model_options_tag(cls) is None
    assert model_options_tag(cls, "fp32", {"hu_window": "reference", "crop_background": True}) is None
    tags = {model_options_tag(cls, "bf16"), model_options_tag(cls, None, {"hu_window": "dicom"}),
            model_options_tag(cls, None, {"isotropy": "tolerant"})}
    assert len(tags) == 3 and all(t.startswith("model") for t in tags)


def test_precision_and_options_reach_the_adapter_cache_folder_and_result(model, small_phantom, tmp_path,
                                                                        ctbench_home, monkeypatch, capsys) -> None:
    common = ["run", "-m", model, "-t", "classification", "-d", str(small_phantom), "-w", "random",
              "--trials", "2", "--bootstrap", "20", "--device", "cpu"]
    code, _, err = run_cli(monkeypatch, capsys, *common)
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, *common, "--precision", "bf16", "--model-option", "bins=12")
    assert code == 0, err
    assert PrecisionEncoder.built == [{"precision": "fp32", "bins": 24}, {"precision": "bf16", "bins": 12}]
    results = sorted((ctbench_home / "results").rglob("result.json"), key=lambda p: len(str(p)))
    assert len(results) == 2  # the bf16 run did not replace the default one
    default, changed = (json.loads(p.read_text()) for p in results)
    assert results[0].parent.name == "seed0" and results[1].parent.name.startswith("seed0-model")
    assert default["model"]["precision"] == "fp32" and default["model"]["options"] is None
    assert changed["model"]["precision"] == "bf16" and changed["model"]["options"] == {"bins": 12}
    assert changed["config"]["precision"] == "bf16" and changed["config"]["model_options"] == {"bins": 12}
    caches = sorted(p.name for p in (ctbench_home / "features" / model).iterdir())
    assert len(caches) == 2 and {c.rsplit("-", 1)[1] for c in caches} == {"fp32", "bf16"}


def test_a_misspelt_precision_is_a_usage_error(monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "run", "-m", "voxelfm", "-t", "classification", "--precision", "fp16")
    assert code == 2 and "--precision 'fp16' is not a precision; use fp32 or bf16" in err


def test_voxelfm_bf16_autocast_is_close_to_fp32_but_not_equal() -> None:
    """CPU bf16 autocast on the tiny network: the same function at lower precision (the GPU
    numbers come from benchmarks/precision_check.py)."""
    from ctbench.adapters.voxelfm import VoxelFMEncoder
    from ctbench.check_adapter import probe_volumes

    vol = probe_volumes()[0]
    full = VoxelFMEncoder(weights="random", variant="tiny", crop_background=False)
    half = VoxelFMEncoder(weights="random", variant="tiny", crop_background=False, precision="bf16")
    assert (full.precision, half.precision, full.autocast, half.autocast) == ("fp32", "bf16", False, True)
    assert full.preprocessing_id != half.preprocessing_id  # separate feature caches and studies
    a, b = full.encode(vol).embedding, half.encode(vol).embedding
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert 0.99 < cos < 1.0 and not np.array_equal(a, b)
