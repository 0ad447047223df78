"""Merlin adapter: official checkpoint layout, strict-load errors, reference architecture facts,
token geometry, and the full-size network on a small input."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from ctbench.adapters._common import affine_of
from ctbench.adapters.merlin import CARD, CHECKPOINT_PREFIX, STRIDES, MerlinEncoder, build_network
from ctbench.check_adapter import probe_volumes
from ctbench.errors import CTBenchError
from ctbench.weights import sha256_file
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


def _checkpoint_state(variant: str = "test", seed: int = 1) -> dict[str, torch.Tensor]:
    """A trained-looking image-encoder state: seeded weights plus non-trivial BN statistics."""
    torch.manual_seed(seed)
    state = build_network(variant).state_dict()
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = 0.5 + torch.rand_like(v)
        elif k.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias")):
            state[k] = 0.1 * torch.randn_like(v)
        elif k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(1234)
    return state


def _official_file(tmp_path: Path, state: dict, name: str = "merlin.pt") -> Path:
    """The reference's file layout: the whole CLIP model's state_dict (image, text, logit scale)."""
    text = {
        "encode_text.text_encoder.embeddings.word_embeddings.weight": torch.randn(11, 8),
        "encode_text.linear_layer.weight": torch.randn(4, 8),
        "encode_text.linear_layer.bias": torch.randn(4),
        "logit_scale": torch.tensor(1.0),
    }
    return write_checkpoint(tmp_path / name, state, CHECKPOINT_PREFIX, text)


@pytest.fixture(scope="module")
def volume():
    base, _, _ = probe_volumes()
    return base


def test_card_facts() -> None:
    assert CARD.name == "merlin" and CARD.licence == "MIT" and CARD.supervision == "language"
    assert (CARD.embedding_dim, CARD.token_dim) == (2048, 2048)
    assert CARD.input.spacing_mm == (1.5, 1.5, 3.0) and CARD.input.spatial_size == (224, 224, 160)
    assert CARD.input.hu_window == (-1000.0, 1000.0) and CARD.input.orientation == "RAS"
    assert CARD.weights.hub_repo == "stanfordmimi/Merlin" and CARD.weights.format == "torch"
    assert CARD.weights.filename.endswith("_epoch_99.pt")


def test_full_architecture_matches_reference_layout() -> None:
    with torch.device("meta"):
        net = build_network("full")
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == CARD.parameters == 121_882_204
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    shapes = {
        "conv1.weight": (64, 3, 3, 7, 7),  # stem inflated with time dim 3
        "bn1.running_var": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1, 1),
        "layer1.0.conv2.weight": (64, 64, 3, 3, 3),
        "layer1.0.conv3.weight": (256, 64, 1, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1, 1),
        "layer1.0.downsample.1.num_batches_tracked": (),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1, 1),
        "layer3.35.conv2.weight": (256, 256, 3, 3, 3),
        "layer4.2.conv3.weight": (2048, 512, 1, 1, 1),
        "classifier.weight": (1692, 2048, 1, 1, 1),
        "classifier.bias": (1692,),
        "contrastive_head.weight": (512, 2048, 1, 1, 1),
        "contrastive_head.bias": (512,),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.endswith("conv1.bias") or k.endswith("conv2.bias") or k == "fc.weight" for k in sd)
    assert len(sd) == 934
    # Strides / padding of the reference inflation: stem (1,2,2), pool and stage convs 2 in 3D.
    assert net.conv1.stride == (1, 2, 2) and net.conv1.padding == (1, 3, 3)
    assert (net.maxpool.kernel_size, net.maxpool.stride, net.maxpool.padding) == (3, 2, 1)
    assert net.layer2[0].conv2.stride == (2, 2, 2) and net.layer2[0].downsample[0].stride == (2, 2, 2)
    pooled, tokens = net(torch.empty(1, 1, 224, 224, 160, device="meta"))
    assert tuple(pooled.shape) == (1, 2048)
    assert tuple(net.feature_map(torch.empty(1, 1, 224, 224, 160, device="meta")).shape) == (1, 2048, 10, 7, 7)
    assert tuple(tokens.shape) == (1, 2048, 7, 7, 10)  # stored (X', Y', Z')


def test_official_checkpoint_loads_and_matches_direct_module(tmp_path: Path, volume) -> None:
    state = _checkpoint_state()
    path = _official_file(tmp_path, state)
    enc = MerlinEncoder(weights=str(path), variant="test")
    assert enc.weights_ref.path == path and enc.weights_ref.sha256 == sha256_file(path)
    feats = enc.encode(volume)

    direct = build_network("test").eval()
    direct.load_state_dict(state, strict=True)
    x = enc.preprocess(volume)
    with torch.no_grad():
        fmap = direct.feature_map(x.as_tensor()[None])  # (1, C, Z', X', Y'), the reference layout
    want_emb = fmap.mean(dim=(2, 3, 4))[0].numpy()
    want_tok = fmap[0].permute(0, 2, 3, 1).numpy()  # (C, Z', X', Y') -> (C, X', Y', Z')
    np.testing.assert_allclose(feats.embedding, want_emb, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feats.tokens.astype(np.float32), want_tok, rtol=2e-3, atol=1e-5)
    assert feats.tokens.shape == (256, 3, 3, 4)
    assert float(np.abs(feats.embedding).max()) > 1e-3  # a real signal, not zeros
    assert_loaded(enc.model, state)  # every tensor of the file reached the module


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s.pop(CHECKPOINT_PREFIX + "layer1.0.conv2.weight"), ["missing", "layer1.0.conv2.weight"]),
        (lambda s: s.__setitem__(CHECKPOINT_PREFIX + "layer5.0.conv1.weight", torch.zeros(1)),
         ["unexpected", "layer5.0.conv1.weight"]),
        (lambda s: s.__setitem__(CHECKPOINT_PREFIX + "classifier.weight", torch.zeros(6, 256, 1, 1, 1)),
         ["wrongly shaped", "classifier.weight", "[6, 256, 1, 1, 1]", "[16, 256, 1, 1, 1]"]),
        (lambda s: s.__setitem__("visual_projection.weight", torch.zeros(2)),
         ["unexpected", "visual_projection.weight", "encode_text."]),
    ],
    ids=["missing", "unexpected", "shape", "stray-top-level"],
)
def test_bad_checkpoint_names_the_key(tmp_path: Path, edit, words) -> None:
    path = _official_file(tmp_path, _checkpoint_state())
    rewrite_checkpoint(path, edit)
    assert_load_refused(MerlinEncoder, path, words)


def test_unsafe_or_missing_files_are_user_errors(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.pt"
    torch.save({"conv1.weight": torch.zeros(1), "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(CTBenchError, match="never unpickles"):
        MerlinEncoder(weights=str(pickled), variant="test")
    with pytest.raises(CTBenchError, match="does not exist"):
        MerlinEncoder(weights=str(tmp_path / "nope.pt"), variant="test")
    with pytest.raises(CTBenchError, match="no published weights"):
        MerlinEncoder(weights="auto", variant="test")
    with pytest.raises(CTBenchError, match="unknown Merlin variant"):
        MerlinEncoder(weights="random", variant="huge")
    with pytest.raises(CTBenchError, match="multiples"):
        MerlinEncoder(weights="random", variant="test", input_size=(100, 96, 64))


def test_random_weights_are_reproducible_and_ids_track_settings(volume) -> None:
    a = MerlinEncoder(weights="random", variant="test")
    b = MerlinEncoder(weights="random", variant="test")
    assert a.weights_ref.is_random and a.weights_ref.sha256 == "random"
    fa, fb = a.encode(volume), b.encode(volume)
    assert np.array_equal(fa.embedding, fb.embedding) and np.array_equal(fa.tokens, fb.tokens)
    batch = a.encode_batch([volume, volume])
    for f in batch:  # batched convolutions may round differently, nothing more
        np.testing.assert_allclose(f.embedding, fa.embedding, rtol=1e-4, atol=1e-7)
        assert np.array_equal(f.token_affine, fa.token_affine)
    assert a.preprocessing_id == b.preprocessing_id
    assert a.preprocessing_id != MerlinEncoder(weights="random", variant="test", input_size=(64, 64, 64)).preprocessing_id
    with pytest.raises(CTBenchError, match="MetaTensor"):
        a.encode(np.zeros((1, 8, 8, 8), np.float32))


def test_native_preprocessing_box_and_geometry_of_the_full_grid(volume) -> None:
    enc = MerlinEncoder(weights="random")
    x = enc.preprocess(volume)
    aff = affine_of(x)
    assert tuple(x.shape) == (1, 224, 224, 160)
    assert np.allclose(np.abs(aff[:3, :3]), np.diag([1.5, 1.5, 3.0]))  # RAS, (1.5, 1.5, 3) mm
    assert np.all(np.diag(aff[:3, :3]) > 0)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # Token (i, j, k) of the 7 x 7 x 10 grid is centred on input voxel (32 i, 32 j, 16 k).
    tok = enc.token_affine(aff)
    assert np.allclose(tok @ [3, 3, 5, 1], aff @ [96, 96, 80, 1])
    assert np.allclose(tok[:3, :3], aff[:3, :3] @ np.diag(STRIDES))


@pytest.mark.parametrize("variant, size, target", [("test", None, (1, 2, 2)), ("full", (64, 64, 32), (1, 1, 1))])
def test_blob_lands_in_the_token_cell_token_affine_names(variant, size, target) -> None:
    """(b) geometry on a non-RAS anisotropic volume; the full variant runs the full-size
    ResNet-152 on a reduced box (c)."""
    enc = MerlinEncoder(weights="random", variant=variant, input_size=size)
    strides, target = np.asarray(STRIDES, float), np.asarray(target)
    base, blob, world, v = blob_at_token(enc, strides, target)
    x0, x1 = enc.preprocess(base), enc.preprocess(blob)
    assert np.max(np.abs(peak_index(x1 - x0) - v)) <= 1.0  # the blob is where MONAI says it is
    f0, f1 = enc.encode(base), enc.encode(blob)
    assert np.allclose(f1.token_affine, enc.token_affine(affine_of(x1)))
    assert token_cell(f1.token_affine, world) == target.tolist()
    assert strongest_token(f0, f1) == target.tolist()
    want_dim = 2048 if variant == "full" else 256
    assert f1.embedding.shape == (want_dim,) and np.all(np.isfinite(f1.tokens))
    assert float(np.abs(f1.embedding).max()) > 0

