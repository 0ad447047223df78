"""SPECTRE against the official package (fixture made by ``make_spectre.py`` from spectre-fm): the
adapter, built through the registry from the two published files (backbone file passed as
``--weights``, combiner file beside it) holding key-seeded weights, must reproduce the official
preprocessing at the real crop size and the official combiner embedding and per-crop tokens at
the ``test`` size, on a volume tiled by a 2 x 1 x 2 crop grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from ctbench.adapters.spectre import BACKBONE_FILE, CARD, COMBINER_FILE, CROP_SIZE
from ctbench.readers import read_volume
from ctbench.runner import build_encoder
from tests.adapters._helpers import write_checkpoint
from tests.parity.parity_io import check_close, read_fixture, seeded_state_dict, subsample, synthetic_volume

FIXTURE, META = read_fixture("spectre")
TOL = META["tolerance"]
PRE = META["preprocessing"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic volume at the fixture's size, stored as int16 HU NIfTI (as the reference
    read it) and read back by ctbench's reader."""
    vol, aff = synthetic_volume(shape=tuple(PRE["shape"]))
    path = tmp_path_factory.mktemp("spectre") / "synthetic.nii"
    nib.save(nib.Nifti1Image(np.rint(vol).astype(np.int16), aff), str(path))
    return read_volume(path)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory):
    """The ``test`` variant from the official two-file layout: ``--weights`` names the backbone
    file, the combiner file lies beside it under its published name."""
    state = seeded_state_dict({k: (shape, dtype) for k, (shape, dtype) in META["keys"].items()})
    folder = tmp_path_factory.mktemp("spectre_w")
    for prefix, name in (("backbone.", BACKBONE_FILE), ("feature_combiner.", COMBINER_FILE)):
        write_checkpoint(folder / name, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return build_encoder("spectre", weights=str(folder / BACKBONE_FILE), device="cpu", variant="test")


def test_fixture_provenance_matches_card() -> None:
    assert CARD.parity is not None and CARD.parity.fixture == "spectre"
    assert CARD.parity.reference_version == META["reference_version"]
    assert CARD.parity.tolerance == TOL["embedding"]
    assert tuple(PRE["hu_window"]) == CARD.input.hu_window and tuple(PRE["crop_size"]) == CROP_SIZE


def test_preprocessing_matches_official(volume, encoder) -> None:
    x = encoder.preprocess(volume).as_tensor()
    grid = [s // c for s, c in zip(x.shape[1:], CROP_SIZE)]
    assert grid == PRE["grid"]
    check_close("network input", subsample(x, PRE["subsample"]), FIXTURE["input"], TOL["input"])


def test_embedding_and_tokens_match_official(volume, encoder) -> None:
    f = encoder.encode(volume)
    check_close("embedding", torch.as_tensor(f.embedding), FIXTURE["embedding"], TOL["embedding"])
    assert f.tokens.shape[1:] == tuple(PRE["grid"])
    tokens = torch.as_tensor(f.tokens.astype("float32")).flatten(1).T  # (crops in C order, C)
    check_close("tokens", tokens, FIXTURE["tokens"], TOL["tokens"])
