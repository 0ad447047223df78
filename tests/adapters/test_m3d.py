"""M3D-CLIP adapter: the bf16 ``pretrained_ViT.bin`` and full-CLIP layouts, strict-load errors,
the MONAI-1.3 key set and parameter count, token geometry, and the full-size network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctbench.adapters._common import affine_of
from ctbench.adapters.m3d import CARD, CONFIGS, M3DEncoder, build_network, preprocess
from ctbench.check_adapter import probe_volumes
from ctbench.errors import CTBenchError
from ctbench.weights import seeded_init, sha256_file
from tests.adapters._helpers import (
    assert_load_refused,
    assert_loaded,
    patch_token_affine,
    peak_index,
    token_cell,
    write_checkpoint,
)


def _trained_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """A test-size vision encoder with non-default norms and CLS token, rounded to bf16."""
    torch.manual_seed(seed)
    state = build_network("test").state_dict()
    for k, v in state.items():
        if "norm" in k or k == "cls_token":
            state[k] = v + 0.2 * torch.randn_like(v)
    return {k: v.to(torch.bfloat16) for k, v in state.items()}


def _vit_bin(tmp_path: Path, state: dict, name: str = "pretrained_ViT.bin") -> Path:
    """The released ``pretrained_ViT.bin``: unprefixed vision-encoder keys, bf16, torch.save."""
    return write_checkpoint(tmp_path / name, state)


def _clip_file(tmp_path: Path, state: dict) -> Path:
    """The full M3D-CLIP layout: ``vision_encoder.`` prefix plus projections and the BERT tower."""
    other = {
        "mm_vision_proj.weight": torch.randn(48, 48), "mm_vision_proj.bias": torch.randn(48),
        "mm_language_proj.weight": torch.randn(48, 48), "mm_language_proj.bias": torch.randn(48),
        "language_encoder.embeddings.word_embeddings.weight": torch.randn(11, 48),
        "logit_scale": torch.tensor(2.659),
    }
    fp32 = {k: v.float() for k, v in state.items()}
    return write_checkpoint(tmp_path / "model.safetensors", fp32, "vision_encoder.", other)


@pytest.fixture(scope="module")
def volume():
    return probe_volumes()[1]


def test_card_facts() -> None:
    assert CARD.name == "m3d" and CARD.supervision == "language"
    assert "MIT" in CARD.licence and "Apache-2.0" in CARD.licence
    assert CARD.pretraining_datasets == ("M3D-Cap",)
    assert (CARD.embedding_dim, CARD.token_dim) == (768, 768)
    assert CARD.input.spatial_size == (32, 256, 256) and CARD.input.hu_window == (-160.0, 240.0)
    assert (CARD.weights.hub_repo, CARD.weights.filename, CARD.weights.format) == (
        "GoodBaiBai88/M3D-CLIP", "pretrained_ViT.bin", "bin")


def test_full_key_set_shapes_and_parameter_count() -> None:
    with torch.device("meta"):
        net = build_network("full")
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == CARD.parameters == 87_389_184
    shapes = {
        "cls_token": (1, 1, 768),
        "patch_embedding.position_embeddings": (1, 2048, 768),  # 8 x 16 x 16 patches
        "patch_embedding.patch_embeddings.1.weight": (768, 1024),  # perceptron, 4*16*16 values
        "patch_embedding.patch_embeddings.1.bias": (768,),
        "blocks.11.norm1.weight": (768,),
        "blocks.11.attn.qkv.weight": (2304, 768),
        "blocks.11.attn.out_proj.weight": (768, 768),
        "blocks.11.attn.out_proj.bias": (768,),
        "blocks.11.mlp.linear1.weight": (3072, 768),
        "blocks.11.mlp.linear2.bias": (768,),
        "blocks.11.norm2.bias": (768,),
        "norm.weight": (768,),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert "blocks.0.attn.qkv.bias" not in sd and not any(k.startswith("blocks.12.") for k in sd)
    assert len(sd) == 6 + 12 * 11
    cls, grid = net(torch.empty(1, 1, 32, 256, 256, device="meta"))
    assert tuple(cls.shape) == (1, 768) and tuple(grid.shape) == (1, 8, 16, 16, 768)


@pytest.mark.parametrize("layout", ["vit-bin-bf16", "clip-safetensors"])
def test_official_layouts_load_and_match_direct_module(tmp_path: Path, volume, layout) -> None:
    state = _trained_state()
    path = _vit_bin(tmp_path, state) if layout == "vit-bin-bf16" else _clip_file(tmp_path, state)
    enc = M3DEncoder(weights=str(path), variant="test")
    assert enc.weights_ref.path == path and enc.weights_ref.sha256 == sha256_file(path)
    feats = enc.encode(volume)

    direct = build_network("test").eval()
    direct.load_state_dict(state, strict=True)  # bf16 values, upcast exactly
    x = preprocess(volume, CONFIGS["test"]["img_size"])
    with torch.no_grad():
        cls, grid = direct(x.as_tensor()[None])
    np.testing.assert_allclose(feats.embedding, cls[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats.tokens.astype(np.float32), grid[0].permute(3, 0, 1, 2).numpy(),
                               rtol=1e-3, atol=1e-3)
    assert feats.embedding.shape == (48,) and feats.tokens.shape == (48, 2, 4, 4)
    assert_loaded(enc.model, state)  # bf16 values, upcast exactly
    assert not np.allclose(M3DEncoder(weights="random", variant="test").encode(volume).embedding,
                           feats.embedding)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s.pop("blocks.1.attn.qkv.weight"), ["missing", "blocks.1.attn.qkv.weight"]),
        (lambda s: s.__setitem__("blocks.0.attn.qkv.bias", torch.zeros(144)),  # a MONAI >= 1.4 / qkv_bias model
         ["unexpected", "blocks.0.attn.qkv.bias"]),
        (lambda s: s.__setitem__("patch_embedding.position_embeddings", torch.zeros(1, 2048, 48)),
         ["wrongly shaped", "patch_embedding.position_embeddings", "[1, 2048, 48]", "[1, 32, 48]"]),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_bad_checkpoint_names_the_key(tmp_path: Path, edit, words) -> None:
    state = _trained_state()
    edit(state)
    assert_load_refused(M3DEncoder, _vit_bin(tmp_path, state), words)


def test_stray_keys_beside_the_clip_prefix_are_rejected(tmp_path: Path) -> None:
    state = {"vision_encoder." + k: v for k, v in _trained_state().items()}
    state["text_decoder.weight"] = torch.zeros(2)
    path = _vit_bin(tmp_path, state, "clip.bin")
    with pytest.raises(CTBenchError, match="text_decoder.weight"):
        M3DEncoder(weights=str(path), variant="test")


def test_user_errors_and_reproducible_random_weights(volume) -> None:
    with pytest.raises(CTBenchError, match="no published weights"):
        M3DEncoder(weights="auto", variant="test")
    with pytest.raises(CTBenchError, match="unknown M3D variant"):
        M3DEncoder(weights="random", variant="huge")
    with pytest.raises(CTBenchError, match="hu_window"):
        M3DEncoder(weights="random", variant="test", hu_window=(100, -100))
    a = M3DEncoder(weights="random", variant="test")
    b = M3DEncoder(weights="random", variant="test")
    fa = a.encode(volume)
    fb = b.encode(volume)
    assert np.array_equal(fa.embedding, fb.embedding) and np.array_equal(fa.tokens, fb.tokens)
    for f in a.encode_batch([volume, volume]):
        np.testing.assert_allclose(f.embedding, fa.embedding, rtol=0, atol=1e-5)
    assert a.preprocessing_id == b.preprocessing_id
    assert a.preprocessing_id != M3DEncoder(weights="random", variant="test", hu_window=(-1000, 1000)).preprocessing_id


def test_window_minmax_and_foreground_crop_values() -> None:
    """Air -> 0, body (40 HU) -> 0.5 in the default window, the blob saturates at 1; the crop
    removes the air border, so no 0 is left after the resize. The optional literal min-max
    stretches a volume that never reaches the window top (here a flat body becomes all ones)."""
    base, blob, _ = probe_volumes()
    size = CONFIGS["test"]["img_size"]
    x = preprocess(blob, size)
    assert float(x.max()) == 1.0 and float(x.min()) == pytest.approx(0.5, abs=1e-6)
    assert torch.equal(preprocess(blob, size, minmax=True), x)  # air and window top present
    y = preprocess(base, size)
    assert float(y.min()) == pytest.approx(0.5, abs=1e-6) and float(y.max()) == pytest.approx(0.5, abs=1e-6)
    y = preprocess(base, size, minmax=True)
    assert float(y.min()) == float(y.max()) == 1.0
    enc = M3DEncoder(weights="random", variant="test")
    assert enc.preprocessing_id != M3DEncoder(weights="random", variant="test", minmax=True).preprocessing_id


@pytest.mark.parametrize("variant", ["test", "full"])
def test_blob_lands_in_the_token_cell_token_affine_names(variant) -> None:
    """(b) geometry on the probe's LPS-like anisotropic grid (full size: preprocessing only). A
    wide window keeps the blob peak below the window top, so its maximum marks its centre."""
    window = (-1000.0, 1000.0)
    _, blob, world = probe_volumes()
    size = CONFIGS[variant]["img_size"]
    x = preprocess(blob, size, window)
    assert tuple(x.shape) == (1, *size)
    aff = affine_of(x)
    # (slice, row, col) run towards inferior, posterior and patient left.
    assert np.allclose(np.abs(aff[:3, :3]) > 1e-6, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert aff[2, 0] < 0 and aff[1, 1] < 0 and aff[0, 2] < 0
    peak = peak_index(x)
    voxel = float(np.linalg.norm(aff[:3, :3], axis=0).max())
    assert np.linalg.norm((aff @ np.r_[peak, 1.0])[:3] - world) < voxel  # MONAI tracked the blob
    strides = np.asarray(CONFIGS[variant]["patch_size"], float)
    tok_aff = patch_token_affine(aff, strides)
    assert token_cell(tok_aff, world) == (peak // strides).astype(int).tolist()
    if variant == "test":
        enc = M3DEncoder(weights="random", variant="test", hu_window=window)
        f = enc.encode(blob)
        assert np.allclose(f.token_affine, tok_aff)


def test_full_size_network_runs_at_native_size() -> None:
    """(c) the full ViT-B on its one native input size (the position table fixes it)."""
    with seeded_init():
        net = build_network("full").eval()
    x = torch.rand(1, 1, 32, 256, 256)
    with torch.inference_mode():
        cls, grid = net(x)
    assert tuple(cls.shape) == (1, 768) and tuple(grid.shape) == (1, 8, 16, 16, 768)
    # Final LayerNorm with its initial affine (1, 0): every token has mean 0 and unit variance.
    tokens = torch.cat([cls, grid.reshape(-1, 768)])
    assert float(tokens.mean(dim=1).abs().max()) < 1e-5
    assert float((tokens.var(dim=1, unbiased=False) - 1).abs().max()) < 1e-3
    assert float(grid.std(dim=(1, 2, 3)).mean()) > 0.01  # tokens differ across positions
