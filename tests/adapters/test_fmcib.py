"""FMCIB adapter: checkpoint layouts (trunk state dict, LoadModel's trunk_state_dict, the
model.trunk.-prefixed state_dict) and strict-load errors, the seed crop's geometry and intensity
maths against hand-computed values on an oblique non-RAS volume, and the seed contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ctbench.adapters._common import affine_of
from ctbench.adapters.fmcib import CARD, FMCIBEncoder, build_network, crop_box
from ctbench.errors import CTBenchError
from ctbench.seeds import attach_seed
from tests.adapters._helpers import assert_load_refused, assert_loaded

HU = 40.0
THETA = np.deg2rad(20.0)
# oblique, non-RAS (index axes roughly towards L, P, S), anisotropic 1.5 x 1.2 x 2.5 mm
AFFINE = np.array([[-np.cos(THETA) * 1.5, np.sin(THETA) * 1.2, 0.0, 30.0],
                   [-np.sin(THETA) * 1.5, -np.cos(THETA) * 1.2, 0.0, 20.0],
                   [0.0, 0.0, 2.5, -40.0], [0.0, 0.0, 0.0, 1.0]])


def _volume(seed_index: tuple[float, float, float], blob: bool = False) -> MetaTensor:
    """A 60 x 60 x 30 block of 40 HU (optionally a 1-voxel 1000 HU spot at ``seed_index``), seeded
    at the world point of ``seed_index``."""
    a = np.full((60, 60, 30), HU, np.float32)
    if blob:
        a[tuple(int(round(v)) for v in seed_index)] = 1000.0
    vol = MetaTensor(torch.from_numpy(a[None]), affine=torch.as_tensor(AFFINE))
    return attach_seed(vol, (AFFINE @ np.r_[seed_index, 1.0])[:3])


def _state(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: (torch.randn_like(v) * 0.1 + (1.0 if k.endswith("running_var") else 0.0)) if v.is_floating_point()
            else v for k, v in build_network("test").state_dict().items()}


def test_card_facts() -> None:
    assert CARD.name == "fmcib" and CARD.seed_conditioned and CARD.group == "newer"
    assert (CARD.embedding_dim, CARD.token_dim, CARD.input.spatial_size) == (4096, 4096, (50, 50, 50))
    with torch.device("meta"):
        full = build_network("full")
    assert CARD.parameters == sum(p.numel() for p in full.parameters())
    assert full.conv1.stride == (2, 2, 2) and full.fc is None and full.layer1[0].downsample[0].bias is not None


def test_crop_box_truncates_and_clamps_as_the_official_crop() -> None:
    assert crop_box((30.9, 25.0, 3.7), (80, 80, 80)) == ([5, 0, 0], [55, 50, 28])
    assert crop_box((-0.5, 78.2, 40.0), (80, 80, 80)) == ([0, 53, 15], [25, 80, 65])  # int(-0.5) == 0


def test_intensity_and_symmetric_padding_by_hand() -> None:
    """(HU + 1024) / 3072 inside the image, 0 in the padding; near the border the clamped crop is
    padded on both sides equally (the official order), so the seed is off the cube's centre."""
    enc = FMCIBEncoder(weights="random", variant="test")
    x = enc.preprocess(_volume((30.0, 30.0, 4.0)))[0].numpy()  # 10 mm above the bottom (z) edge
    assert x.shape == (50, 50, 50)
    inside = x[x != 0]
    np.testing.assert_allclose(inside[np.abs(inside - inside.mean()) < 1e-3], (HU + 1024) / 3072, rtol=1e-6)
    # input axis 0 is S: z index 0 of the 2.5 mm grid is 10 mm below the seed -> the crop holds the
    # slices from the lowest resampled one to seed + 24, padded symmetrically to 50
    filled = np.nonzero((x != 0).any(axis=(1, 2)))[0]
    assert filled[0] > 0 and 49 - filled[-1] in (filled[0], filled[0] - 1)


def test_geometry_seed_and_tokens_through_the_tracked_affine() -> None:
    """The seed's voxel is input voxel (25, 25, 25) of an (S, P, L) 1 mm grid; token t is centred on
    input voxel 32 t, so token (1, 0, 1) lies 7 mm up, 25 mm anterior, 7 mm right... of it."""
    enc = FMCIBEncoder(weights="random", variant="test")
    vol = _volume((31.0, 28.0, 14.0), blob=True)
    x = enc.preprocess(vol)
    aff = affine_of(x)
    np.testing.assert_allclose(aff[:3, :3], [[0, 0, -1], [0, -1, 0], [1, 0, 0]], atol=1e-9)  # S, P, L at 1 mm
    seed = vol.meta["ctbench_seed_ras_mm"]
    centre = (aff @ [25, 25, 25, 1])[:3]
    assert np.all(np.abs(centre - seed) < 1.0)  # the truncated index: within one 1 mm voxel
    peak = np.unravel_index(int(x[0].argmax()), (50, 50, 50))
    assert np.max(np.abs(np.subtract(peak, 25))) <= 1  # the bright spot sits at the seed
    f = enc.encode(vol)
    assert f.tokens.shape == (256, 2, 2, 2)
    np.testing.assert_allclose((f.token_affine @ [1, 0, 1, 1])[:3], centre + [-7.0, 25.0, 7.0], atol=1e-9)


def test_seed_contract_errors() -> None:
    enc = FMCIBEncoder(weights="random", variant="test")
    vol = _volume((30.0, 30.0, 15.0))
    del vol.meta["ctbench_seed_ras_mm"]
    with pytest.raises(CTBenchError, match="fmcib needs a seed point"):
        enc.encode(vol)
    with pytest.raises(CTBenchError, match="lies outside the image; check the case's seed columns"):
        enc.encode(attach_seed(vol, (500.0, 0.0, 0.0)))
    assert FMCIBEncoder(weights="random", variant="test", seed_columns="a, b, c").seed_columns == ("a", "b", "c")
    with pytest.raises(CTBenchError, match="three distinct"):
        FMCIBEncoder(weights="random", variant="test", seed_columns="a,b")


@pytest.mark.parametrize("layout", ["plain", "trunk_state_dict", "lightning"])
def test_official_layouts_load_strictly(tmp_path: Path, layout: str) -> None:
    state = _state()
    if layout == "plain":
        blob = state
    elif layout == "trunk_state_dict":
        blob = {"trunk_state_dict": state, "head_state_dict": {"0.0.weight": torch.zeros(2, 256)}}
    else:
        blob = {"state_dict": {**{f"model.trunk.{k}": v for k, v in state.items()},
                               "model.heads.0.0.weight": torch.zeros(2, 256)}}
    path = tmp_path / "model_weights.torch"
    torch.save(blob, path)
    enc = FMCIBEncoder(weights=str(path), variant="test")
    assert_loaded(enc.model, state)


def test_strict_loading_refuses_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = _state()
    missing = tmp_path / "missing.torch"
    torch.save({"trunk_state_dict": {k: v for k, v in state.items() if k != "layer4.0.conv3.weight"}}, missing)
    assert_load_refused(FMCIBEncoder, missing, ["missing keys", "'layer4.0.conv3.weight'"])
    extra = tmp_path / "extra.torch"
    torch.save({"trunk_state_dict": {**state, "fc.weight": torch.zeros(2, 256)}}, extra)
    assert_load_refused(FMCIBEncoder, extra, ["unexpected keys", "'fc.weight'"])
    stray = tmp_path / "stray.torch"
    torch.save({"state_dict": {**{f"model.trunk.{k}": v for k, v in state.items()}, "ema.x": torch.zeros(1)}}, stray)
    assert_load_refused(FMCIBEncoder, stray, ["'ema.x'", "'model.trunk.'"])


def test_auto_names_zenodo_and_where_to_put_the_file(ctbench_home: Path) -> None:
    with pytest.raises(CTBenchError) as e:
        FMCIBEncoder(weights="auto")
    msg = str(e.value)
    assert "zenodo.org/records/10528450" in msg and str(ctbench_home / "weights" / "fmcib" / "model_weights.torch") in msg
