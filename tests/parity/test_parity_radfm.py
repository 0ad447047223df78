"""RadFM against the official code (fixture made by ``make_radfm.py`` from chaoyi-wu/RadFM): the
adapter, built through the registry from a ``pytorch_model.bin`` holding the vision encoder under
its official ``embedding_layer.vision_encoder.`` prefix (key-seeded weights), must reproduce the
official preprocessing at the real input size (512 x 512, 36 slices) and the official ViT's
patch tokens (and their mean, ctbench's embedding) at the ``test`` size."""

from __future__ import annotations

import nibabel as nib
import pytest
import torch

from ctbench.adapters.radfm import CARD, PREFIX, preprocess
from ctbench.readers import read_volume
from ctbench.runner import build_encoder
from tests.adapters._helpers import write_checkpoint
from tests.parity.parity_io import read_fixture, relative_error, seeded_state_dict, subsample, synthetic_volume

FIXTURE, META = read_fixture("radfm")
TOL = META["tolerance"]


def _read(tmp_path_factory: pytest.TempPathFactory, **shape):
    """The fixed synthetic volume written as NIfTI and read back by ctbench's reader."""
    vol, aff = synthetic_volume(**shape)
    path = tmp_path_factory.mktemp("radfm") / "synthetic.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), str(path))
    return read_volume(path)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory):
    """The ``test`` variant from ``--weights pytorch_model.bin`` (official prefixed layout)."""
    state = seeded_state_dict({k: tuple(v) for k, v in META["keys"].items()})
    path = write_checkpoint(tmp_path_factory.mktemp("radfm_w") / "pytorch_model.bin", state, PREFIX)
    return build_encoder("radfm", weights=str(path), device="cpu", variant="test")


def test_fixture_provenance_matches_card() -> None:
    assert CARD.parity is not None and CARD.parity.fixture == "radfm"
    assert CARD.parity.reference_version == META["reference_version"]
    assert CARD.parity.tolerance == TOL["embedding"]
    assert tuple(META["preprocessing"]["hu_window"]) == CARD.input.hu_window


def test_preprocessing_matches_official_at_full_size(tmp_path_factory) -> None:
    x = preprocess(_read(tmp_path_factory)).as_tensor()
    assert list(x.shape[1:]) == META["preprocessing"]["spatial_size"]
    assert relative_error(subsample(x, META["preprocessing"]["subsample"]), FIXTURE["input"]) < TOL["input"]


def test_embedding_and_tokens_match_official(tmp_path_factory, encoder) -> None:
    volume = _read(tmp_path_factory, **META["network_volume"])
    assert relative_error(encoder.preprocess(volume).as_tensor(), FIXTURE["network_input"]) < TOL["input"]
    f = encoder.encode(volume)
    assert relative_error(torch.as_tensor(f.embedding), FIXTURE["embedding"]) < TOL["embedding"]
    tokens = torch.as_tensor(f.tokens.astype("float32")).flatten(1).T  # (h w d, C) raster order
    assert relative_error(tokens, FIXTURE["tokens"]) < TOL["tokens"]
