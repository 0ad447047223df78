"""Content-addressed feature cache: one safetensors file per (model, weights, preprocessing, case).

Files are written atomically, so a killed extraction leaves only complete entries and a re-run
extracts just what is missing. The case part of the key is the sha256 of the image's bytes
(of every file, for a DICOM folder), so renaming or moving a file does not invalidate features.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .paths import home
from .types import Features


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


class FeatureCache:
    """Feature files of one (model, weights, preprocessing) triple under ``root``."""

    def __init__(self, model: str, weights_sha256: str, preprocessing_id: str, root: Path | None = None):
        self.model = model
        self.weights = weights_sha256
        self.preprocessing = preprocessing_id
        tag = f"{weights_sha256[:16]}-{preprocessing_id}"
        self.dir = Path(root or home() / "features") / model / tag

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
        info = {"model": self.model, "weights": self.weights, "preprocessing": self.preprocessing}
        info.update(meta or {})
        target = self.path(case_key)
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in info.items()})
        return target

    def get(self, case_key: str, tokens: bool = True) -> Features:
        """Load a cached entry; tokens are read lazily only when asked for."""
        with safe_open(str(self.path(case_key)), framework="np") as f:
            keys = set(f.keys())
            emb = f.get_tensor("embedding")
            toks = f.get_tensor("tokens") if tokens and "tokens" in keys else None
            aff = f.get_tensor("token_affine") if toks is not None else None
        return Features(embedding=emb, tokens=toks, token_affine=aff)
