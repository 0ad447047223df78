"""``VoxelFMConfig``: backbone hyper-parameters and the intensity constants that go with them.

Field names follow the reference ``config.yaml`` (section ``student``) so that a config saved
beside released weights maps onto this dataclass key by key; the intensity constants come from
the first entry of its ``datasets`` list (``pixel_range`` and ``norm``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["VoxelFMConfig", "PRESETS"]


@dataclass(frozen=True)
class VoxelFMConfig:
    embed_dim: int = 864
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 14
    num_register_tokens: int = 4
    mlp_ratio: float = 4.0
    layerscale: float | None = 1e-5  # LayerScale init value; None/0 -> no LayerScale
    rope_base: float = 100.0
    norm_eps: float = 1e-5
    drop_path_rate: float = 0.0  # training only (the reference trains with 0.1, uniform)
    drop_path_uniform: bool = True
    # intensity preprocessing: clip HU to [hu_min, hu_max], then (x - norm_mean) / norm_std
    hu_min: float = -1000.0
    hu_max: float = 1900.0
    norm_mean: float = -573.8
    norm_std: float = 461.3

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if self.head_dim % 6:
            raise ValueError(
                f"head_dim {self.head_dim} must be divisible by 6 for the 3-axis interleaved RoPE"
            )
        if self.patch_size < 1 or self.depth < 1 or self.num_register_tokens < 0:
            raise ValueError(f"invalid config {self}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def rope_freqs(self) -> int:
        """Rotation pairs per axis: head_dim = 3 axes x 2 x rope_freqs."""
        return self.head_dim // 6

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def replace(self, **changes: Any) -> "VoxelFMConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str) -> "VoxelFMConfig":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown VoxelFM preset {name!r}; choose one of {sorted(PRESETS)}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, base: "VoxelFMConfig | None" = None) -> "VoxelFMConfig":
        """Read a reference ``config.yaml`` (the full training config saved with the weights).

        Architecture keys are read from ``student``; ``datasets[0].pixel_range.{lower,upper}``
        and ``datasets[0].norm.{mean,std}`` give the intensity constants. Keys that are absent
        keep the values of ``base`` (the official defaults). Variants this backbone does not
        implement (SwiGLU FFN, bias-free layers) raise ``ValueError``.
        """
        import yaml

        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: not a mapping")
        student = doc.get("student", doc)
        if not isinstance(student, dict):
            raise ValueError(f"{path}: 'student' is not a mapping")
        cfg = base or cls()
        changes: dict[str, Any] = {}
        ints = ("embed_dim", "depth", "num_heads", "patch_size", "num_register_tokens")
        for key in ints:
            if student.get(key) is not None:
                changes[key] = int(student[key])
        for key in ("mlp_ratio", "rope_base", "drop_path_rate"):
            if student.get(key) is not None:
                changes[key] = float(student[key])
        if "layerscale" in student:
            ls = student["layerscale"]
            changes["layerscale"] = float(ls) if ls else None
        if student.get("drop_path_uniform") is not None:
            changes["drop_path_uniform"] = bool(student["drop_path_uniform"])
        ffn = student.get("ffn_layer", "mlp")
        if ffn != "mlp":
            raise ValueError(f"{path}: ffn_layer {ffn!r} is not supported (only 'mlp')")
        for key in ("qkv_bias", "proj_bias", "ffn_bias"):
            if student.get(key, True) is not True:
                raise ValueError(f"{path}: {key}={student[key]!r} is not supported (biases are on)")
        datasets = doc.get("datasets")
        if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict):
            ds = datasets[0]
            pr, norm = ds.get("pixel_range") or {}, ds.get("norm") or {}
            for section, key, field in (
                (pr, "lower", "hu_min"),
                (pr, "upper", "hu_max"),
                (norm, "mean", "norm_mean"),
                (norm, "std", "norm_std"),
            ):
                if section.get(key) is not None:
                    changes[field] = float(section[key])
        return cfg.replace(**changes)


PRESETS: dict[str, VoxelFMConfig] = {
    # the released "vitb_3d" backbone
    "base": VoxelFMConfig(),
    # a few-thousand-parameter stand-in for tests: head_dim 24 -> 4 rotation pairs per axis
    "tiny": VoxelFMConfig(embed_dim=48, depth=2, num_heads=2),
}
