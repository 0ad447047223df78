"""CT-CLIP against the official code (fixture made by ``make_ctclip.py`` from
ibrahimethemhamamci/CT-CLIP): the adapter, built through the registry from a ``CT-CLIP_v2.pt``-
layout file of key-seeded weights (image and text towers), must reproduce the official
``nii_img_to_tensor`` preprocessing at the real size (240 x 480 x 480) and, at the ``test`` size,
the official image latent, quantised tokens and (``tokens=pre-quantisation``) the tokens the
official quantiser receives."""

from __future__ import annotations

import nibabel as nib
import pytest
import torch

from ctbench.adapters.ctclip import CARD, preprocess
from ctbench.model_options import parse_model_options
from ctbench.readers import read_volume
from ctbench.runner import build_encoder
from tests.adapters._helpers import write_checkpoint
from tests.parity.parity_io import read_fixture, relative_error, seeded_state_dict, subsample, synthetic_volume

FIXTURE, META = read_fixture("ctclip")
TOL = META["tolerance"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic volume (square in-plane voxels, as the reference loader needs) written as
    NIfTI and read back by ctbench's reader."""
    vol, aff = synthetic_volume(**META["volume"])
    path = tmp_path_factory.mktemp("ctclip") / "synthetic.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), str(path))
    return read_volume(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The whole official CLIP state dict (image and text towers, ``temperature``), torch.save."""
    state = seeded_state_dict({k: tuple(v) for k, v in META["keys"].items()})
    return str(write_checkpoint(tmp_path_factory.mktemp("ctclip_w") / "CT-CLIP_v2.pt", state))


def _tokens(f) -> torch.Tensor:
    return torch.as_tensor(f.tokens.astype("float32")).flatten(1).T  # (t h w, C) raster order


def test_fixture_provenance_matches_card() -> None:
    assert CARD.parity is not None and CARD.parity.fixture == "ctclip"
    assert CARD.parity.reference_version == META["reference_version"]
    assert CARD.parity.tolerance == TOL["embedding"]
    assert tuple(META["preprocessing"]["spatial_size"]) == tuple(CARD.input.spatial_size[i] for i in (2, 0, 1))


def test_preprocessing_matches_official_at_full_size(volume) -> None:
    x = preprocess(volume).as_tensor()
    assert list(x.shape[1:]) == META["preprocessing"]["spatial_size"]
    assert relative_error(subsample(x, META["preprocessing"]["subsample"]), FIXTURE["input"]) < TOL["input"]


def test_latent_and_quantised_tokens_match_official(volume, weights) -> None:
    enc = build_encoder("ct-clip", weights=weights, device="cpu", variant="test")
    x = subsample(enc.preprocess(volume).as_tensor(), META["preprocessing"]["network_subsample"])
    assert relative_error(x, FIXTURE["network_input"]) < TOL["input"]
    f = enc.encode(volume)
    assert relative_error(torch.as_tensor(f.embedding), FIXTURE["embedding"]) < TOL["embedding"]
    assert relative_error(_tokens(f), FIXTURE["tokens"]) < TOL["tokens"]


def test_pre_quantisation_tokens_match_official(volume, weights) -> None:
    options = parse_model_options(["tokens=pre-quantisation"])
    f = build_encoder("ct-clip", weights=weights, device="cpu", variant="test", options=options).encode(volume)
    assert relative_error(_tokens(f), FIXTURE["tokens_pre_quantisation"]) < TOL["tokens_pre_quantisation"]
    assert relative_error(torch.as_tensor(f.embedding), FIXTURE["embedding"]) < TOL["embedding"]
