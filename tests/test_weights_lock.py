"""The weights lock: the first pull records the hub commit and sha256, later resolutions use and
check them, a changed file is refused with the fix, and result.json records the revision.

No network: the two huggingface_hub calls ``ctbench.weights`` makes are replaced by a fake hub
whose ``main`` can move to a new commit with new bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ctbench.card import WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.registry import MODELS
from ctbench.weights import WeightsRef, cached_weights_path, resolve_weights
from ctbench.weights_lock import lock_path, read_lock
from tests.cli_helpers import run_cli
from tests.fakes import CARD, HistogramEncoder

OLD, NEW = "1" * 40, "2" * 40  # two commits of the fake hub repository
HUB_CARD = CARD.model_copy(update={"name": "test-hub", "weights": WeightsSpec(
    hub_repo="org/test-hub", filename="encoder.safetensors", revision=None, sha256=None, format="safetensors")})


class FakeHub:
    """``main`` points at a commit; each commit holds other bytes. Records what was asked."""

    def __init__(self) -> None:
        self.main = OLD
        self.asked: list[str | None] = []  # revision of every download

    @staticmethod
    def payload(commit: str) -> bytes:
        return f"weights at {commit}".encode()

    def metadata(self, url: str, timeout=None):
        commit = url.split("/resolve/")[1].split("/")[0]
        return type("Meta", (), {"commit_hash": self.main if commit == "main" else commit})()

    def download(self, repo_id, filename, revision, repo_type, local_dir):
        self.asked.append(revision)
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.payload(revision))
        return str(path)


@pytest.fixture
def hub(monkeypatch) -> FakeHub:
    import huggingface_hub

    fake = FakeHub()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake.metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.download)
    return fake


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_first_resolution_locks_commit_and_sha256_later_ones_reuse_them(hub: FakeHub) -> None:
    ref = resolve_weights(HUB_CARD, "auto")
    assert ref.revision == OLD and ref.sha256 == sha(FakeHub.payload(OLD)) and hub.asked == [OLD]
    lock = json.loads(lock_path().read_text())  # the file on disk, as a user would read it
    entry = lock["models"]["test-hub"]
    assert (entry["hub_repo"], entry["filename"], entry["revision"], entry["sha256"]) == (
        "org/test-hub", "encoder.safetensors", OLD, sha(FakeHub.payload(OLD)))
    # the hub's main moves on; a lost local file is downloaded again at the locked commit
    hub.main = NEW
    cached_weights_path(HUB_CARD).unlink()
    again = resolve_weights(HUB_CARD, "auto")
    assert hub.asked == [OLD, OLD] and again == ref
    assert resolve_weights(HUB_CARD, "auto") == ref and len(hub.asked) == 2  # cached: no download


def test_a_changed_file_is_refused_with_both_digests_and_the_fix(hub: FakeHub) -> None:
    good = resolve_weights(HUB_CARD, "auto")
    path = cached_weights_path(HUB_CARD)
    path.write_bytes(b"tampered")
    with pytest.raises(CTBenchError) as ei:
        resolve_weights(HUB_CARD, "auto")
    msg = str(ei.value)
    for part in (str(path), good.sha256, sha(b"tampered"), OLD, str(lock_path()),
                 "ctbench weights pull test-hub --force"):
        assert part in msg


def test_a_file_put_in_place_by_hand_is_locked_from_then_on(hub: FakeHub) -> None:
    path = cached_weights_path(HUB_CARD)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"copied from another machine")
    ref = resolve_weights(HUB_CARD, "auto")
    assert ref == WeightsRef(path, sha(b"copied from another machine"), None) and hub.asked == []
    assert read_lock()["test-hub"].sha256 == ref.sha256 and read_lock()["test-hub"].revision is None
    path.write_bytes(b"changed")
    with pytest.raises(CTBenchError, match="differs from"):
        resolve_weights(HUB_CARD, "auto")


def test_a_damaged_lock_file_names_itself_and_the_fix(hub: FakeHub) -> None:
    lock_path().parent.mkdir(parents=True)
    lock_path().write_text("{not json")
    with pytest.raises(CTBenchError, match=r"lock\.json is not a ctbench weights lock.*delete it"):
        resolve_weights(HUB_CARD, "auto")


class HubEncoder(HistogramEncoder):
    """The histogram test encoder behind a hub card: ``auto`` goes through the weights lock."""

    card = HUB_CARD

    def __init__(self, weights: str = "auto", device: str = "cpu") -> None:
        super().__init__(weights, device)
        self.weights_ref = resolve_weights(HUB_CARD, weights)


@pytest.fixture
def hub_model(monkeypatch):
    if "test-hub" not in MODELS:
        MODELS.register("test-hub")(HubEncoder)
    return "test-hub"


def test_pull_update_moves_the_lock_and_results_record_the_revision(hub, hub_model, small_phantom, tmp_path,
                                                                     monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "weights", "pull", hub_model)
    assert code == 0 and f"revision {OLD}" in out and "lock.json" in out, err
    hub.main = NEW
    code, out, _ = run_cli(monkeypatch, capsys, "weights", "pull", hub_model)  # cached: checked, not moved
    assert code == 0 and f"revision {OLD}" in out and hub.asked == [OLD]
    code, out, _ = run_cli(monkeypatch, capsys, "weights", "pull", hub_model, "--update")
    assert code == 0 and f"revision {NEW}" in out and hub.asked == [OLD, NEW]
    assert read_lock()["test-hub"].sha256 == sha(FakeHub.payload(NEW))

    code, out, err = run_cli(monkeypatch, capsys, "run", "-m", hub_model, "-t", "classification", "-d",
                             str(small_phantom), "--trials", "2", "--bootstrap", "20", "--device", "cpu",
                             "--out", str(tmp_path / "r"))
    assert code == 0, err
    weights = json.loads((tmp_path / "r" / "result.json").read_text())["model"]["weights"]
    assert weights["revision"] == NEW and weights["sha256"] == sha(FakeHub.payload(NEW))
