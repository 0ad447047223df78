"""The weights lock: which hub revision and sha256 each pulled model file had.

Most cards cannot pin a hub revision (the official repositories name none), so ``--weights
auto`` would otherwise take whatever the hub's ``main`` holds today. The first pull records the
revision it resolved (a commit sha) and the file's sha256 in ``$CTBENCH_HOME/weights/lock.json``;
later resolutions download that same revision and refuse a file whose sha256 differs, naming
the file, both digests and the fix. ``ctbench weights pull NAME --update`` moves the lock on
deliberately. The file is JSON, written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .atomic import atomic_write_text
from .card import ModelCard
from .errors import CTBenchError
from .paths import home

__all__ = ["LOCK_FILE", "LockEntry", "lock_path", "read_lock", "locked", "record", "forget", "verify"]

LOCK_FILE = "lock.json"
LOCK_VERSION = 1


@dataclass(frozen=True)
class LockEntry:
    """One model's pulled file: where it came from, at which revision, with which sha256."""

    hub_repo: str
    filename: str
    revision: str | None  # the commit sha the hub resolved (None if the hub did not say)
    sha256: str
    pulled: str  # UTC time of the pull, ISO 8601


def lock_path() -> Path:
    """``$CTBENCH_HOME/weights/lock.json``."""
    return home() / "weights" / LOCK_FILE


def read_lock() -> dict[str, LockEntry]:
    """Every entry of the lock file (none when there is no file yet); a damaged file is a
    CTBenchError naming it and the fix."""
    path = lock_path()
    try:
        data = json.loads(path.read_text())
        return {name: LockEntry(**entry) for name, entry in data["models"].items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CTBenchError(f"{path} is not a ctbench weights lock ({type(e).__name__}: {e}); delete it and run "
                           f"`ctbench weights pull NAME` again for each model (the files are checked anew)") from None


def _write(entries: dict[str, LockEntry]) -> None:
    blob = {"version": LOCK_VERSION, "models": {n: asdict(e) for n, e in sorted(entries.items())}}
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(blob, indent=2, sort_keys=True) + "\n")


def locked(card: ModelCard) -> LockEntry | None:
    """The lock entry of ``card``'s model, if one was recorded for the file the card names
    (an entry for another repository or file, from an older card, does not count)."""
    entry = read_lock().get(card.name)
    if entry is None or (entry.hub_repo, entry.filename) != (card.weights.hub_repo, card.weights.filename):
        return None
    return entry


def record(card: ModelCard, revision: str | None, sha256: str) -> LockEntry:
    """Record (or replace) ``card``'s entry and write the lock file atomically."""
    entries = read_lock()
    entry = LockEntry(hub_repo=str(card.weights.hub_repo), filename=str(card.weights.filename), revision=revision,
                      sha256=sha256, pulled=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    entries[card.name] = entry
    _write(entries)
    return entry


def forget(name: str) -> bool:
    """Drop model ``name``'s entry (``--update``); True when there was one."""
    entries = read_lock()
    if entries.pop(name, None) is None:
        return False
    _write(entries)
    return True


def verify(card: ModelCard, path: Path, digest: str) -> LockEntry | None:
    """Check the file at ``path`` (sha256 ``digest``) against ``card``'s lock entry; returns the
    entry (``None`` when nothing is locked yet), or raises naming the file, both digests and
    the fix when the file changed since it was pulled."""
    entry = locked(card)
    if entry is None or entry.sha256 == digest:
        return entry
    at = f"revision {entry.revision}" if entry.revision else "an unrecorded revision"
    raise CTBenchError(
        f"{path}: sha256 {digest} differs from {entry.sha256}, recorded in {lock_path()} when "
        f"{card.name!r} was pulled from {entry.hub_repo} at {at}; the file changed since. Run "
        f"`ctbench weights pull {card.name} --force` to download the locked file again, or "
        f"`ctbench weights pull {card.name} --update` to take the hub's current file and lock that"
    )
