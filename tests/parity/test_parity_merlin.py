"""Merlin against the official code (``merlin-vlm``), through the path a user takes.

The fixture (``make_merlin.py``) holds what the reference computes on key-seeded weights for the
synthetic oblique volume. Here the same weights are written as the released CLIP checkpoint
(a torch file with ``encode_image.i3_resnet.*`` next to other towers' entries), the adapter at
the fixture's size (``small``: the full widths and heads with one bottleneck per stage) is built
from the registry with that file, the volume is written as NIfTI and read by ctbench's reader,
and:
- the adapter's native preprocessing (RAS, 1.5 x 1.5 x 3 mm, HU window, 224 x 224 x 160) must
  match the reference's ``ImageTransforms`` voxel for voxel, affine included;
- with ``input_size=(64, 64, 32)`` (the network on the central box, as the fixture's forward:
  the native input takes seconds on two cores) the network input, the 2048-d embedding
  and the layer4 tokens must match the reference's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctbench.adapters._common import affine_of
from ctbench.adapters.merlin import CARD
from ctbench.readers import read_volume
from ctbench.registry import MODELS
from tests.parity.parity_io import (
    check_close,
    read_fixture,
    seeded_state_dict,
    subsample,
    synthetic_volume,
    write_nifti,
)


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], dict]:
    return read_fixture("merlin")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory):
    volume, affine = synthetic_volume()
    return read_volume(write_nifti(tmp_path_factory.mktemp("merlin") / "ct.nii.gz", volume, affine))


@pytest.fixture(scope="module")
def encoder(reference, tmp_path_factory: pytest.TempPathFactory):
    """The adapter at the fixture's size, loaded from the seeded weights in the released layout."""
    _, meta = reference
    layout = meta["checkpoint_layout"]
    state = seeded_state_dict(meta["keys"]) | {k: torch.tensor(1.0) for k in layout["extra_keys"]}
    path = tmp_path_factory.mktemp("merlin-weights") / "merlin.pt"
    torch.save(state, path)
    del state
    enc = MODELS.get("merlin")(weights=str(path), device="cpu", variant=meta["size"],
                               input_size=tuple(meta["net_size"]))
    path.unlink()  # do not keep a large file for the rest of the run
    return enc


def test_native_preprocessing_matches_reference(reference, image) -> None:
    """The card's preprocessing at the native 224 x 224 x 160 size (any variant runs the same
    transforms: the small one is built here so that no second full network is loaded)."""
    tensors, meta = reference
    native = MODELS.get("merlin")(weights="random", variant="test", input_size=tuple(meta["native_size"]))
    x = native.preprocess(image)
    check_close("merlin native input", subsample(x.as_tensor(), meta["input_step"]), tensors["input"],
                meta["tolerance"]["input"])
    check_close("merlin native input affine", torch.as_tensor(affine_of(x)), tensors["input_affine"],
                meta["tolerance"]["affine"])


def test_network_input_matches_reference(reference, encoder, image) -> None:
    tensors, meta = reference
    x = encoder.preprocess(image)
    check_close("merlin network input", x.as_tensor(), tensors["net_input"], meta["tolerance"]["input"])
    shift = np.eye(4)
    shift[:3, 3] = meta["net_box_start"]  # the box's first voxel in the native input
    check_close("merlin network input affine", torch.as_tensor(affine_of(x)),
                tensors["input_affine"].double() @ torch.as_tensor(shift), meta["tolerance"]["affine"])


def test_embedding_and_tokens_match_reference(reference, encoder, image) -> None:
    """The 2048-d mean of layer4 and every layer4 token, in the adapter's (C, X', Y', Z') layout
    against the network's depth-first (C, Z', X', Y')."""
    tensors, meta = reference
    feats = encoder.encode(image)
    check_close("merlin embedding", torch.as_tensor(feats.embedding), tensors["embedding"],
                meta["tolerance"]["embedding"])
    check_close("merlin layer4 tokens", torch.as_tensor(feats.tokens.astype(np.float32)),
                tensors["tokens"].permute(0, 2, 3, 1), meta["tolerance"]["tokens"])


def test_card_states_this_fixture(reference) -> None:
    """The card's parity facts are those of the fixture the suite checks."""
    _, meta = reference
    facts = CARD.parity
    assert facts is not None and facts.fixture == "merlin"
    assert (facts.reference_version, facts.checked) == (meta["reference_version"], meta["date"])
    assert facts.tolerance == meta["tolerance"]["embedding"] and facts.measured <= facts.tolerance
