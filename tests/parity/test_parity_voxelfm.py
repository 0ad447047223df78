"""VoxelFM against the official code (rmaguado/VoxelFM), through the path a user takes.

The fixture (``make_voxelfm.py``) holds what the reference computes on key-seeded weights for
the synthetic oblique volume. Here the same weights are written in the released layout
(``vitb_3d/checkpoints/99999.pth`` = ``{"teacher": {"backbone.*", head keys}}`` with the
reference's ``config.yaml`` one folder up), the adapter is built from the registry with that
file, the volume is written as NIfTI and read by ctbench's reader, and the network input, the
CLS embedding and every patch token must match the reference within the fixture's tolerances.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from ctbench.adapters.voxelfm import CARD
from ctbench.readers import read_volume
from ctbench.registry import MODELS
from tests.parity.parity_io import check_close, read_fixture, seeded_state_dict, synthetic_volume, write_nifti


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], dict]:
    return read_fixture("voxelfm")


@pytest.fixture(scope="module")
def encoded(reference, tmp_path_factory: pytest.TempPathFactory):
    """(adapter, its network input, its features) for the fixture's weights and volume."""
    _, meta = reference
    root = tmp_path_factory.mktemp("voxelfm") / "vitb_3d"
    (root / "checkpoints").mkdir(parents=True)
    # the reference's training config beside the weights, as released: it sets the architecture
    (root / "config.yaml").write_text(yaml.safe_dump({"student": meta["student"], "datasets": meta["datasets"]}))
    layout = meta["checkpoint_layout"]
    state = seeded_state_dict(meta["keys"]) | {k: torch.zeros(4) for k in layout["extra_keys"]}
    ckpt = root / "checkpoints" / "99999.pth"
    torch.save({layout["wrapper"]: state}, ckpt)

    volume, affine = synthetic_volume(spacing=tuple(meta["volume"]["spacing"]))
    image = read_volume(write_nifti(root.parent / "ct.nii.gz", volume, affine))
    encoder = MODELS.get("voxelfm")(weights=str(ckpt), device="cpu")
    return encoder, encoder.preprocess(image), encoder.encode(image)


def test_config_beside_the_weights_sets_the_architecture(reference, encoded) -> None:
    _, meta = reference
    encoder, _, feats = encoded
    assert encoder.config.embed_dim == meta["student"]["embed_dim"] == feats.embedding.shape[0]
    assert encoder.config.depth == meta["student"]["depth"]


def test_network_input_matches_reference(reference, encoded) -> None:
    tensors, meta = reference
    _, x, _ = encoded
    check_close("voxelfm network input", x.as_tensor(), tensors["input"], meta["tolerance"]["input"])


def test_embedding_matches_reference(reference, encoded) -> None:
    tensors, meta = reference
    _, _, feats = encoded
    check_close("voxelfm CLS embedding", torch.as_tensor(feats.embedding), tensors["embedding"],
                meta["tolerance"]["embedding"])


def test_tokens_match_reference(reference, encoded) -> None:
    """Every patch token, in the adapter's (C, d, h, w) layout against the reference's (d, h, w, C)."""
    tensors, meta = reference
    _, _, feats = encoded
    want = tensors["tokens"].permute(3, 0, 1, 2)
    got = torch.as_tensor(feats.tokens.astype("float32"))
    check_close("voxelfm patch tokens", got, want, meta["tolerance"]["tokens"])


def test_card_states_this_fixture(reference) -> None:
    """The card's parity facts are those of the fixture the suite checks."""
    _, meta = reference
    facts = CARD.parity
    assert facts is not None and facts.fixture == "voxelfm"
    assert (facts.reference_version, facts.checked) == (meta["reference_version"], meta["date"])
    assert facts.tolerance == meta["tolerance"]["embedding"] and facts.measured <= facts.tolerance
