"""Content-addressed feature cache: one safetensors file per (model, weights, preprocessing,
precision, case).

Files are written atomically, so a killed extraction leaves only complete entries and a re-run
extracts just what is missing. Token grids are read memory-mapped (zero-copy, read-only), so
dense tasks over many cases hold only the pages they touch. The case part of the key is the sha256 of the image's bytes
(of every file, for a DICOM folder), so renaming or moving a file does not invalidate features.

An entry is checked before it is trusted (:meth:`FeatureCache.recover`, checks in
:mod:`ctbench.cache_check`): a damaged file (cut short, overwritten) is moved aside as
``<name>.corrupt-<UTC time>`` in its folder, never deleted, with a warning naming it, and the
case is extracted again; valid entries are never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .cache_check import CorruptEntry, check_entry
from .errors import CTBenchError
from .paths import home
from .types import Features

log = logging.getLogger("ctbench")
CORRUPT_SUFFIX = ".corrupt-"


def content_hash(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, or of a folder's files (names and bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


_NP_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": None}


def map_tensor(path: Path, name: str) -> np.ndarray:
    """Read-only, zero-copy numpy view of tensor ``name`` in a safetensors file.

    The file is mapped with ``torch.UntypedStorage.from_file`` (private mapping, pages read on
    first touch), which closes its file descriptor at once: thousands of cached cases can be
    mapped without running out of descriptors, unlike ``np.memmap``.
    """
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        info = json.loads(fh.read(n))[name]
    dtype = _NP_DTYPES.get(info["dtype"])
    if dtype is None:
        raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    begin, end = (8 + n + int(o) for o in info["data_offsets"])
    shape = tuple(int(d) for d in info["shape"])
    if end == begin:
        return np.zeros(shape, dtype=dtype)
    size = Path(path).stat().st_size
    raw = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage.from_file(str(path), False, size))
    arr = raw[begin:end].numpy().view(dtype).reshape(shape)  # the array keeps the mapping alive
    arr.flags.writeable = False
    return arr


class FeatureCache:
    """Feature files of one (model, weights, preprocessing, precision) key under ``root``.

    ``precision`` (``fp32``/``bf16``, the encoder's forward precision) is part of the folder
    name and of every entry's metadata; ``None`` (an adapter that declares none) leaves both as
    they were before precision was recorded."""

    def __init__(self, model: str, weights_sha256: str, preprocessing_id: str, root: Path | None = None,
                 precision: str | None = None):
        self.model = model
        self.weights = weights_sha256
        self.preprocessing = preprocessing_id
        self.precision = precision
        tag = f"{weights_sha256[:16]}-{preprocessing_id}" + (f"-{precision}" if precision else "")
        self.dir = Path(root or home() / "features") / model / tag

    @classmethod
    def for_encoder(cls, encoder, model: str, root: Path | None = None) -> "FeatureCache":
        """The cache of ``encoder``'s features: its weights sha256, preprocessing id and precision."""
        return cls(model, encoder.weights_ref.sha256, encoder.preprocessing_id, root,
                   getattr(encoder, "precision", None))

    def path(self, case_key: str) -> Path:
        return self.dir / case_key[:2] / f"{case_key}.safetensors"

    def has(self, case_key: str) -> bool:
        return self.path(case_key).is_file()

    def put(self, case_key: str, feats: Features, meta: dict[str, str] | None = None) -> Path:
        """Store ``feats`` atomically and return the file path."""
        tensors = {"embedding": torch.from_numpy(np.ascontiguousarray(feats.embedding))}
        if feats.tokens is not None:
            tensors["tokens"] = torch.from_numpy(np.ascontiguousarray(feats.tokens))
            tensors["token_affine"] = torch.from_numpy(np.ascontiguousarray(feats.token_affine))
        info = {**self._expected(), **(meta or {})}
        target = self.path(case_key)
        with atomic_path(target) as tmp:
            # one metadata key holding sorted JSON: byte-identical files whichever process writes
            save_file(tensors, str(tmp), metadata={"ctbench": json.dumps(info, sort_keys=True)})
        return target

    def _expected(self) -> dict[str, str]:
        out = {"model": self.model, "weights": self.weights, "preprocessing": self.preprocessing}
        if self.precision:
            out["precision"] = self.precision
        return out

    def problem(self, case_key: str) -> str | None:
        """Why the entry of ``case_key`` cannot be trusted, or ``None`` when it is sound or absent."""
        try:
            with open(self.path(case_key), "rb") as fh:
                check_entry(fh, self._expected())
        except FileNotFoundError:
            return None
        except CorruptEntry as e:
            return str(e)
        return None

    def recover(self, case_key: str) -> Path | None:
        """Check the entry of ``case_key``; a damaged one is moved aside (warning naming both
        paths) so the case is extracted again. Returns where it went, else ``None``.

        The file is checked through one open handle and moved only while the path still names
        that same file, so an entry another process just rewrote is left alone."""
        path = self.path(case_key)
        try:
            with open(path, "rb") as fh:
                try:
                    check_entry(fh, self._expected())
                    return None
                except CorruptEntry as e:
                    reason, checked = str(e), os.fstat(fh.fileno())
        except FileNotFoundError:
            return None
        try:
            now = path.stat()
        except FileNotFoundError:
            return None  # another process moved it first
        if (now.st_ino, now.st_dev) != (checked.st_ino, checked.st_dev):
            return None  # replaced meanwhile by a fresh write
        dest = self.quarantine(path, reason)
        if dest is not None:
            log.warning(f"warning: cached features {path} are damaged: {reason}. Moved aside to {dest}; "
                        "the case is re-extracted")
        return dest

    @staticmethod
    def quarantine(path: Path, reason: str) -> Path | None:
        """Move the damaged ``path`` (``reason``) to ``<name>.corrupt-<UTC time>`` beside it,
        never over an existing file; ``None`` when it was already gone."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for n in range(1000):
            dest = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}" + (f"-{n}" if n else ""))
            if not dest.exists():
                break
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CTBenchError(f"cached features {path} are damaged ({reason}) and cannot be moved aside "
                               f"({e.strerror}); delete that file, or make its folder writable") from None
        return dest

    def get(self, case_key: str, tokens: bool = True) -> Features:
        """Load a cached entry; tokens only when asked for, as a read-only memory-mapped view
        of the file (no copy: the OS pages them in when a task touches them). An entry that
        cannot be read is a ``CTBenchError`` naming the file; a damaged one is moved aside first,
        so running the command again re-extracts it."""
        path = self.path(case_key)
        try:
            return self._load(path, tokens)
        except (OSError, ValueError, KeyError, SafetensorError) as e:
            if isinstance(e, (FileNotFoundError, PermissionError)):
                raise CTBenchError(f"cannot read cached features {path}: {e}") from None
            reason = self.problem(case_key) or f"{type(e).__name__}: {e}"
            moved = self.quarantine(path, reason)
            raise CTBenchError(f"cached features {path} are damaged: {reason}. Moved aside to {moved}; "
                               "run the command again to re-extract the case") from None

    @staticmethod
    def _load(path: Path, tokens: bool) -> Features:
        with safe_open(str(path), framework="np") as f:
            has_tokens = tokens and "tokens" in set(f.keys())
            emb = f.get_tensor("embedding")
            aff = f.get_tensor("token_affine") if has_tokens else None
        toks = map_tensor(path, "tokens") if has_tokens else None
        return Features(embedding=emb, tokens=toks, token_affine=aff)
