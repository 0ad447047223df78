"""FMCIB against the official code (``foundation-cancer-image-biomarker``: ``get_transforms`` and
``LoadModel`` on MONAI's ResNet), through the path a user takes.

The fixture (``make_fmcib.py``) holds what the reference computes on key-seeded weights for the
synthetic oblique volume and a seed point. Here the same weights are written in the layout the
official ``LoadModel`` reads (``{"trunk_state_dict": ...}``, a torch file), the adapter is built
from the registry with that file at the fixture's size, the volume is written as NIfTI and read
by ctbench's reader, the seed (world RAS mm) goes on the volume as the harness puts it there,
and the 50^3 network input (normalisation, 1 mm diagonal resampling, LPS, seed crop with the
official truncation and clamp, transpose, symmetric pad), the pooled embedding and the layer4
map must match the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctbench.adapters.fmcib import CARD
from ctbench.readers import read_volume
from ctbench.registry import MODELS
from ctbench.seeds import attach_seed
from tests.parity.parity_io import check_close, read_fixture, seeded_state_dict, synthetic_volume, write_nifti


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], dict]:
    return read_fixture("fmcib")


@pytest.fixture(scope="module")
def encoded(reference, tmp_path_factory: pytest.TempPathFactory):
    """(adapter network input, features) for the fixture's weights, volume and seed."""
    _, meta = reference
    root = tmp_path_factory.mktemp("fmcib")
    weights = root / "model_weights.torch"
    torch.save({"trunk_state_dict": seeded_state_dict(meta["keys"])}, weights)
    image = attach_seed(read_volume(write_nifti(root / "ct.nii.gz", *synthetic_volume())), meta["seed_ras_mm"])
    encoder = MODELS.get("fmcib")(weights=str(weights), device="cpu", variant=meta["size"])
    return encoder.preprocess(image), encoder.encode(image)


def test_network_input_matches_reference(reference, encoded) -> None:
    tensors, meta = reference
    x, _ = encoded
    check_close("fmcib network input", x.as_tensor(), tensors["input"], meta["tolerance"]["input"])


def test_embedding_matches_reference(reference, encoded) -> None:
    tensors, meta = reference
    _, feats = encoded
    check_close("fmcib embedding", torch.as_tensor(feats.embedding), tensors["embedding"],
                meta["tolerance"]["embedding"])


def test_tokens_match_reference(reference, encoded) -> None:
    tensors, meta = reference
    _, feats = encoded
    check_close("fmcib layer4 tokens", torch.as_tensor(feats.tokens.astype(np.float32)), tensors["tokens"],
                meta["tolerance"]["tokens"])


def test_card_states_this_fixture(reference) -> None:
    """The card's parity facts are those of the fixture the suite checks."""
    _, meta = reference
    facts = CARD.parity
    assert facts is not None and facts.fixture == "fmcib"
    assert (facts.reference_version, facts.checked) == (meta["reference_version"], meta["date"])
    assert facts.tolerance == meta["tolerance"]["embedding"] and facts.measured <= facts.tolerance
