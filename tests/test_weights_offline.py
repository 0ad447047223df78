"""``--weights auto`` without network fails in seconds naming the local path; a weights file
that is not what its name says is one error naming the file."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest

from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.weights import load_state_dict, resolve_weights

CARD = ModelCard(
    name="test-hub", title="t", citation="-", licence="MIT", architecture="-", parameters=0, embedding_dim=2,
    supervision="none",
    input=InputSpec(orientation="native", spacing_mm="native", intensity="HU", spatial_size="native",
                    axis_order="(X, Y, Z)"),
    weights=WeightsSpec(hub_repo="someone/model", filename="ckpt/model.safetensors", format="safetensors"),
)


class ConnectError(Exception):
    """Named like the hub client's (httpx) connection error."""


@pytest.fixture
def hub(monkeypatch):
    """The hub client with every call recorded; ``calls`` lists them."""
    import huggingface_hub

    calls: list[str] = []

    def metadata(url, timeout=None):
        calls.append("metadata")
        raise ConnectError("[Errno -3] Temporary failure in name resolution")

    def download(**kwargs):
        calls.append("download")
        raise AssertionError("no download after a connection error")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return calls


def test_hf_hub_offline_is_honoured_before_any_network_call(hub, monkeypatch, ctbench_home: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(CTBenchError) as e:
        resolve_weights(CARD, "auto")
    assert time.perf_counter() - started < 5 and hub == []
    msg = str(e.value)
    assert "HF_HUB_OFFLINE" in msg and str(ctbench_home / "weights" / "test-hub" / "model.safetensors") in msg
    assert "--weights PATH" in msg


def test_the_first_connection_error_fails_at_once(hub, ctbench_home: Path):
    started = time.perf_counter()
    with pytest.raises(CTBenchError) as e:
        resolve_weights(CARD, "auto")
    assert time.perf_counter() - started < 5 and hub == ["metadata"]
    msg = str(e.value)
    assert "no connection" in msg and str(ctbench_home / "weights" / "test-hub" / "model.safetensors") in msg


@pytest.mark.parametrize("content", [pickle.dumps({"weight": [1.0, 2.0]}), b"\x00garbage" * 3, b""])
def test_a_safetensors_name_on_something_else_is_one_error(tmp_path: Path, content: bytes):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(CTBenchError) as e:
        load_state_dict(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a readable safetensors file") and ".pt/.pth" in msg


def test_a_bad_safetensors_path_fails_when_resolved(tmp_path: Path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(pickle.dumps({"weight": 1}))
    with pytest.raises(CTBenchError, match="not a readable safetensors file"):
        resolve_weights(CARD, path)  # before any adapter builds its network
