"""M3D-CLIP against the official code (fixture made by ``make_m3d.py`` from BAAI-DCAI/M3D): the
adapter, built through the registry from a ``pretrained_ViT.bin`` of key-seeded weights, must
reproduce the official preprocessing at the real input size and the official ViT's CLS embedding
and patch tokens at the ``test`` size."""

from __future__ import annotations

import nibabel as nib
import pytest
import torch

from ctbench.adapters.m3d import CARD, preprocess
from ctbench.readers import read_volume
from ctbench.runner import build_encoder
from tests.adapters._helpers import write_checkpoint
from tests.parity.parity_io import read_fixture, relative_error, seeded_state_dict, subsample, synthetic_volume

FIXTURE, META = read_fixture("m3d")
TOL = META["tolerance"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory):
    """The fixed synthetic volume written as NIfTI and read back by ctbench's reader."""
    vol, aff = synthetic_volume()
    path = tmp_path_factory.mktemp("m3d") / "synthetic.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), str(path))
    return read_volume(path)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory):
    """The ``test`` variant from ``--weights pretrained_ViT.bin`` (official unprefixed layout)."""
    keys = {k: (shape, dtype) for k, (shape, dtype) in META["keys"].items()}
    path = write_checkpoint(tmp_path_factory.mktemp("m3d_w") / "pretrained_ViT.bin", seeded_state_dict(keys))
    return build_encoder("m3d", weights=str(path), device="cpu", variant="test")


def test_fixture_provenance_matches_card() -> None:
    assert CARD.parity is not None and CARD.parity.fixture == "m3d"
    assert CARD.parity.reference_version == META["reference_version"]
    assert CARD.parity.tolerance == TOL["embedding"]
    assert tuple(META["preprocessing"]["spatial_size"]) == CARD.input.spatial_size
    assert tuple(META["preprocessing"]["hu_window"]) == CARD.input.hu_window


def test_preprocessing_matches_official_at_full_size(volume) -> None:
    x = preprocess(volume).as_tensor()
    assert tuple(x.shape) == (1, *CARD.input.spatial_size)
    got = subsample(x, META["preprocessing"]["subsample"])
    assert relative_error(got, FIXTURE["input"]) < TOL["input"]
    # the published per-case pipeline reads 8-bit PNG slices: equal within the rounding step
    assert float((got - FIXTURE["input_8bit"]).abs().max()) < TOL["input_8bit"]


def test_embedding_and_tokens_match_official(volume, encoder) -> None:
    x = encoder.preprocess(volume).as_tensor()
    assert relative_error(x, FIXTURE["network_input"]) < TOL["input"]
    f = encoder.encode(volume)
    assert relative_error(torch.as_tensor(f.embedding), FIXTURE["embedding"]) < TOL["embedding"]
    tokens = torch.as_tensor(f.tokens.astype("float32")).flatten(1).T  # (d h w, C) raster order
    assert relative_error(tokens, FIXTURE["tokens"]) < TOL["tokens"]
