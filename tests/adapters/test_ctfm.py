"""CT-FM adapter: safetensors layouts (feature extractor and full SegResNet), strict-load errors,
MONAI SegResEncoder facts, SPL orientation and foreground crop, token geometry, full size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ctbench.adapters._common import affine_of
from ctbench.adapters.ctfm import CARD, CTFMEncoder, build_network
from ctbench.check_adapter import PROBE_AFFINE, probe_volumes
from ctbench.errors import CTBenchError
from tests.adapters._helpers import (
    assert_load_refused,
    assert_loaded,
    blob_at_token,
    peak_index,
    rewrite_checkpoint,
    strongest_token,
    token_cell,
    write_checkpoint,
)


def _trained_state(variant: str = "test", seed: int = 1) -> dict[str, torch.Tensor]:
    """Seeded weights with non-trivial batch-norm statistics and affine parameters."""
    torch.manual_seed(seed)
    state = build_network(variant).state_dict()
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = 0.5 + torch.rand_like(v)
        elif k.endswith(("running_mean", ".bias")):
            state[k] = 0.1 * torch.randn_like(v)
        elif k.endswith("norm1.weight") or k.endswith("norm2.weight"):
            state[k] = 0.5 + torch.rand_like(v)
    return {k: v.contiguous() for k, v in state.items()}


def _segresnet_file(tmp_path: Path, state: dict) -> Path:
    """The full CT-FM SegResNet layout: ``encoder.*`` plus decoder ``up_layers.*`` keys."""
    decoder = {
        "up_layers.0.upsample.deconv.weight": torch.randn(4, 2, 2, 2, 2),
        "up_layers.0.head.weight": torch.randn(2, 4, 1, 1, 1),
    }
    return write_checkpoint(tmp_path / "ct_fm_segresnet.safetensors", state, "encoder.", decoder)


@pytest.fixture(scope="module")
def volume():
    base, _, _ = probe_volumes()
    return base


def test_card_facts() -> None:
    assert CARD.name == "ct-fm" and CARD.licence == "Apache-2.0" and CARD.supervision == "self-supervised"
    assert (CARD.embedding_dim, CARD.token_dim) == (512, 512)
    assert CARD.input.orientation == "SPL" and CARD.input.hu_window == (-1024.0, 2048.0)
    w = CARD.weights
    assert (w.hub_repo, w.filename, w.format) == ("project-lighter/ct_fm_feature_extractor", "model.safetensors", "safetensors")


def test_full_architecture_matches_the_published_encoder() -> None:
    with torch.device("meta"):
        net = build_network("full")
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == CARD.parameters == 77_760_992
    assert len(sd) == 161 and [len(level["blocks"]) for level in net.layers] == [1, 2, 2, 4, 4]
    assert tuple(sd["conv_init.weight"].shape) == (32, 1, 3, 3, 3)
    for i, ch in enumerate([32, 64, 128, 256]):
        assert tuple(sd[f"layers.{i}.downsample.weight"].shape) == (2 * ch, ch, 3, 3, 3)
    assert "layers.4.downsample.weight" not in sd  # the last level does not downsample
    assert tuple(sd["layers.4.blocks.3.conv2.weight"].shape) == (512, 512, 3, 3, 3)
    assert tuple(sd["layers.2.blocks.1.norm1.running_var"].shape) == (128,)
    outs = net(torch.empty(1, 1, 64, 80, 96, device="meta"))
    assert [tuple(o.shape[1:]) for o in outs][-1] == (512, 4, 5, 6)
    assert [o.shape[1] for o in outs] == [32, 64, 128, 256, 512]


@pytest.mark.parametrize("layout", ["feature-extractor", "segresnet"])
def test_official_layouts_load_and_match_direct_module(tmp_path: Path, volume, layout: str) -> None:
    state = _trained_state()
    if layout == "segresnet":
        path = _segresnet_file(tmp_path, state)
    else:
        path = write_checkpoint(tmp_path / "model.safetensors", state)
    enc = CTFMEncoder(weights=str(path), variant="test")
    feats = enc.encode(volume)
    direct = build_network("test").eval()
    direct.load_state_dict(state, strict=True)
    with torch.no_grad():
        last = direct(enc.preprocess(volume).as_tensor()[None])[-1][0]
    np.testing.assert_allclose(feats.embedding, last.mean(dim=(1, 2, 3)).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feats.tokens.astype(np.float32), last.numpy(), rtol=2e-3, atol=1e-4)
    assert feats.tokens.shape == (128, 3, 6, 5)  # (S', P', L') of a 48 x 80 x 96 input (x 1/16)
    assert float(np.abs(feats.embedding).max()) > 1e-3
    assert_loaded(enc.model, state)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s.pop("encoder.layers.1.blocks.0.conv1.weight"), ["missing", "layers.1.blocks.0.conv1.weight"]),
        (lambda s: s.__setitem__("encoder.layers.9.blocks.0.conv1.weight", torch.zeros(1)),
         ["unexpected", "layers.9.blocks.0.conv1.weight"]),
        (lambda s: s.__setitem__("encoder.conv_init.weight", torch.zeros(8, 2, 3, 3, 3)),
         ["wrongly shaped", "conv_init.weight", "[8, 2, 3, 3, 3]", "[8, 1, 3, 3, 3]"]),
        (lambda s: s.__setitem__("head.weight", torch.zeros(2)), ["unexpected", "head.weight", "up_layers."]),
    ],
    ids=["missing", "unexpected", "shape", "stray-top-level"],
)
def test_bad_checkpoint_names_the_key(tmp_path: Path, edit, words) -> None:
    path = _segresnet_file(tmp_path, _trained_state())
    rewrite_checkpoint(path, edit)
    assert_load_refused(CTFMEncoder, path, words)


def test_spl_orientation_and_foreground_crop_track_the_affine() -> None:
    base, _, _ = probe_volumes()
    arr = base.as_tensor().clone()
    arr[:, :7] = -2048.0  # outside the scanner's field of view: below -1024 HU, cropped away
    vol = MetaTensor(arr, affine=torch.as_tensor(PROBE_AFFINE))
    enc = CTFMEncoder(weights="random", variant="test")
    x = enc.preprocess(vol)
    aff = affine_of(x)
    # Axis 0 -> +S (z), axis 1 -> +P (-y), axis 2 -> +L (-x).
    assert np.allclose(aff[:3, :3], [[0, 0, -1.8], [0, -1.5, 0], [3.5, 0, 0]])
    assert tuple(x.shape) == (1, 48, 96 - 7, 80)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # Voxel (i, j, k) of the file is voxel (k, j - 7, l) of the input, at the same world point.
    i, j, k = 50, 20, 30
    src = PROBE_AFFINE @ [i, j, k, 1]
    assert np.allclose(aff @ [k, i - 7, j, 1], src)
    empty = MetaTensor(torch.full((1, 8, 8, 8), -3000.0), affine=torch.eye(4))
    with pytest.raises(CTBenchError, match="no voxel above -1024"):
        enc.preprocess(empty)


def test_options_errors_and_reproducibility(volume) -> None:
    a = CTFMEncoder(weights="random", variant="test")
    b = CTFMEncoder(weights="random", variant="test")
    fa, fb = a.encode(volume), b.encode(volume)
    assert np.array_equal(fa.embedding, fb.embedding) and np.array_equal(fa.tokens, fb.tokens)
    batch = a.encode_batch([volume, volume])
    for f in batch:
        np.testing.assert_allclose(f.embedding, fa.embedding, rtol=1e-4, atol=1e-7)
    resampled = CTFMEncoder(weights="random", variant="test", spacing_mm=(3.0, 3.0, 3.0))
    assert resampled.preprocessing_id != a.preprocessing_id
    assert tuple(resampled.preprocess(volume).shape) == (1, 56, 48, 48)  # 168 x 144 x 144 mm / 3
    with pytest.raises(CTBenchError, match="no published weights"):
        CTFMEncoder(weights="auto", variant="test")
    with pytest.raises(CTBenchError, match="unknown CT-FM variant"):
        CTFMEncoder(weights="random", variant="xl")


@pytest.mark.parametrize(
    "variant, shape, target, grid",
    [("test", (96, 80, 48), (1, 2, 3), (3, 6, 5)), ("full", (48, 40, 32), (1, 2, 1), (2, 3, 3))],
)
def test_blob_lands_in_the_token_cell_token_affine_names(variant: str, shape, target, grid) -> None:
    """(b) geometry on a non-RAS anisotropic volume; ``full`` is (c): the published network
    size run once on one small volume."""
    enc = CTFMEncoder(weights="random", variant=variant)
    target = np.asarray(target)
    # No crop here (the whole probe is above -1024 HU); the blob sits 0.3 token before the
    # centre, where "floor" and "nearest centre" conventions differ.
    base, blob, world, v = blob_at_token(enc, np.full(3, 16.0), target, shape)
    x0, x1 = enc.preprocess(base), enc.preprocess(blob)
    assert np.max(np.abs(peak_index(x1 - x0) - v)) <= 1.0
    f0, f1 = enc.encode(base), enc.encode(blob)
    assert token_cell(f1.token_affine, world) == target.tolist()
    assert strongest_token(f0, f1) == target.tolist()
    dim = 512 if variant == "full" else 128
    assert f1.embedding.shape == (dim,) and f1.tokens.shape == (dim, *grid)
    assert np.all(np.isfinite(f1.tokens)) and float(np.abs(f1.embedding).max()) > 0
