"""SPECTRE adapter: crop-grid geometry and windowing against hand-computed values, the RoPE
periods, strict loading of the published two-file layout, and ``check-adapter`` on the CLI.
(Parity with the official package: tests/parity/test_parity_spectre.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ctbench.adapters._common import affine_of
from ctbench.adapters.spectre import BACKBONE_FILE, COMBINER_FILE, SpectreEncoder
from ctbench.errors import CTBenchError
from ctbench.weights import seeded_init
from tests.adapters._helpers import write_checkpoint
from tests.cli_helpers import run_cli


def _volume(values: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(values, dtype=torch.float32)[None], affine=torch.as_tensor(affine))


@pytest.fixture(scope="module")
def encoder() -> SpectreEncoder:
    return SpectreEncoder(weights="random", variant="test")


def test_crop_centres_land_at_hand_computed_world_points(encoder: SpectreEncoder) -> None:
    # Oblique (10 degrees about z), non-RAS file: index axes run towards P (1.5 mm), L (1.0 mm), S (2.0 mm).
    t = np.deg2rad(10.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.array([[0.0, -1.0, 0.0], [-1.5, 0.0, 0.0], [0.0, 0.0, 2.0]])
    aff[:3, 3] = [80.0, 60.0, -90.0]
    shape = (150, 300, 70)
    x = encoder.preprocess(_volume(np.zeros(shape, np.float32), aff))
    # RAS (a, b, c) = (299 - i1, 149 - i0, i2): shape (300, 150, 70), no padding; centre crop to
    # (256, 128, 64) starts at 300//2 - 128 = 22, 150//2 - 64 = 11, 70//2 - 32 = 3: a 2 x 1 x 1 grid.
    assert tuple(x.shape) == (1, 256, 128, 64)
    f = encoder.encode(_volume(np.zeros(shape, np.float32), aff))
    assert f.tokens.shape == (48, 2, 1, 1)
    for h in range(2):
        a, b, c = 22 + 128 * h + 63.5, 11 + 63.5, 3 + 31.5  # crop centre in the RAS grid
        want = aff @ np.array([149 - b, 299 - a, c, 1.0])  # back to the file's index, then world
        got = f.token_affine @ np.array([h, 0, 0, 1.0])
        np.testing.assert_allclose(got[:3], want[:3], atol=1e-6)
    np.testing.assert_allclose(f.token_affine, encoder.token_affine(affine_of(x)))


def test_window_and_symmetric_padding_by_hand(encoder: SpectreEncoder) -> None:
    hu = np.zeros((100, 90, 40), np.float32)
    hu[0, 0, 0], hu[1, 0, 0], hu[2, 0, 0], hu[3, 0, 0], hu[4, 0, 0] = -2000, -1000, 500, 1000, 3000
    aff = np.diag([0.8, 0.7, 2.5, 1.0])
    aff[:3, 3] = [-10.0, 20.0, 5.0]
    x = encoder.preprocess(_volume(hu, aff))
    # every axis shorter than its crop: padded to (128, 128, 64), (28, 38, 24) voxels split 14 / 19 / 12 before
    assert tuple(x.shape) == (1, 128, 128, 64)
    v = x[0].numpy()
    assert v[14 + np.arange(5), 19, 12].tolist() == [0.0, 0.0, 0.75, 1.0, 1.0]  # (HU + 1000) / 2000, clipped
    assert v[13, 19, 12] == 0.0 and v[14, 18, 12] == 0.0 and v[14 + 50, 19 + 50, 12 + 20] == 0.5
    want = aff.copy()
    want[:3, 3] -= np.array([14, 19, 12]) * np.array([0.8, 0.7, 2.5])
    np.testing.assert_allclose(affine_of(x), want, atol=1e-6)


def test_rope_periods_follow_the_official_formula() -> None:
    from ctbench.adapters.spectre import build_network

    with seeded_init():
        net = build_network("test")  # head_dim 24: 4 periods per axis
    np.testing.assert_allclose(net.backbone.rope.periods.numpy(), [1000 ** (k / 4) for k in range(4)], rtol=1e-6)
    np.testing.assert_allclose(net.feature_combiner.rope.periods.numpy(), [100 ** (k / 4) for k in range(4)], rtol=1e-6)


def _official_files(folder: Path, encoder: SpectreEncoder) -> dict[str, dict[str, torch.Tensor]]:
    state = encoder.model.state_dict()
    parts = {}
    for prefix, name in (("backbone.", BACKBONE_FILE), ("feature_combiner.", COMBINER_FILE)):
        parts[name] = {k[len(prefix):]: v.clone() for k, v in state.items() if k.startswith(prefix)}
    return parts


def test_published_two_file_layout_loads_strictly(tmp_path: Path, encoder: SpectreEncoder) -> None:
    parts = _official_files(tmp_path, encoder)
    parts[COMBINER_FILE]["cls_token"] += 0.5  # a different combiner must reach the network
    for name, part in parts.items():
        write_checkpoint(tmp_path / name, part)
    enc = SpectreEncoder(weights=str(tmp_path / BACKBONE_FILE), variant="test")
    assert torch.equal(enc.model.feature_combiner.cls_token, parts[COMBINER_FILE]["cls_token"])
    assert torch.equal(enc.model.backbone.rope.periods, parts[BACKBONE_FILE]["rope.periods"])
    assert enc.combiner_ref is not None and enc.combiner_ref.path == tmp_path / COMBINER_FILE
    assert enc.preprocessing_id != encoder.preprocessing_id  # the combiner's sha256 keys the cache


def test_strict_loading_refuses_with_one_clear_message(tmp_path: Path, encoder: SpectreEncoder) -> None:
    parts = _official_files(tmp_path, encoder)
    (tmp_path / "alone").mkdir()
    alone = write_checkpoint(tmp_path / "alone" / BACKBONE_FILE, parts[BACKBONE_FILE])
    with pytest.raises(CTBenchError, match=f"{COMBINER_FILE} lies beside it"):
        SpectreEncoder(weights=str(alone), variant="test")
    backbone = dict(parts[BACKBONE_FILE])
    backbone["blocks.0.attn.qkv.weight"] = backbone.pop("blocks.0.attn.q.weight")
    write_checkpoint(tmp_path / BACKBONE_FILE, backbone)
    write_checkpoint(tmp_path / COMBINER_FILE, parts[COMBINER_FILE])
    with pytest.raises(CTBenchError) as err:
        SpectreEncoder(weights=str(tmp_path / BACKBONE_FILE), variant="test")
    msg = str(err.value)
    assert str(tmp_path / BACKBONE_FILE) in msg and "missing keys 'blocks.0.attn.q.weight'" in msg
    assert "unexpected keys 'blocks.0.attn.qkv.weight'" in msg
    combined = {k: v for k, v in encoder.model.state_dict().items() if k != "feature_combiner.norm.bias"}
    (tmp_path / "one").mkdir()
    path = write_checkpoint(tmp_path / "one" / "spectre.pt", combined)
    with pytest.raises(CTBenchError, match="missing keys 'feature_combiner.norm.bias'"):
        SpectreEncoder(weights=str(path), variant="test")


def test_auto_is_refused_for_a_variant_without_weights() -> None:
    with pytest.raises(CTBenchError, match="variant 'base' has no published weights"):
        SpectreEncoder(weights="auto", variant="base")


def test_check_adapter_passes_on_the_test_variant(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "check-adapter", "spectre", "--variant", "test")
    assert code == 0, out
    assert "FAIL" not in out and "weights round trip" in out


def test_module_imports_without_torch_or_monai() -> None:
    code = "import sys, ctbench.adapters.spectre as s; print(s.CARD.parameters, 'torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["396917280", "False", "False"]
