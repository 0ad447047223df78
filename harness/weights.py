"""Weights resolution for ``--weights auto|random|PATH`` and safe checkpoint reading.

``PATH`` loads that file; ``auto`` looks in ``$CTBENCH_HOME/weights`` then the hub, at the
card's pinned revision when it has one, else at the revision the first pull locked
(:mod:`ctbench.weights_lock`); the sha256 is checked against the card's (when it pins one) and
against the lock; ``random`` is an explicit, seeded random-initialisation control.
Nothing is ever unpickled beyond tensors: ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .card import ModelCard
from .errors import CTBenchError
from .paths import home
from .weights_lock import locked, record, verify

RANDOM = "random"
NONE = "none"  # the sha256 field of a model that has no weights (card weights format "none")
RANDOM_SEED = 0


@dataclass(frozen=True)
class WeightsRef:
    """A resolved weights choice: a file and its sha256, the random control, or no weights at
    all (a deterministic baseline: nothing was learned, nothing is random)."""

    path: Path | None
    sha256: str  # hex digest, "random", or "none"
    revision: str | None = None  # hub commit of a pulled file (from the lock), else None

    @property
    def is_random(self) -> bool:
        return self.path is None and self.sha256 != NONE

    @property
    def is_none(self) -> bool:
        """The model has no weights (card weights format ``none``)."""
        return self.path is None and self.sha256 == NONE

    @property
    def tag(self) -> str:
        """Result-folder name: ``random``, ``none`` or the first 12 hex digits of the sha256."""
        return RANDOM if self.is_random else self.sha256[:12]


NO_WEIGHTS = WeightsRef(None, NONE)


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
    """Turn ``auto|random|PATH`` into a ``WeightsRef`` or a clear, actionable error.

    A model without weights (card weights format ``none``) resolves ``auto`` and ``random`` to
    :data:`NO_WEIGHTS` (its features depend on neither) and refuses a file."""
    choice = str(choice)
    if card.weights.format == NONE:
        if choice in ("auto", RANDOM, NONE):
            return NO_WEIGHTS
        raise CTBenchError(
            f"{card.name!r} has no weights (a deterministic baseline with no learned parameters), so "
            f"--weights {choice} cannot be used; leave --weights out (auto)"
        )
    if choice == RANDOM:
        return WeightsRef(None, RANDOM)
    if choice != "auto":
        path = Path(choice).expanduser()
        if not path.is_file():
            raise CTBenchError(f"weights file {path} does not exist; pass an existing file")
        if path.suffix == ".safetensors":
            _check_safetensors(path)  # a bad file fails before any network is built
        return WeightsRef(path, sha256_file(path))
    local = cached_weights_path(card)
    if local is not None and local.is_file():
        digest = _checked(local, card)
        entry = verify(card, local, digest)  # a file changed since it was pulled is refused
        if entry is None and card.weights.hub_repo:  # put there by hand: lock what is used from now on
            with contextlib.suppress(OSError):  # a read-only weights folder still works, unlocked
                entry = record(card, card.weights.revision, digest)
        return WeightsRef(local, digest, entry.revision if entry else card.weights.revision)
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
            f"{path}: sha256 {digest} does not match the card's {card.weights.sha256}; run "
            f"`ctbench weights pull {card.name} --force` to download it again"
        )
    return digest


#: exception names (anywhere in the cause chain) meaning "the hub cannot be reached"
_NO_NETWORK = {"ConnectError", "ConnectTimeout", "ConnectionError", "NetworkError", "TimeoutException",
               "ReadTimeout", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "gaierror", "timeout",
               "TimeoutError", "ConnectionRefusedError", "ConnectionResetError", "MaxRetryError"}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _is_connection_error(e: BaseException | None) -> bool:
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror)) or type(e).__name__ in _NO_NETWORK:
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _offline_error(card: ModelCard, why: str) -> CTBenchError:
    target = cached_weights_path(card)
    return CTBenchError(
        f"cannot download weights for {card.name!r} from {card.weights.hub_repo} ({why}). Put "
        f"{card.weights.filename} at {target} (e.g. run `ctbench weights pull {card.name}` on a machine "
        f"with network and copy it there), or pass --weights PATH, or use --weights random"
    )


def _fetch(card: ModelCard, revision: str | None) -> tuple[str, str | None]:
    """Download the card's file at ``revision`` (``None``: the hub's ``main``); returns (path,
    the commit sha the hub resolved). One metadata request first, without retries, so that no
    network fails in seconds instead of after the hub client's retry loop; the download then
    asks for that exact commit, so the file and the recorded revision agree."""
    import huggingface_hub as hub

    spec = card.weights
    url = hub.hf_hub_url(spec.hub_repo, spec.filename, repo_type=spec.hub_repo_type, revision=revision)
    meta = hub.get_hf_file_metadata(url, timeout=10)
    commit = getattr(meta, "commit_hash", None) or revision
    path = hub.hf_hub_download(repo_id=spec.hub_repo, filename=spec.filename, revision=commit,
                               repo_type=spec.hub_repo_type, local_dir=home() / "weights" / card.name)
    return path, commit


def download_weights(card: ModelCard) -> WeightsRef:
    """Fetch the card's file from the hub into the local cache, at the card's pinned revision,
    else the locked one, else ``main``; the resolved commit and sha256 are checked against the
    lock (a first pull records them).

    ``HF_HUB_OFFLINE=1`` is honoured before any network call, and the first connection error
    fails at once; both errors name the local path where the file can be put instead."""
    if hub_offline():
        raise _offline_error(card, "HF_HUB_OFFLINE is set")
    entry = locked(card)
    revision = card.weights.revision or (entry.revision if entry else None)
    try:
        got, commit = _fetch(card, revision)
    except Exception as e:  # network, auth, missing file: all user-fixable
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if _is_connection_error(e):
            raise _offline_error(card, f"no connection: {reason}") from None
        raise CTBenchError(
            f"could not download weights for {card.name!r} from {card.weights.hub_repo} "
            f"({reason}). Download {card.weights.filename} yourself and pass --weights PATH, or put it "
            f"at {cached_weights_path(card)}, or use --weights random"
        ) from None
    target = cached_weights_path(card)
    assert target is not None
    got_path = Path(got)
    if got_path != target:
        target.parent.mkdir(parents=True, exist_ok=True)
        got_path.replace(target)
    digest = _checked(target, card)
    if verify(card, target, digest) is None:
        record(card, commit, digest)
    return WeightsRef(target, digest, commit)


def load_state_dict(path: Path) -> dict:
    """Read tensors from a checkpoint without unpickling arbitrary objects."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # a pickle, garbage or a truncated file under that name
            raise _not_safetensors(path, e) from None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CTBenchError(
            f"{path}: cannot be read as a tensor-only checkpoint ({type(e).__name__}); "
            f"ctbench never unpickles arbitrary objects - convert it to safetensors"
        ) from None


def _check_safetensors(path: Path) -> None:
    """Read the header of a ``.safetensors`` file (not its tensors), or raise a clear error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            f.keys()
    except Exception as e:
        raise _not_safetensors(path, e) from None


def _not_safetensors(path: Path, e: BaseException) -> CTBenchError:
    return CTBenchError(
        f"{path}: not a readable safetensors file ({type(e).__name__}: {_first_line(e)}); pass the "
        f"checkpoint in its real format (a PyTorch state_dict file needs a .pt/.pth suffix) or "
        f"re-export it with safetensors.torch.save_file"
    )


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else "no detail"


@contextlib.contextmanager
def seeded_init(seed: int = RANDOM_SEED) -> Iterator[None]:
    """Build modules under a fixed seed so ``--weights random`` is reproducible, without
    disturbing the caller's global RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
