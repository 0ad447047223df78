"""Weights resolution for ``--weights auto|random|PATH`` and safe checkpoint reading.

``PATH`` loads that file; ``auto`` looks in ``$CTBENCH_HOME/weights`` then the hub (pinned
revision, sha256 checked); ``random`` is an explicit, seeded random-initialisation control.
Nothing is ever unpickled beyond tensors: ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .card import ModelCard
from .errors import CTBenchError
from .paths import home

RANDOM = "random"
RANDOM_SEED = 0


@dataclass(frozen=True)
class WeightsRef:
    """A resolved weights choice: a file and its sha256, or the random control."""

    path: Path | None
    sha256: str  # hex digest, or "random"

    @property
    def is_random(self) -> bool:
        return self.path is None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_weights_path(card: ModelCard) -> Path | None:
    """Where ``ctbench weights pull`` stores this model's file, if the card names one."""
    if not card.weights.filename:
        return None
    return home() / "weights" / card.name / Path(card.weights.filename).name


def resolve_weights(card: ModelCard, choice: str | Path) -> WeightsRef:
    """Turn ``auto|random|PATH`` into a ``WeightsRef`` or a clear, actionable error."""
    choice = str(choice)
    if choice == RANDOM:
        return WeightsRef(None, RANDOM)
    if choice != "auto":
        path = Path(choice).expanduser()
        if not path.is_file():
            raise CTBenchError(f"weights file {path} does not exist; pass an existing file")
        return WeightsRef(path, sha256_file(path))
    local = cached_weights_path(card)
    if local is not None and local.is_file():
        return WeightsRef(local, _checked(local, card))
    if card.weights.hub_repo and card.weights.filename:
        return download_weights(card)
    raise CTBenchError(
        f"no weights found for {card.name!r}: none in {home() / 'weights' / card.name} and the "
        f"card names no hub file. Pass --weights PATH to a checkpoint, or --weights random for "
        f"the random-initialisation control"
    )


def _checked(path: Path, card: ModelCard) -> str:
    digest = sha256_file(path)
    if card.weights.sha256 and digest != card.weights.sha256:
        raise CTBenchError(
            f"{path}: sha256 {digest[:12]}... does not match the card's {card.weights.sha256[:12]}...;"
            f" delete the file and run `ctbench weights pull {card.name}` again"
        )
    return digest


def download_weights(card: ModelCard) -> WeightsRef:
    """Fetch the card's file from the hub at its pinned revision into the local cache."""
    try:
        from huggingface_hub import hf_hub_download

        got = hf_hub_download(
            repo_id=card.weights.hub_repo,
            filename=card.weights.filename,
            revision=card.weights.revision,
            repo_type=card.weights.hub_repo_type,
            local_dir=home() / "weights" / card.name,
        )
    except Exception as e:  # network, auth, missing file: all user-fixable
        raise CTBenchError(
            f"could not download weights for {card.name!r} from {card.weights.hub_repo} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Download "
            f"{card.weights.filename} yourself and pass --weights PATH, or use --weights random"
        ) from None
    target = cached_weights_path(card)
    assert target is not None
    got_path = Path(got)
    if got_path != target:
        target.parent.mkdir(parents=True, exist_ok=True)
        got_path.replace(target)
    return WeightsRef(target, _checked(target, card))


def load_state_dict(path: Path) -> dict:
    """Read tensors from a checkpoint without unpickling arbitrary objects."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CTBenchError(
            f"{path}: cannot be read as a tensor-only checkpoint ({type(e).__name__}); "
            f"ctbench never unpickles arbitrary objects - convert it to safetensors"
        ) from None


@contextlib.contextmanager
def seeded_init(seed: int = RANDOM_SEED) -> Iterator[None]:
    """Build modules under a fixed seed so ``--weights random`` is reproducible, without
    disturbing the caller's global RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
