"""The phantom's ground-truth sidecar, ``truth.json``: what the ``oracle`` encoder returns.

The generator knows every quantity it painted (findings, volumes, the survival risk, lesion
spheres in world mm) and writes them per scan beside the manifest, with each scan's image and
mask paths, voxel grid shape and affine. :func:`read_truth` parses the file as untrusted input:
size-capped JSON validated field by field (finite numbers, phantom-shaped case ids, paths that are
exactly ``images/<case>.nii.gz`` and ``masks/<case>.nii.gz``), so a crafted file can neither
point the oracle outside its dataset folder nor feed it values it cannot use.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import CTBenchError

TRUTH_FILE = "truth.json"
TRUTH_FORMAT = 1
MAX_TRUTH_BYTES = 64 << 20
CASE_PATTERN = r"^P\d{4,6}-s[12]$"  # phantom case ids: patient number, scan 1 or 2
FINDING_KINDS = ("lung_nodule", "liver_lesion", "kidney_cyst")


class LesionTruth(BaseModel):
    """One painted lesion: kind, centre in world RAS mm (this scan), radius in mm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(pattern=r"^(lung_nodule|liver_lesion|kidney_cyst)$")
    centre: tuple[float, float, float]
    radius: float = Field(gt=0, le=100)


class CaseTruth(BaseModel):
    """Every ground-truth quantity of one scan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str
    mask: str
    shape: tuple[int, int, int]
    affine: tuple[tuple[float, float, float, float], ...] = Field(min_length=4, max_length=4)
    findings: dict[str, int]
    contrast: int = Field(ge=0, le=1)
    liver_volume_ml: float = Field(ge=0)
    lesion_burden_ml: float = Field(ge=0)
    effusion_mm: tuple[float, float] = Field(description="fluid depth right, left (0: none)")
    risk: float = Field(description="the survival model's linear predictor (log hazard ratio)")
    lesions: tuple[LesionTruth, ...] = ()

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 1 <= n <= 4096 for n in v):
            raise ValueError("every grid size must be 1-4096")
        return v

    @model_validator(mode="after")
    def _finite(self) -> "CaseTruth":
        numbers = {"liver_volume_ml": [self.liver_volume_ml], "lesion_burden_ml": [self.lesion_burden_ml],
                   "risk": [self.risk], "effusion_mm": self.effusion_mm,
                   "affine": [v for row in self.affine for v in row],
                   "lesions": [v for les in self.lesions for v in (*les.centre, les.radius)]}
        for name, values in numbers.items():
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name}: every number must be finite")
        if set(self.findings) != {"lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion"} or any(
                v not in (0, 1) for v in self.findings.values()):
            raise ValueError("findings must give 0 or 1 for each of the four phantom findings")
        return self

    @property
    def largest(self) -> LesionTruth | None:
        """The largest lesion (the localisation target), if any."""
        return max(self.lesions, key=lambda les: les.radius, default=None)


class Truth(BaseModel):
    """``truth.json``: format, phantom version and the truth of every scan by case id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int
    phantom_version: str = Field(pattern=r"^[0-9A-Za-z.]{1,16}$")
    cases: dict[str, CaseTruth]

    @model_validator(mode="after")
    def _names(self) -> "Truth":
        import re

        for case, t in self.cases.items():
            if not re.match(CASE_PATTERN, case):
                raise ValueError(f"case id {case!r} is not a phantom case id (P<number>-s<1|2>)")
            if t.image != f"images/{case}.nii.gz" or t.mask != f"masks/{case}.nii.gz":
                raise ValueError(f"case {case!r}: image and mask must be images/{case}.nii.gz and "
                                 f"masks/{case}.nii.gz")
        return self


def write_truth(folder: Path, phantom_version: str, cases: dict[str, CaseTruth]) -> Path:
    """Write ``truth.json`` into ``folder`` atomically (sorted keys: same seed, same bytes)."""
    from .atomic import atomic_write_text

    truth = Truth(format=TRUTH_FORMAT, phantom_version=phantom_version, cases=cases)
    path = Path(folder) / TRUTH_FILE
    atomic_write_text(path, truth.model_dump_json(indent=None))
    return path


def read_truth(path: Path) -> Truth:
    """Parse and validate a ``truth.json``; any problem is one CTBenchError naming the file."""
    from .readers import require_regular

    require_regular(path)
    size = path.stat().st_size
    if size > MAX_TRUTH_BYTES:
        raise CTBenchError(f"{path}: {size} bytes, more than a phantom's truth file holds "
                           f"({MAX_TRUTH_BYTES} at most); regenerate the phantom")
    try:
        truth = Truth.model_validate_json(path.read_bytes())
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the file"
        raise CTBenchError(f"{path}: not a valid phantom truth file ({where}: "
                           f"{first['msg'].removeprefix('Value error, ')}); regenerate the phantom "
                           f"(ctbench datasets phantom --out DIR)") from None
    if truth.format != TRUTH_FORMAT:
        raise CTBenchError(f"{path}: truth format {truth.format}, this ctbench reads format {TRUTH_FORMAT}; "
                           f"regenerate the phantom with this version of ctbench")
    return truth
