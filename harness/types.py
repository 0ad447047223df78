"""Core types shared by every adapter and task: ``Features`` and the ``Encoder`` protocol.

The canonical volume every adapter receives is a MONAI ``MetaTensor`` of shape ``(1, X, Y, Z)``,
float32 Hounsfield units, whose ``affine`` maps voxel index -> world millimetres in RAS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

    from .card import ModelCard


@dataclass
class Features:
    """What ``encode`` returns for one volume.

    embedding: float32 ``(E,)`` global vector (CLS, pooled map, ... as the model card says).
    tokens: optional ``(C, d1, d2, d3)`` dense grid, stored as float16.
    token_affine: optional 4x4 mapping token index -> world mm (RAS); lets dense tasks place
        labels on any model's grid whatever it resampled, reoriented, cropped or padded.
    """

    embedding: np.ndarray
    tokens: np.ndarray | None = None
    token_affine: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
        if self.tokens is not None:
            self.tokens = np.asarray(self.tokens, dtype=np.float16)
            if self.tokens.ndim != 4:
                raise ValueError(f"tokens must be (C, d1, d2, d3), got shape {self.tokens.shape}")
            if self.token_affine is None:
                raise ValueError("tokens need a token_affine (token index -> world mm, RAS)")
        if self.token_affine is not None:
            self.token_affine = np.asarray(self.token_affine, dtype=np.float64)
            if self.token_affine.shape != (4, 4):
                raise ValueError(f"token_affine must be 4x4, got {self.token_affine.shape}")
        if not np.all(np.isfinite(self.embedding)):
            raise ValueError("embedding contains NaN or Inf values")


@runtime_checkable
class Encoder(Protocol):
    """A frozen feature extractor. Preprocessing is its own and happens inside ``encode``."""

    card: "ModelCard"

    def encode(self, volume: "MetaTensor") -> Features:
        """Encode one canonical volume ``(1, X, Y, Z)`` (HU, RAS affine) into ``Features``."""
        ...
