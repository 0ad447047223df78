"""CT-CLIP adapter: official checkpoint layout, strict-load errors, the reference key set and
parameter count, token geometry, and the full-size network on a small input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctbench.adapters._common import affine_of
from ctbench.adapters.ctclip import CARD, SIZES, CTCLIPEncoder, image_state, preprocess
from ctbench.adapters.ctclip_net import build_network
from ctbench.check_adapter import probe_volumes
from ctbench.errors import CTBenchError
from ctbench.weights import seeded_init, sha256_file
from tests.adapters._helpers import (
    assert_load_refused,
    assert_loaded,
    patch_token_affine,
    peak_index,
    rewrite_checkpoint,
    token_cell,
    token_response,
    write_checkpoint,
)


def _trained_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """A test-size image tower whose every tensor (norm gains, scales, codebook) is non-default."""
    torch.manual_seed(seed)
    state = build_network("test").state_dict()
    for k, v in state.items():
        if k.endswith(("gamma", "q_scale", "k_scale")) or (v.ndim == 1 and k.endswith(".weight")):
            state[k] = v + 0.1 * torch.randn_like(v)
        elif k.endswith("cluster_size"):
            state[k] = torch.rand_like(v) * 10
    return state


def _official_file(tmp_path: Path, state: dict, name: str = "CT-CLIP_v2.pt") -> Path:
    """The reference layout: the whole CTCLIP state_dict (image tower, BERT text tower, the
    unused CLOOB projections, temperature), saved with torch.save."""
    other = {
        "text_transformer.embeddings.word_embeddings.weight": torch.randn(11, 8),
        "text_transformer.encoder.layer.0.attention.self.query.weight": torch.randn(8, 8),
        "to_text_latent.weight": torch.randn(512, 8),
        "to_text_latent_extra.weight": torch.randn(512, 8),
        "to_visual_latent_extra.weight": torch.randn_like(state["to_visual_latent.weight"]),
        "temperature": torch.tensor(1.0),
    }
    return write_checkpoint(tmp_path / name, state, extra=other)


@pytest.fixture(scope="module")
def volume():
    return probe_volumes()[1]


def test_card_facts() -> None:
    assert CARD.name == "ct-clip" and CARD.supervision == "language"
    assert "CC-BY-NC-SA-4.0" in CARD.licence and "non-commercial" in CARD.licence
    assert CARD.pretraining_datasets == ("CT-RATE",)
    assert (CARD.embedding_dim, CARD.token_dim) == (512, 512)
    assert CARD.input.spacing_mm == (0.75, 0.75, 1.5) and CARD.input.spatial_size == (480, 480, 240)
    assert CARD.input.hu_window == (-1000.0, 1000.0)
    w = CARD.weights
    assert (w.hub_repo, w.hub_repo_type, w.filename, w.format) == (
        "ibrahimhamamci/CT-RATE", "dataset", "models/CT-CLIP-Related/CT-CLIP_v2.pt", "torch")


def test_full_key_set_shapes_and_parameter_count() -> None:
    with torch.device("meta"):
        net = build_network("full")
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == CARD.parameters == 176_885_144
    assert sum(p.numel() for p in net.visual_transformer.parameters()) == 25_890_200
    vt = "visual_transformer."
    shapes = {
        vt + "spatial_rel_pos_bias.net.0.0.weight": (512, 2),
        vt + "spatial_rel_pos_bias.net.2.weight": (8, 512),
        vt + "to_patch_emb.1.weight": (4000,),  # LayerNorm over 1 x 10 x 20 x 20 patch values
        vt + "to_patch_emb.2.weight": (512, 4000),
        vt + "to_patch_emb_first_frame.2.weight": (512, 400),
        vt + "enc_spatial_transformer.layers.0.0.dsconv.weight": (512, 1, 3, 3, 3),  # PEG
        vt + "enc_spatial_transformer.layers.3.1.to_q.weight": (256, 512),  # 8 heads x 32
        vt + "enc_spatial_transformer.layers.3.1.to_kv.weight": (512, 512),
        vt + "enc_spatial_transformer.layers.3.1.null_kv": (8, 0, 32),
        vt + "enc_spatial_transformer.layers.3.1.norm.beta": (512,),  # bias-free LayerNorm buffer
        vt + "enc_temporal_transformer.layers.3.1.context_norm.gamma": (512,),
        vt + "enc_temporal_transformer.layers.3.3.1.weight": (2730, 512),  # GEGLU, inner 1365
        vt + "enc_temporal_transformer.layers.3.3.4.weight": (512, 1365),
        vt + "enc_temporal_transformer.norm_out.gamma": (512,),
        vt + "vq._codebook.embed": (1, 8192, 512),
        vt + "vq._codebook.cluster_size": (1, 8192),
        vt + "vq._codebook.initted": (1,),
        vt + "to_pixels.0.weight": (4000, 512),
        vt + "to_pixels_first_frame.0.weight": (400, 512),
        "to_visual_latent.weight": (512, 24 * 24 * 512),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(".layers.4." in k or ".layers.0.2." in k for k in sd)  # depth 4, no cross-attn
    assert len(sd) == 158


def test_official_checkpoint_loads_and_matches_direct_module(tmp_path: Path, volume) -> None:
    state = _trained_state()
    path = _official_file(tmp_path, state)
    enc = CTCLIPEncoder(weights=str(path), variant="test")
    assert enc.weights_ref.path == path and enc.weights_ref.sha256 == sha256_file(path)
    feats = enc.encode(volume)

    direct = build_network("test").eval()
    direct.load_state_dict(image_state(torch.load(path, weights_only=True), "t"), strict=True)
    x = preprocess(volume, SIZES["test"])
    with torch.no_grad():
        latent, tokens = direct(x.as_tensor()[None])
    np.testing.assert_allclose(feats.embedding, latent[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats.tokens.astype(np.float32), tokens[0].permute(3, 0, 1, 2).numpy(),
                               rtol=1e-3, atol=1e-4)
    assert feats.tokens.shape == (32, 4, 4, 4) and feats.embedding.shape == (512,)
    assert abs(float(np.linalg.norm(feats.embedding)) - 1.0) < 1e-5  # L2-normalised latent
    # Quantised tokens are codebook rows (the VQ output), and several codes are in use.
    codebook = state["visual_transformer.vq._codebook.embed"][0].half().float()  # tokens are fp16
    flat = torch.from_numpy(feats.tokens.astype(np.float32)).reshape(32, -1).T
    codes = torch.cdist(flat, codebook).argmin(dim=1)
    assert torch.equal(flat, codebook[codes]) and len(set(codes.tolist())) > 1
    assert_loaded(enc.model, state)
    assert not np.allclose(CTCLIPEncoder(weights="random", variant="test").encode(volume).embedding,
                           feats.embedding)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s.pop("visual_transformer.vq._codebook.embed"), ["missing", "vq._codebook.embed"]),
        (lambda s: s.__setitem__("visual_transformer.vq._codebook.embed_avg", torch.zeros(1)),
         ["unexpected", "vq._codebook.embed_avg"]),
        (lambda s: s.__setitem__("to_visual_latent.weight", torch.zeros(512, 100)),
         ["wrongly shaped", "to_visual_latent.weight", "[512, 100]", "[512, 512]"]),
        (lambda s: s.__setitem__("logit_scale", torch.zeros(1)), ["unexpected", "logit_scale"]),
    ],
    ids=["missing", "unexpected", "shape", "stray-top-level"],
)
def test_bad_checkpoint_names_the_key(tmp_path: Path, edit, words) -> None:
    path = _official_file(tmp_path, _trained_state())
    rewrite_checkpoint(path, edit)
    assert_load_refused(CTCLIPEncoder, path, words)


def test_ddp_prefixed_training_checkpoint_loads(tmp_path: Path) -> None:
    state = _trained_state()
    full = torch.load(_official_file(tmp_path, state), weights_only=True)
    path = write_checkpoint(tmp_path / "CTClip.1000.pt", full, "module.")
    assert_loaded(CTCLIPEncoder(weights=str(path), variant="test").model, state)


def test_user_errors_and_reproducible_random_weights(volume) -> None:
    with pytest.raises(CTBenchError, match="no published weights"):
        CTCLIPEncoder(weights="auto", variant="test")
    with pytest.raises(CTBenchError, match="unknown CT-CLIP variant"):
        CTCLIPEncoder(weights="random", variant="huge")
    a = CTCLIPEncoder(weights="random", variant="test")
    b = CTCLIPEncoder(weights="random", variant="test")
    assert a.weights_ref.is_random and a.preprocessing_id == b.preprocessing_id
    fa = a.encode(volume)
    assert np.array_equal(fa.embedding, b.encode(volume).embedding)
    batch = a.encode_batch([volume, volume, volume])
    for f in batch:  # batched matmuls may round differently in the last bit; codes are identical
        np.testing.assert_allclose(f.embedding, fa.embedding, rtol=0, atol=1e-6)
        assert np.array_equal(f.tokens, fa.tokens) and np.array_equal(f.token_affine, fa.token_affine)


def _blob_volume(blob_index=(62.0, 27.0, 31.0)):
    return probe_volumes(blob_index=blob_index)


@pytest.mark.parametrize("variant", ["test", "full"])
def test_blob_lands_in_the_token_cell_token_affine_names(variant) -> None:
    """(b) geometry on the probe's LPS-like anisotropic grid: the blob's position in the network
    input and the token cell that ``token_affine`` names agree. Full size: preprocessing only."""
    base, blob, world = _blob_volume()
    x0, x1 = preprocess(base, SIZES[variant]), preprocess(blob, SIZES[variant])
    d, h, w = SIZES[variant][2], SIZES[variant][0], SIZES[variant][1]
    assert tuple(x1.shape) == (1, d, h, w)
    aff = affine_of(x1)
    # (slice, row, col) run towards superior, left, posterior at 1.5 / 0.75 / 0.75 mm (truncated size).
    assert np.allclose(np.abs(aff[:3, :3]) > 1e-6, [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert aff[2, 0] > 0 and aff[0, 1] < 0 and aff[1, 2] < 0
    assert np.allclose(np.linalg.norm(aff[:3, :3], axis=0), [1.5, 0.75, 0.75], atol=0.05)
    assert -1.0 <= float(x1.min()) and float(x1.max()) <= 1.0
    if variant == "full":  # the 480 x 480 x 240 box is larger than the probe: padded with -1
        assert float(x1[0, 0, 0, 0]) == -1.0
    peak = peak_index(x1 - x0)
    assert np.linalg.norm((aff @ np.r_[peak, 1.0])[:3] - world) < 1.5  # MONAI tracked the blob
    strides = np.array([10.0, 20.0, 20.0])
    tok_aff = patch_token_affine(aff, strides)
    cell = token_cell(tok_aff, world)
    assert cell == (peak // strides).astype(int).tolist()
    if variant == "test":
        enc = CTCLIPEncoder(weights="random", variant="test")
        f0, f1 = enc.encode(base), enc.encode(blob)
        assert np.allclose(f1.token_affine, tok_aff)
        assert token_response(f0, f1)[tuple(cell)] > 0  # the blob's own cell changes its code


def test_full_size_network_runs_on_two_frames() -> None:
    """(c) the full-width, full-depth CTViT + to_visual_latent on a 20 x 480 x 480 input: the
    spatial size is the native one (required by the position bias and the 24*24*512 latent
    projection); only the slice count is cut from 240 to 20 (2 temporal tokens) to keep CPU time
    down. The frame axis is not tied to any fixed size in the network."""
    with seeded_init():
        net = build_network("full").eval()
    x = torch.rand(1, 1, 20, 480, 480) * 2 - 1
    with torch.inference_mode():
        latent, tokens = net(x)
    assert tuple(latent.shape) == (1, 512) and tuple(tokens.shape) == (1, 2, 24, 24, 512)
    assert abs(float(latent.norm()) - 1.0) < 1e-5
    codebook = net.visual_transformer.vq._codebook.embed[0]
    rows = tokens.reshape(-1, 512)[::97]
    assert torch.equal(rows, codebook[torch.cdist(rows, codebook).argmin(dim=1)])


def test_pre_quantisation_tokens_option(volume) -> None:
    """``tokens="pre-quantisation"``: the same embedding (the reference's, from quantised
    tokens); the tokens are those the quantiser snaps, each to the codebook row of highest cosine
    (checked here with numpy on the stored codebook)."""
    q = CTCLIPEncoder(weights="random", variant="test")
    p = CTCLIPEncoder(weights="random", variant="test", tokens="pre-quantisation")
    fq, fp = q.encode(volume), p.encode(volume)
    np.testing.assert_array_equal(fq.embedding, fp.embedding)
    np.testing.assert_array_equal(fq.token_affine, fp.token_affine)
    codebook = q.model.visual_transformer.vq._codebook.embed[0].double().numpy()
    raw = fp.tokens.astype(np.float64).reshape(fp.tokens.shape[0], -1).T  # (tokens, dim), fp16-stored
    unit = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
    picked = codebook[np.argmax(raw @ unit.T, axis=1)].T.reshape(fq.tokens.shape)
    agree = np.mean(np.all(np.isclose(picked, fq.tokens, atol=1e-3), axis=0))
    assert agree > 0.97  # ties broken by the fp16 storage of the raw tokens may differ
    assert not np.allclose(fp.tokens, fq.tokens)
    assert p.settings["tokens"] == "pre-quantisation" and p.preprocessing_id != q.preprocessing_id
    with pytest.raises(CTBenchError, match="tokens 'raw' is not one of quantised, pre-quantisation"):
        CTCLIPEncoder(weights="random", variant="test", tokens="raw")
