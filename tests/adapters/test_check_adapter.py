"""Adapter tooling: ``check-adapter`` on the real adapters and on deliberately broken fakes,
``weights pull`` (hub mocked) and ``weights extract radfm`` on a small fake archive."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from safetensors import safe_open
from typer.testing import CliRunner

from ctbench.adapters._common import affine_of, load_strict, read_checkpoint, token_affine
from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.check_adapter import command as check_command
from ctbench.check_adapter import resolve_adapter, run_checks
from ctbench.errors import CTBenchError
from ctbench.registry import MODELS
from ctbench.types import Features
from ctbench.weights import resolve_weights, seeded_init
from ctbench import weights_cli
from ctbench.weights_cli import app as weights_app
from ctbench.weights_cli import extract_encoder

FAKE_CARD = ModelCard(
    name="test-patch",
    title="4^3 patch-embedding test encoder",
    citation="none",
    licence="CC0-1.0",
    architecture="Conv3d 4^3 stride 4",
    parameters=8 * 64 + 8,
    embedding_dim=8,
    token_dim=8,
    supervision="none",
    input=InputSpec(orientation="native", spacing_mm="native", hu_window=(-1000, 1000),
                    intensity="HU / 1000", spatial_size="native, cropped to multiples of 4",
                    axis_order="(B, 1, X, Y, Z)"),
    weights=WeightsSpec(format="safetensors"),
)


class PatchEncoder:
    """A tiny but complete adapter (strict loading, geometry, hooks); subclasses break one rule."""

    card = FAKE_CARD
    out_dim = 8

    def __init__(self, weights: str = "random", device: str = "cpu") -> None:
        self.weights_ref = resolve_weights(self.card, weights)
        with seeded_init():
            self.model = torch.nn.Conv3d(1, self.out_dim, 4, stride=4)
        if not self.weights_ref.is_random:
            self.load(str(self.weights_ref.path))
        self.preprocessing_id = self.card.preprocessing_hash({"patch": 4})

    def load(self, path: str) -> None:
        load_strict(self.model, read_checkpoint(path, "test-patch"), path, "test-patch")

    def token_affine(self, aff: np.ndarray, grid: tuple) -> np.ndarray:
        return token_affine(aff, (4, 4, 4))

    def encode(self, volume) -> Features:
        x = volume.as_tensor()[None].float() / 1000.0
        with torch.no_grad():
            tok = self.model(x)[0]
        return Features(tok.mean(dim=(1, 2, 3)).numpy(), tok.numpy(), self.token_affine(affine_of(volume), tok.shape[1:]))


class WrongDim(PatchEncoder):
    out_dim = 7  # the card says 8


class FlippedAffine(PatchEncoder):
    def token_affine(self, aff, grid):
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        flip[0, 3] = grid[0] - 1
        return super().token_affine(aff, grid) @ flip


class Noisy(PatchEncoder):
    def encode(self, volume):
        f = super().encode(volume)
        return Features(f.embedding + np.random.default_rng().normal(size=8).astype(np.float32), f.tokens, f.token_affine)


class IgnoresWeights(PatchEncoder):
    def load(self, path: str) -> None:
        pass  # accepts any file and keeps random weights


class Downloads(PatchEncoder):
    def __init__(self, weights: str = "random", device: str = "cpu") -> None:
        socket.socket().connect(("127.0.0.1", 9))  # e.g. a torchvision pretrained download
        super().__init__(weights, device)


FAKES = {"test-patch": PatchEncoder, "test-patch-wrongdim": WrongDim, "test-patch-flipped": FlippedAffine,
         "test-patch-noisy": Noisy, "test-patch-noload": IgnoresWeights, "test-patch-download": Downloads}


@pytest.fixture(autouse=True, scope="module")
def _registered_fakes():
    """Register the fakes (and the hub fake below) for this module only."""
    added = {**FAKES, "test-hub": HubModel}
    for name, cls in added.items():
        MODELS.register(name)(cls)
    yield
    for name in added:
        MODELS._objs.pop(name, None)


def _cli() -> typer.Typer:
    """The wiring ctbench.cli gets: `check-adapter` and the `weights` sub-app."""
    app = typer.Typer()
    app.command("check-adapter")(check_command)
    app.add_typer(weights_app, name="weights")
    return app


def _failed(checks) -> list[str]:
    return [c.name for c in checks if not c.ok]


@pytest.mark.parametrize("ref", ["merlin", "ct-fm", "ct-clip", "m3d", "radfm", "voxelfm", "fmcib"])
def test_real_adapters_pass_every_check(ref: str) -> None:
    checks = run_checks(ref, variant="tiny" if ref == "voxelfm" else "test")
    assert _failed(checks) == []
    names = {c.name for c in checks}
    assert {"geometry: blob token", "geometry: preprocessing affine", "weights round trip", "deterministic"} <= names


def test_cli_passes_a_good_adapter_and_fails_a_wrong_embedding_dim() -> None:
    runner = CliRunner()
    good = runner.invoke(_cli(), ["check-adapter", "test-patch"])
    assert good.exit_code == 0, good.output
    assert "FAIL" not in good.output and "pass" in good.output
    bad = runner.invoke(_cli(), ["check-adapter", "test-patch-wrongdim"])
    assert bad.exit_code == 1
    assert "FAIL" in bad.output and "expected (8,)" in bad.output


@pytest.mark.parametrize(
    "name, failing",
    [
        ("test-patch-wrongdim", ["embedding shape/dtype", "tokens shape/dtype"]),
        ("test-patch-flipped", ["geometry: blob token"]),
        ("test-patch-noisy", ["deterministic"]),
        ("test-patch-noload", ["weights round trip"]),
        ("test-patch-download", ["construct offline (random weights)"]),
    ],
)
def test_broken_adapters_fail_the_right_check(name: str, failing: list[str]) -> None:
    assert _failed(run_checks(name)) == failing


def test_adapter_references_resolve_or_explain() -> None:
    assert resolve_adapter("ctbench.adapters.ctfm:CTFMEncoder").card.name == "ct-fm"
    with pytest.raises(CTBenchError, match="adapter could not be loaded from"):
        resolve_adapter("ctbench.adapters.ctfm:Nope")
    with pytest.raises(CTBenchError, match="Did you mean 'test-patch'"):
        resolve_adapter("test-patc")


def test_adapter_modules_import_without_torch_or_monai() -> None:
    code = ("import sys, ctbench.adapters.merlin as m, ctbench.adapters.ctfm as c, ctbench.adapters._common;"
            "print(m.CARD.parameters, c.CARD.parameters, 'torch' in sys.modules, 'monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["121882204", "77760992", "False", "False"]


# ---------------------------------------------------------------------------- weights pull

HUB_BYTES = b"pretend these are weights"


class HubModel(PatchEncoder):
    card = FAKE_CARD.model_copy(update={
        "name": "test-hub",
        "weights": WeightsSpec(hub_repo="someone/model", filename="ckpt/model.safetensors",
                               revision="0123456789abcdef0123456789abcdef01234567",
                               sha256=hashlib.sha256(HUB_BYTES).hexdigest(), format="safetensors"),
    })


def test_weights_pull_downloads_pinned_revision_and_checks_sha(monkeypatch, ctbench_home: Path) -> None:
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, revision, repo_type, local_dir):
        calls.append((repo_id, filename, revision, repo_type))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(HUB_BYTES)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, timeout=None: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    runner = CliRunner()
    res = runner.invoke(_cli(), ["weights", "pull", "test-hub"])
    assert res.exit_code == 0, res.output
    target = ctbench_home / "weights" / "test-hub" / "model.safetensors"
    assert target.read_bytes() == HUB_BYTES
    assert calls == [("someone/model", "ckpt/model.safetensors", "0123456789abcdef0123456789abcdef01234567", "model")]
    assert hashlib.sha256(HUB_BYTES).hexdigest() in res.output.replace("\n", "")
    assert runner.invoke(_cli(), ["weights", "pull", "test-hub"]).exit_code == 0
    assert len(calls) == 1  # the verified cached copy is reused
    target.write_bytes(b"tampered")
    res = runner.invoke(_cli(), ["weights", "pull", "test-hub"])
    assert isinstance(res.exception, CTBenchError) and "does not match" in str(res.exception)
    assert runner.invoke(_cli(), ["weights", "pull", "test-hub", "--force"]).exit_code == 0
    assert target.read_bytes() == HUB_BYTES and len(calls) == 2
    res = runner.invoke(_cli(), ["weights", "pull", "test-patch"])
    assert isinstance(res.exception, CTBenchError) and "names no hub file" in str(res.exception)
    monkeypatch.setitem(weights_cli.EXTRACTORS, "test-hub", weights_cli.EXTRACTORS["radfm"])
    res = runner.invoke(_cli(), ["weights", "pull", "test-hub"])
    assert isinstance(res.exception, CTBenchError) and "weights extract test-hub FILE" in str(res.exception)


# ------------------------------------------------------------------------- weights extract

def _fake_radfm(path: Path, legacy: bool = False) -> dict[str, torch.Tensor]:
    vision = {
        "embedding_layer.vision_encoder.to_patch_embedding.1.weight": torch.randn(16, 12),
        "embedding_layer.vision_encoder.pos_embedding.row_embed.weight": torch.randn(4, 6),
        "embedding_layer.vision_encoder.transformer.layers.0.0.norm.weight": torch.randn(16).to(torch.bfloat16),
    }
    other = {
        "lang_model.model.embed_tokens.weight": torch.randn(50, 16),
        "embedding_layer.perceiver.latents": torch.randn(3, 16),
        "embedding_layer.fc.weight": torch.randn(16, 16),
    }
    torch.save({**other, **vision}, path, _use_new_zipfile_serialization=not legacy)
    return vision


def test_extract_radfm_keeps_only_the_vision_encoder(tmp_path: Path, ctbench_home: Path) -> None:
    archive = tmp_path / "pytorch_model.bin"
    vision = _fake_radfm(archive)
    res = CliRunner().invoke(_cli(), ["weights", "extract", "radfm", str(archive)])
    assert res.exit_code == 0, res.output
    out = ctbench_home / "weights" / "radfm" / "radfm_vision.safetensors"
    with safe_open(str(out), framework="pt") as f:
        assert set(f.keys()) == set(vision)
        for k, v in vision.items():
            got = f.get_tensor(k)
            assert got.dtype == v.dtype and torch.equal(got, v)
        assert f.metadata()["source"] == "pytorch_model.bin"
    custom = tmp_path / "small.safetensors"
    path, n = extract_encoder("radfm", archive, custom)
    assert (path, n) == (custom, 3) and custom.is_file()


def test_extract_radfm_errors_are_actionable(tmp_path: Path) -> None:
    wrong = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, wrong)
    with pytest.raises(CTBenchError, match="no tensors under 'embedding_layer.vision_encoder.'"):
        extract_encoder("radfm", wrong, tmp_path / "x.safetensors")
    with pytest.raises(CTBenchError, match="does not exist"):
        extract_encoder("radfm", tmp_path / "missing.bin")
    with pytest.raises(CTBenchError, match="no extractor for 'm3d'"):
        extract_encoder("m3d", wrong)
    legacy = tmp_path / "legacy.bin"
    vision = _fake_radfm(legacy, legacy=True)
    with pytest.raises(CTBenchError, match="--no-mmap"):
        extract_encoder("radfm", legacy, tmp_path / "y.safetensors")
    path, n = extract_encoder("radfm", legacy, tmp_path / "y.safetensors", mmap=False)
    assert n == len(vision)
