"""The ctbench adapter: card, lazy import, Features, determinism, batching, weights."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ctbench.adapters.voxelfm import CARD, VoxelFMEncoder
from ctbench.errors import CTBenchError
from ctbench.types import Encoder, Features


def volume(shape=(60, 50, 40), spacing=(0.8, 0.8, 1.5), seed=0):
    g = torch.Generator().manual_seed(seed)
    vol = torch.full(shape, -1000.0)
    sl = tuple(slice(n // 6, n - n // 6) for n in shape)
    vol[sl] = 40.0 + 200 * torch.rand(vol[sl].shape, generator=g)
    aff = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    return MetaTensor(vol[None], affine=aff)


def test_card():
    assert CARD.name == "voxelfm" and CARD.licence == "Apache-2.0"
    assert "2604.04133" in CARD.citation
    assert CARD.weights.hub_repo == "rmaguado/VoxelFM"
    assert CARD.weights.filename == "vitb_3d/checkpoints/99999.pth"
    assert CARD.supervision == "self-supervised"
    assert CARD.input.hu_window == (-1000.0, 1900.0)


def test_import_is_cheap():
    code = (
        "import sys, ctbench.adapters.voxelfm as m; "
        "assert m.CARD.name == 'voxelfm'; "
        "bad = [k for k in ('torch', 'voxelfm', 'monai') if k in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_encode_tiny_random():
    enc = VoxelFMEncoder(weights="random", variant="tiny")
    assert isinstance(enc, Encoder) and enc.card is CARD
    assert enc.weights_ref.is_random and enc.variant == "tiny"
    feats = enc.encode(volume())
    assert isinstance(feats, Features)
    assert feats.embedding.shape == (48,) and feats.embedding.dtype == np.float32
    assert feats.tokens.dtype == np.float16 and feats.tokens.shape[0] == 48
    assert feats.token_affine.shape == (4, 4)
    x = enc.preprocess(volume())
    assert isinstance(x, MetaTensor) and x.ndim == 3 and x.affine.shape == (4, 4)
    assert feats.tokens.shape[1:] == tuple(n // 14 for n in x.shape)
    assert np.allclose(feats.token_affine[:3, :3], 14 * x.affine.numpy()[:3, :3])
    assert enc.embedding_dim == enc.token_dim == 48
    assert np.all(np.isfinite(feats.tokens))


def test_random_weights_are_reproducible():
    a = VoxelFMEncoder(weights="random", variant="tiny").encode(volume())
    torch.manual_seed(123)  # global RNG state must not matter
    b = VoxelFMEncoder(weights="random", variant="tiny").encode(volume())
    assert np.array_equal(a.embedding, b.embedding)
    assert np.array_equal(a.tokens, b.tokens)


def test_preprocessing_id():
    a = VoxelFMEncoder(weights="random", variant="tiny")
    b = VoxelFMEncoder(weights="random", variant="tiny", crop_background=False)
    c = VoxelFMEncoder(weights="random", variant="tiny", max_tokens=1000)
    ids = {a.preprocessing_id, b.preprocessing_id, c.preprocessing_id}
    assert len(ids) == 3 and all(isinstance(i, str) and len(i) == 16 for i in ids)
    assert a.preprocessing_id == VoxelFMEncoder(weights="random", variant="tiny").preprocessing_id


def test_encode_batch_matches_encode():
    enc = VoxelFMEncoder(weights="random", variant="tiny", max_batch_tokens=40)
    vols = [volume(seed=0), volume((70, 44, 30), seed=1), volume(seed=2), volume(seed=3)]
    batch = enc.encode_batch(vols)
    assert len(batch) == 4
    for v, f in zip(vols, batch):
        single = enc.encode(v)
        assert np.allclose(single.embedding, f.embedding, atol=1e-5)
        assert single.tokens.shape == f.tokens.shape
        assert np.allclose(single.tokens.astype(np.float32), f.tokens.astype(np.float32), atol=2e-3)
        assert np.allclose(single.token_affine, f.token_affine)
    assert not np.allclose(batch[0].embedding, batch[2].embedding)


def test_weights_path_roundtrip(tmp_path):
    src = VoxelFMEncoder(weights="random", variant="tiny")
    sd = {f"backbone.{k}": v for k, v in src.model.state_dict().items()}
    torch.save({"teacher": sd}, tmp_path / "w.pth")
    enc = VoxelFMEncoder(weights=str(tmp_path / "w.pth"), variant="tiny")
    assert not enc.weights_ref.is_random and len(enc.weights_ref.sha256) == 64
    vol = volume()
    assert np.array_equal(src.encode(vol).embedding, enc.encode(vol).embedding)
    with pytest.raises(CTBenchError, match="wrongly shaped"):
        VoxelFMEncoder(weights=str(tmp_path / "w.pth"), variant="base")


def test_bad_arguments():
    with pytest.raises(CTBenchError, match="variant"):
        VoxelFMEncoder(weights="random", variant="huge")
    with pytest.raises(CTBenchError, match="no published weights"):
        VoxelFMEncoder(weights="auto", variant="tiny")
    with pytest.raises(CTBenchError, match="does not exist"):
        VoxelFMEncoder(weights="/nonexistent/file.pth", variant="tiny")
