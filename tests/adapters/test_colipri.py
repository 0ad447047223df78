"""COLIPRI adapter: torchio's resampling grid and crop/pad rule (hand-computed), the HU window and
the minimum padding, token centres through ``token_affine`` on a non-RAS anisotropic volume, the
rotary table, strict loading of the hub layout, and ``ctbench check-adapter`` on the test size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ctbench.adapters._common import affine_of
from ctbench.adapters.colipri import CARD, ColipriEncoder, centred_grid, crop_or_pad_bounds, preprocess
from tests.adapters._helpers import assert_load_refused, assert_loaded, write_checkpoint
from tests.cli_helpers import run_cli

# index axes run towards P (1 mm), L (1.5 mm), S (4 mm): a "PLS" file, neither RAS nor isotropic
PLS = np.array([[0.0, -1.5, 0.0, 10.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 0.0, 4.0, -50.0], [0.0, 0.0, 0.0, 1.0]])


def _volume(array: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None], affine=torch.as_tensor(affine))


@pytest.fixture(scope="module")
def encoder() -> ColipriEncoder:
    return ColipriEncoder(weights="random", variant="test")


def test_resampling_grid_is_torchios_centred_grid() -> None:
    """floor(n * spacing / 2) voxels, centred on the old voxel-centre box, direction kept."""
    affine, size = centred_grid(np.diag([1.6, 1.3, 2.5, 1.0]), (48, 40, 36), 2.0)
    assert size == (38, 26, 45)  # floor(76.8 / 2), floor(52 / 2), floor(90 / 2)
    # centre (47 * 1.6, 39 * 1.3, 35 * 2.5) / 2 = (37.6, 25.35, 43.75); minus (37, 25, 44) voxels of 1 mm
    np.testing.assert_allclose(affine, [[2, 0, 0, 0.6], [0, 2, 0, 0.35], [0, 0, 2, -0.25], [0, 0, 0, 1]], atol=1e-12)


def test_crop_or_pad_puts_the_odd_voxel_before() -> None:
    pad, start, end = crop_or_pad_bounds((38, 27, 245), (192, 192, 192))
    assert pad == [77, 77, 83, 82, 0, 0]
    assert (start, end) == ([0, 0, 27], [192, 192, 219])


def test_token_centres_land_on_hand_computed_world_points(encoder) -> None:
    """PLS (100, 80, 30) at 1 x 1.5 x 4 mm -> RAS (80, 100, 30) -> 2 mm grid (60, 50, 60) centred on
    (-49.25, -29.5, 8) -> padded by (66, 71, 66) voxels to 192^3."""
    x = encoder.preprocess(_volume(np.zeros((100, 80, 30)), PLS))
    assert tuple(x.shape) == (1, 192, 192, 192)
    origin = np.array([-49.25 - 59 - 132, -29.5 - 49 - 142, 8.0 - 59 - 132])  # (-240.25, -220.5, -183)
    np.testing.assert_allclose(affine_of(x), np.r_[np.c_[2 * np.eye(3), origin], [[0, 0, 0, 1]]], atol=1e-9)
    tokens = encoder.token_affine(affine_of(x))  # test size: 16^3 patches, centre at input 16 t + 7.5
    for t in [(0, 0, 0), (11, 0, 5), (3, 7, 11)]:
        want = origin + 15.0 + 32.0 * np.array(t)
        np.testing.assert_allclose((tokens @ np.r_[t, 1.0])[:3], want, atol=1e-9)


def test_window_maths_and_minimum_padding() -> None:
    """HU clipped to [-1000, 1000] and divided by 1000; padding takes the volume's minimum
    after the window (0.2 here, as the volume holds nothing below 200 HU)."""
    ras2mm = np.diag([2.0, 2.0, 2.0, 1.0])
    hu = np.full((100, 100, 100), 200.0)
    hu[50, 50, 50], hu[10, 20, 30], hu[60, 61, 62] = 1500.0, 500.0, 999.0
    x = preprocess(_volume(hu, ras2mm)).as_tensor()[0]  # grid unchanged, then padded by 46 per side
    assert float(x[96, 96, 96]) == 1.0 and float(x[56, 66, 76]) == pytest.approx(0.5, abs=1e-6)
    assert float(x[106, 107, 108]) == pytest.approx(0.999, abs=1e-6)
    assert float(x[0, 0, 0]) == pytest.approx(0.2, abs=1e-6) and float(x[191, 5, 100]) == pytest.approx(0.2, abs=1e-6)
    air = preprocess(_volume(np.full((10, 10, 10), -3000.0), ras2mm)).as_tensor()
    assert float(air.max()) == float(air.min()) == -1.0


def test_rotary_table_matches_the_formula() -> None:
    """sin/cos of (token index on each axis) x 1 / 10000 ** (k / n), pairwise repeated."""
    from ctbench.adapters.colipri_net import rope_tables

    sin, cos = rope_tables((4, 5, 6), 12)  # head dim 12: n = 2 bands per axis
    assert sin.shape == cos.shape == (120, 12)
    i, j, k = 3, 1, 4
    row = (i * 5 + j) * 6 + k
    angles = np.repeat([i, i / 100, j, j / 100, k, k / 100], 2)  # bands 1 and 10000 ** -0.5
    np.testing.assert_allclose(sin[row].numpy(), np.sin(angles), atol=1e-6)
    np.testing.assert_allclose(cos[row].numpy(), np.cos(angles), atol=1e-6)


def test_hub_layout_loads_strictly_and_refuses_missing_or_unexpected_keys(tmp_path: Path, encoder) -> None:
    state = {k: torch.randn_like(v) for k, v in encoder.model.state_dict().items()}
    text = {"text_encoder.backbone.encoder.layer.0.output.dense.weight": torch.zeros(2, 2),
            "softmax_temperature": torch.tensor(1)}
    path = write_checkpoint(tmp_path / "model.safetensors", state, "image_encoder.", text)
    assert_loaded(ColipriEncoder(weights=str(path), variant="test").model, state)

    missing = {k: v for k, v in state.items() if k != "backbone.eva.blocks.1.attn.k_proj.weight"}
    path = write_checkpoint(tmp_path / "missing.safetensors", missing, "image_encoder.", text)
    assert_load_refused(ColipriEncoder, path, ["missing keys", "'backbone.eva.blocks.1.attn.k_proj.weight'"])
    stray = write_checkpoint(tmp_path / "stray.safetensors", state, "image_encoder.", {"decoder.head.weight": torch.zeros(1)})
    assert_load_refused(ColipriEncoder, stray, ["unexpected keys", "'decoder.head.weight'", "'text_encoder.'"])
    extra = write_checkpoint(tmp_path / "extra.safetensors", state | {"backbone.up_projection.proj.weight": torch.zeros(1)})
    assert_load_refused(ColipriEncoder, extra, ["unexpected keys", "'backbone.up_projection.proj.weight'"])


def test_full_size_card_facts() -> None:
    """The published configuration: 864-d tokens on a 24^3 grid, 768-d pooled embedding."""
    from ctbench.adapters.colipri_net import ColipriConfig

    cfg = ColipriConfig()
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden, cfg.grid) == (864, 16, 12, 2304, (24, 24, 24))
    assert (CARD.embedding_dim, CARD.token_dim, CARD.input.spatial_size) == (768, 864, (192, 192, 192))
    assert (CARD.group, CARD.weights_access, CARD.non_commercial) == ("newer", "public", False)


def test_check_adapter_passes_on_the_test_size(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "check-adapter", "colipri", "--variant", "test")
    assert code == 0, out + err
    assert "FAIL" not in out and "weights round trip" in out and "geometry: blob token" in out
