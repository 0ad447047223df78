"""CT-FM against the official code (``lighter-zoo``'s SegResEncoder and the feature extractor's
model card preprocessing), through the path a user takes.

The fixture (``make_ctfm.py``) holds what the reference computes on key-seeded weights for the
synthetic oblique volume. Here the same weights are written as the hub's ``model.safetensors``
(unprefixed keys), the adapter is built from the registry with that file at the fixture's size,
the volume (padded with -1024 HU as the fixture's, so that the foreground crop acts) is written
as NIfTI and read by ctbench's reader, and the network input (SPL, HU
window, foreground crop) with its affine, the 512-d (or small size's) embedding and the last
feature map must match the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ctbench.adapters._common import affine_of
from ctbench.adapters.ctfm import CARD
from ctbench.readers import read_volume
from ctbench.registry import MODELS
from tests.parity.parity_io import (
    check_close,
    pad_volume,
    read_fixture,
    seeded_state_dict,
    synthetic_volume,
    write_nifti,
)


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], dict]:
    return read_fixture("ctfm")


@pytest.fixture(scope="module")
def encoded(reference, tmp_path_factory: pytest.TempPathFactory):
    """(adapter network input, features) for the fixture's weights and volume."""
    _, meta = reference
    root = tmp_path_factory.mktemp("ctfm")
    weights = root / "model.safetensors"
    save_file(seeded_state_dict(meta["keys"]), str(weights))
    volume, affine = pad_volume(*synthetic_volume(), meta["volume"]["pad"], meta["volume"]["pad_value"])
    image = read_volume(write_nifti(root / "ct.nii.gz", volume, affine))
    encoder = MODELS.get("ct-fm")(weights=str(weights), device="cpu", variant=meta["size"])
    return encoder.preprocess(image), encoder.encode(image)


def test_network_input_matches_reference(reference, encoded) -> None:
    tensors, meta = reference
    x, _ = encoded
    check_close("ct-fm network input", x.as_tensor(), tensors["input"], meta["tolerance"]["input"])
    check_close("ct-fm network input affine", torch.as_tensor(affine_of(x)), tensors["input_affine"],
                meta["tolerance"]["affine"])


def test_embedding_matches_reference(reference, encoded) -> None:
    tensors, meta = reference
    _, feats = encoded
    check_close("ct-fm embedding", torch.as_tensor(feats.embedding), tensors["embedding"],
                meta["tolerance"]["embedding"])


def test_tokens_match_reference(reference, encoded) -> None:
    tensors, meta = reference
    _, feats = encoded
    check_close("ct-fm last-map tokens", torch.as_tensor(feats.tokens.astype(np.float32)), tensors["tokens"],
                meta["tolerance"]["tokens"])


def test_card_states_this_fixture(reference) -> None:
    """The card's parity facts are those of the fixture the suite checks."""
    _, meta = reference
    facts = CARD.parity
    assert facts is not None and facts.fixture == "ctfm"
    assert (facts.reference_version, facts.checked) == (meta["reference_version"], meta["date"])
    assert facts.tolerance == meta["tolerance"]["embedding"] and facts.measured <= facts.tolerance
