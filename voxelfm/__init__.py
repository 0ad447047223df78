"""VoxelFM: the 3D CT ViT backbone of arXiv 2604.04133 (DINO + iBOT + KoLeo self-distillation),
re-implemented for ctbench: model, 3D RoPE, checkpoint loading and inference preprocessing."""

from .checkpoint import config_beside, extract_backbone_state, load_backbone_state, load_model
from .config import PRESETS, VoxelFMConfig
from .model import VoxelFM
from .preprocess import PreprocessConfig, preprocess, token_affine
from .rope import RopeEmbed3D, apply_rope

__all__ = [
    "VoxelFM",
    "VoxelFMConfig",
    "PRESETS",
    "RopeEmbed3D",
    "apply_rope",
    "load_backbone_state",
    "extract_backbone_state",
    "config_beside",
    "load_model",
    "PreprocessConfig",
    "preprocess",
    "token_affine",
]
