"""COLIPRI against the official code (the ``colipri`` package's processor and image encoder,
built on ``dynamic-network-architectures``' Primus), through the path a user takes.

The fixture (``make_colipri.py``) holds what the package computes on key-seeded weights for the
synthetic oblique volume, padded with -1024 HU so that the 192^3 crop/pad both pads and crops.
Here the same weights are written as the hub's ``model.safetensors`` (``image_encoder.*``,
``softmax_temperature`` and a stand-in text-tower key, which the adapter must drop), the adapter is
built from the registry with that file at the fixture's size (``test``: same preprocessing, small
network), the volume is written as NIfTI and read by ctbench's reader, and the network input
(RAS, 2 mm centred grid, window, crop/pad) with its affine, the pooled embedding and the patch
tokens must match the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ctbench.adapters._common import affine_of
from ctbench.adapters.colipri import CARD
from ctbench.readers import read_volume
from ctbench.registry import MODELS
from tests.parity.parity_io import (
    check_close,
    pad_volume,
    read_fixture,
    seeded_state_dict,
    subsample,
    synthetic_volume,
    write_nifti,
)


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], dict]:
    return read_fixture("colipri")


@pytest.fixture(scope="module")
def encoded(reference, tmp_path_factory: pytest.TempPathFactory):
    """(adapter network input, features) for the fixture's weights and volume."""
    _, meta = reference
    root = tmp_path_factory.mktemp("colipri")
    weights = root / "model.safetensors"
    state = seeded_state_dict(meta["keys"])
    state["text_encoder.backbone.embeddings.word_embeddings.weight"] = torch.zeros(4, 8)
    save_file(state, str(weights))
    volume, affine = pad_volume(*synthetic_volume(), meta["volume"]["pad"], meta["volume"]["pad_value"])
    image = read_volume(write_nifti(root / "ct.nii.gz", volume, affine))
    encoder = MODELS.get("colipri")(weights=str(weights), device="cpu", variant=meta["size"])
    return encoder.preprocess(image), encoder.encode(image)


def test_network_input_matches_reference(reference, encoded) -> None:
    tensors, meta = reference
    x, _ = encoded
    assert tuple(x.shape) == (1, 192, 192, 192)
    check_close("colipri network input", subsample(x.as_tensor(), meta["input_step"]), tensors["input"],
                meta["tolerance"]["input"])
    check_close("colipri network input affine", torch.as_tensor(affine_of(x)), tensors["input_affine"],
                meta["tolerance"]["affine"])


def test_embedding_matches_reference(reference, encoded) -> None:
    tensors, meta = reference
    _, feats = encoded
    check_close("colipri pooled embedding", torch.as_tensor(feats.embedding), tensors["embedding"],
                meta["tolerance"]["embedding"])


def test_tokens_match_reference(reference, encoded) -> None:
    tensors, meta = reference
    _, feats = encoded
    check_close("colipri patch tokens", torch.as_tensor(feats.tokens.astype(np.float32)), tensors["tokens"],
                meta["tolerance"]["tokens"])


def test_card_states_this_fixture(reference) -> None:
    """The card's parity facts are those of the fixture the suite checks."""
    _, meta = reference
    facts = CARD.parity
    assert facts is not None and facts.fixture == "colipri"
    assert (facts.reference_version, facts.checked) == (meta["reference_version"], meta["date"])
    assert facts.tolerance == meta["tolerance"]["embedding"] and facts.measured <= facts.tolerance
