"""RadFM adapter: the extracted vision-encoder file (prefixed or stripped keys), strict-load
errors, the reference key set and parameter count, depth rule, token geometry, the local-only
``auto`` weights, and the full-size network on a 4-slice input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctbench.adapters._common import affine_of
from ctbench.adapters.radfm import CARD, CONFIGS, PREFIX, RadFMEncoder, build_network, preprocess, target_depth
from ctbench.check_adapter import probe_volumes
from ctbench.errors import CTBenchError
from ctbench.weights import cached_weights_path, seeded_init, sha256_file
from tests.adapters._helpers import (
    assert_load_refused,
    assert_loaded,
    patch_token_affine,
    peak_index,
    token_cell,
    write_checkpoint,
)


def _trained_state(variant: str = "test", seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = build_network(variant).state_dict()
    for k, v in state.items():
        if ".norm." in k or k.startswith("to_patch_embedding.1") or k.startswith("to_patch_embedding.3"):
            state[k] = v + 0.2 * torch.randn_like(v)
    return state


def _extracted_file(tmp_path: Path, state: dict, prefixed: bool, name: str = "radfm_vision.safetensors") -> Path:
    """What ``ctbench weights extract radfm`` writes: the vision encoder only, keys with or
    without the ``embedding_layer.vision_encoder.`` prefix of the full RadFM model."""
    return write_checkpoint(tmp_path / name, state, PREFIX if prefixed else "")


@pytest.fixture(scope="module")
def volume():
    return probe_volumes()[1]


def test_card_facts() -> None:
    assert CARD.name == "radfm" and CARD.supervision == "language"
    assert CARD.licence.startswith("UNKNOWN")
    assert CARD.pretraining_datasets == ("MedMD", "RadMD")
    assert (CARD.embedding_dim, CARD.token_dim) == (768, 768)
    assert (CARD.weights.hub_repo, CARD.weights.format) == ("chaoyi-wu/RadFM", "safetensors")


def test_full_key_set_shapes_and_parameter_count() -> None:
    with torch.device("meta"):
        net = build_network("full")
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == CARD.parameters == 66_208_000
    shapes = {
        "to_patch_embedding.1.weight": (12288,),  # LayerNorm over 32*32*4*3 patch values
        "to_patch_embedding.2.weight": (768, 12288),
        "to_patch_embedding.3.bias": (768,),
        "pos_embedding.row_embed.weight": (16, 256),
        "pos_embedding.col_embed.weight": (16, 256),
        "pos_embedding.dep_embed.weight": (128, 256),  # frames 512 / frame patch 4
        "transformer.layers.11.0.norm.weight": (768,),
        "transformer.layers.11.0.fn.to_qkv.weight": (1536, 768),  # 8 heads x 64, no bias
        "transformer.layers.11.0.fn.to_out.0.weight": (768, 512),
        "transformer.layers.11.0.fn.to_out.0.bias": (768,),
        "transformer.layers.11.1.norm.bias": (768,),
        "transformer.layers.11.1.fn.net.0.weight": (2048, 768),
        "transformer.layers.11.1.fn.net.3.weight": (768, 2048),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert len(sd) == 9 + 12 * 11
    assert not any(k.startswith(("cls_token", "norm.", "mlp_head")) or "to_qkv.bias" in k for k in sd)
    out = net(torch.empty(1, 3, 512, 512, 64, device="meta"))
    assert tuple(out.shape) == (1, 16, 16, 16, 768)


def test_depth_rule() -> None:
    got = [target_depth(n) for n in (1, 4, 5, 6, 7, 10, 14, 48, 62, 63, 64, 65, 400)]
    assert got == [4, 4, 4, 4, 8, 8, 12, 48, 60, 64, 64, 64, 64]
    assert target_depth(100, max_depth=16) == 16


@pytest.mark.parametrize("prefixed", [False, True], ids=["stripped", "prefixed"])
def test_extracted_file_loads_and_matches_direct_module(tmp_path: Path, volume, prefixed) -> None:
    state = _trained_state()
    path = _extracted_file(tmp_path, state, prefixed)
    enc = RadFMEncoder(weights=str(path), variant="test")
    assert enc.weights_ref.path == path and enc.weights_ref.sha256 == sha256_file(path)
    feats = enc.encode(volume)

    direct = build_network("test").eval()
    direct.load_state_dict(state, strict=True)
    x = preprocess(volume, 64, 16)
    assert tuple(x.shape) == (1, 64, 64, 16)  # 48 slices -> capped at 16 in the test variant
    with torch.no_grad():
        grid = direct(x.as_tensor()[None].repeat(1, 3, 1, 1, 1))
    np.testing.assert_allclose(feats.embedding, grid.mean(dim=(1, 2, 3))[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats.tokens.astype(np.float32), grid[0].permute(3, 0, 1, 2).numpy(),
                               rtol=1e-3, atol=1e-3)
    assert feats.embedding.shape == (48,) and feats.tokens.shape == (48, 2, 2, 4)
    assert_loaded(enc.model, state)
    assert not np.allclose(RadFMEncoder(weights="random", variant="test").encode(volume).embedding,
                           feats.embedding)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s.pop("pos_embedding.dep_embed.weight"), ["missing", "pos_embedding.dep_embed.weight"]),
        (lambda s: s.__setitem__("transformer.layers.0.0.fn.to_qkv.bias", torch.zeros(96)),
         ["unexpected", "transformer.layers.0.0.fn.to_qkv.bias"]),
        (lambda s: s.__setitem__("pos_embedding.dep_embed.weight", torch.zeros(128, 16)),
         ["wrongly shaped", "pos_embedding.dep_embed.weight", "[128, 16]", "[16, 16]"]),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_bad_checkpoint_names_the_key(tmp_path: Path, edit, words) -> None:
    state = _trained_state()
    edit(state)
    assert_load_refused(RadFMEncoder, _extracted_file(tmp_path, state, prefixed=True), words)


def test_full_model_file_keeps_only_the_vision_encoder(tmp_path: Path, volume) -> None:
    """The whole RadFM state_dict (LLM + other embedding-layer parts) loads the same encoder;
    a key outside the documented parts is rejected by name."""
    state = _trained_state()
    other = {
        "lang_model.model.embed_tokens.weight": torch.randn(5, 4),
        "embedding_layer.perceiver.latents": torch.randn(2, 4),
        "embedding_layer.fc.weight": torch.randn(4, 4),
    }
    path = write_checkpoint(tmp_path / "pytorch_model.bin", state, PREFIX, other)
    enc = RadFMEncoder(weights=str(path), variant="test")
    assert_loaded(enc.model, state)
    write_checkpoint(path, state, PREFIX, {**other, "optimizer.step": torch.zeros(1)})
    with pytest.raises(CTBenchError, match="optimizer.step"):
        RadFMEncoder(weights=str(path), variant="test")


def test_auto_weights_come_only_from_the_local_cache(tmp_path: Path, volume) -> None:
    with pytest.raises(CTBenchError, match="ctbench weights extract radfm"):
        RadFMEncoder()
    local = cached_weights_path(CARD)
    local.parent.mkdir(parents=True)
    with seeded_init(5):
        state = build_network("full").state_dict()
    write_checkpoint(local, state)
    enc = RadFMEncoder()  # full variant, auto
    assert enc.weights_ref.path == local
    key = "pos_embedding.dep_embed.weight"
    assert torch.equal(enc.model.state_dict()[key], state[key])


def test_user_errors_and_reproducible_random_weights(volume) -> None:
    with pytest.raises(CTBenchError, match="no published weights"):
        RadFMEncoder(weights="auto", variant="test")
    with pytest.raises(CTBenchError, match="unknown RadFM variant"):
        RadFMEncoder(weights="random", variant="huge")
    with pytest.raises(CTBenchError, match="hu_window"):
        RadFMEncoder(weights="random", variant="test", hu_window=(0, 0))
    a = RadFMEncoder(weights="random", variant="test")
    b = RadFMEncoder(weights="random", variant="test")
    fa = a.encode(volume)
    assert np.array_equal(fa.embedding, b.encode(volume).embedding)
    assert a.preprocessing_id == b.preprocessing_id
    assert a.preprocessing_id != RadFMEncoder(weights="random", variant="test", minmax=True).preprocessing_id
    x = preprocess(volume, 64, 16)  # air -> 0, the blob saturates the default window top
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Volumes of different depth are grouped: each result equals its single encode.
    base = probe_volumes()[0]
    short = base[..., :10]
    batch = a.encode_batch([volume, short, volume])
    assert [f.tokens.shape for f in batch] == [(48, 2, 2, 4), (48, 2, 2, 2), (48, 2, 2, 4)]
    np.testing.assert_allclose(batch[1].embedding, a.encode(short).embedding, rtol=0, atol=1e-5)
    np.testing.assert_allclose(batch[2].embedding, fa.embedding, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["test", "full"])
def test_blob_lands_in_the_token_cell_token_affine_names(variant) -> None:
    """(b) geometry on the probe's LPS-like anisotropic grid (full size: preprocessing only). A
    wide window keeps the blob peak below the window top, so its maximum marks its centre."""
    window = (-1000.0, 1000.0)
    cfg = CONFIGS[variant]
    _, blob, world = probe_volumes()
    x = preprocess(blob, cfg["image_size"], cfg["max_depth"], window)
    depth = 48 if variant == "full" else 16  # the probe has 48 slices
    assert tuple(x.shape) == (1, cfg["image_size"], cfg["image_size"], depth)
    aff = affine_of(x)
    # (row, col, slice) run towards posterior, patient left and inferior.
    assert np.allclose(np.abs(aff[:3, :3]) > 1e-6, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert aff[1, 0] < 0 and aff[0, 1] < 0 and aff[2, 2] < 0
    peak = peak_index(x)
    voxel = float(np.linalg.norm(aff[:3, :3], axis=0).max())
    assert np.linalg.norm((aff @ np.r_[peak, 1.0])[:3] - world) < voxel  # MONAI tracked the blob
    strides = np.array([cfg["image_patch_size"]] * 2 + [cfg["frame_patch_size"]], float)
    tok_aff = patch_token_affine(aff, strides)
    assert token_cell(tok_aff, world) == (peak // strides).astype(int).tolist()
    if variant == "test":
        f = RadFMEncoder(weights="random", variant="test", hu_window=window).encode(blob)
        assert np.allclose(f.token_affine, tok_aff)


def test_full_size_network_runs_on_a_four_slice_input() -> None:
    """(c) the full RadFM ViT at native in-plane size 512 x 512 with the smallest native depth
    (4 slices, one depth token; depth 4 is what RadFM uses for 2D images)."""
    with seeded_init():
        net = build_network("full").eval()
    x = torch.rand(1, 1, 512, 512, 4).expand(1, 3, -1, -1, -1)
    with torch.inference_mode():
        grid = net(x)
    assert tuple(grid.shape) == (1, 16, 16, 1, 768) and bool(torch.isfinite(grid).all())
    # Only depth-table row (0 + 1) * (128 // 1) - 1 = 127 is used for one depth token.
    net.pos_embedding.dep_embed.weight.data[:127] = 0
    with torch.inference_mode():
        assert torch.equal(net(x), grid)
