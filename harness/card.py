"""``ModelCard``: validated metadata of a registered model, shown by ``ctbench models`` and
written into every result file."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class InputSpec(BaseModel):
    """How the model's own preprocessing turns a canonical volume into its input tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    orientation: str = Field(description="axis codes the model expects, or 'native' for none")
    spacing_mm: tuple[float, float, float] | str = Field(
        description="target voxel spacing, or a rule such as 'isotropic max(min spacing, 0.75)'"
    )
    hu_window: tuple[float, float] | None = None
    intensity: str = Field(description="how clipped HU become network input values")
    spatial_size: tuple[int, int, int] | str = Field(description="native input size or rule")
    axis_order: str = Field(description="tensor layout the network sees, e.g. '(B, D, H, W)'")


class WeightsSpec(BaseModel):
    """Where official weights live and how to check them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_repo: str | None = None
    hub_repo_type: Literal["model", "dataset"] = "model"
    filename: str | None = None
    revision: str | None = None
    sha256: str | None = None
    #: "none": the model has no weights at all (a deterministic baseline); no file is ever read
    format: Literal["torch", "safetensors", "bin", "none"] = "torch"

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
            raise ValueError("sha256 must be 64 lowercase hex characters")
        return v

    @model_validator(mode="after")
    def _nothing_to_fetch(self) -> "WeightsSpec":
        if self.format == "none" and (self.hub_repo or self.filename or self.sha256):
            raise ValueError("format 'none' (a model without weights) names no hub repo, file or sha256")
        return self


class ParityFacts(BaseModel):
    """How the adapter was proven equal to the official implementation: a fixture of the official
    code's outputs on key-seeded weights (``tests/parity``) that the suite compares against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(description="official repository or package the fixture was made with")
    reference_version: str = Field(description="its commit sha or package version")
    fixture: str = Field(description="fixture name under tests/parity/fixtures")
    tolerance: float = Field(gt=0, description="relative tolerance the suite enforces (max abs diff / max abs)")
    measured: float = Field(ge=0, description="relative difference measured when the fixture was made")
    checked: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="date the fixture was made")
    scope: str = Field(description="what is compared, e.g. 'preprocessing + embedding + tokens'")


class ModelCard(BaseModel):
    """Validated, serialisable description of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    title: str
    citation: str
    licence: str
    architecture: str
    parameters: int = Field(ge=0, description="parameter count of the image encoder")
    embedding_dim: int = Field(gt=0)
    token_dim: int | None = Field(default=None, gt=0)
    supervision: Literal["self-supervised", "language", "supervised", "none"]
    pretraining_datasets: tuple[str, ...] = Field(
        default=(),
        description="public names of the datasets or collections (e.g. 'CT-RATE', 'IDC', 'TCIA') the "
                    "weights were pre-trained on; leaderboards flag a task whose dataset or one of its "
                    "source collections is among them (names compared case- and punctuation-blind)",
    )
    input: InputSpec
    weights: WeightsSpec = WeightsSpec()
    parity: ParityFacts | None = Field(
        default=None, description="reference-parity facts; None for a model not checked against official code"
    )
    group: Literal["paper", "newer", "baseline", "other"] = Field(
        default="other",
        description="where `ctbench models` lists it: the VoxelFM paper's five, newer open models, baselines "
                    "and references, or other (plugins)",
    )
    weights_access: Literal["public", "gated", "none"] = Field(
        default="public",
        description="public: downloadable by anyone; gated: the hub asks for an access request or terms first; "
                    "none: the model has no weights (a baseline)",
    )
    non_commercial: bool = Field(default=False, description="the weights' licence forbids commercial use")
    seed_conditioned: bool = Field(
        default=False,
        description="features are computed around a per-case seed point read from the manifest (ctbench.seeds): "
                    "the model is told where to look, which boards should say",
    )

    @model_validator(mode="after")
    def _access_matches_weights(self) -> "ModelCard":
        if (self.weights.format == "none") != (self.weights_access == "none"):
            raise ValueError("weights_access is 'none' exactly when the model has no weights (weights.format 'none')")
        return self

    def access_text(self) -> str:
        """Weights access in a few words: "public", "gated, non-commercial", "no weights"."""
        if self.weights_access == "none":
            return "no weights"
        return self.weights_access + (", non-commercial" if self.non_commercial else "")

    def preprocessing_hash(self, extra: dict | None = None) -> str:
        """Short hash of the input specification (plus adapter-specific settings) for cache keys."""
        payload = {"input": self.input.model_dump(mode="json"), "extra": extra or {}}
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
