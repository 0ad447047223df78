"""Strict loading of VoxelFM backbone weights from the checkpoint layouts the reference writes.

Accepted layouts (read tensor-only through ``ctbench.weights.load_state_dict``):
- the teacher export ``{"teacher": sd}`` (``eval/<iter>/teacher_checkpoint.pth``, the released
  file), keys ``backbone.*`` next to ``dino_head.*`` / ``ibot_head.*``;
- a training checkpoint ``{"model": sd, "optimizer": ..., "iteration": ...}`` whose ``sd`` holds
  ``student.*`` and ``teacher.*`` (the teacher is used);
- ``{"state_dict": sd}`` or a plain backbone state_dict.
``module`` path components (DDP wrappers) and the ``backbone.`` prefix are stripped and head keys
dropped; the rest must match the model exactly (``strict=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ctbench.errors import CTBenchError
from ctbench.weights import load_state_dict

from .config import VoxelFMConfig
from .model import VoxelFM

__all__ = ["extract_backbone_state", "load_backbone_state", "config_beside", "load_model"]

HEAD_PREFIXES = ("dino_head.", "ibot_head.")
_SHOW = 5


def _strip_module(key: str) -> str:
    return ".".join(part for part in key.split(".") if part != "module")


def extract_backbone_state(obj: Mapping, source: str = "checkpoint") -> dict:
    """Backbone state_dict out of any accepted checkpoint layout (see the module docstring)."""
    if not isinstance(obj, Mapping):
        raise CTBenchError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    for wrapper in ("teacher", "model", "state_dict"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    sd = {_strip_module(k): v for k, v in obj.items()}
    if any(k.startswith("teacher.") for k in sd):  # full training checkpoint: use the teacher
        sd = {k[len("teacher."):]: v for k, v in sd.items() if k.startswith("teacher.")}
    sd = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith(HEAD_PREFIXES)}


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > _SHOW else ''})"


def load_backbone_state(model: VoxelFM, path: str | Path) -> dict:
    """Load the backbone weights in ``path`` into ``model`` strictly.

    Any missing, unexpected or wrongly shaped key raises ``CTBenchError`` naming the keys.
    A model built on the ``meta`` device (no wasted random init) gets the loaded tensors
    assigned, cast to the model's dtypes. Returns the state_dict that was loaded."""
    import torch

    path = Path(path)
    sd = extract_backbone_state(load_state_dict(path), source=str(path))
    bad = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected) - set(bad))
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(sd) & set(expected))
        if k not in bad and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"wrongly shaped keys: {_listing(shapes)}")
    if bad:
        problems.append(f"non-tensor entries: {_listing(bad)}")
    if problems:
        raise CTBenchError(
            f"{path}: not a VoxelFM backbone checkpoint for this config "
            f"(embed_dim {model.config.embed_dim}, depth {model.config.depth}, registers "
            f"{model.config.num_register_tokens}): " + "; ".join(problems)
            + ". Pass the released teacher checkpoint (vitb_3d/checkpoints/99999.pth) or a "
            "state_dict of the same architecture"
        )
    if any(t.is_meta for t in expected.values()):
        sd = {k: v.to(expected[k].dtype) for k, v in sd.items()}
        model.load_state_dict(sd, strict=True, assign=True)
    else:
        model.load_state_dict(sd, strict=True)
    return sd


def config_beside(path: str | Path, default: VoxelFMConfig | None = None) -> VoxelFMConfig | None:
    """Config from a ``config.yaml`` next to the weights file or one folder up (the hub layout is
    ``vitb_3d/config.yaml`` + ``vitb_3d/checkpoints/99999.pth``); ``default`` when none.
    Only a YAML with a ``student`` section (the reference training config) is used."""
    import yaml

    path = Path(path)
    folders = [path.parent] + ([path.parent.parent] if path.parent.name == "checkpoints" else [])
    for folder in folders:
        candidate = folder / "config.yaml"
        if not candidate.is_file():
            continue
        try:
            with open(candidate) as f:
                doc = yaml.safe_load(f)
            if not (isinstance(doc, dict) and isinstance(doc.get("student"), dict)):
                continue
            return VoxelFMConfig.from_yaml(candidate, base=default)
        except (ValueError, TypeError, OSError, yaml.YAMLError) as e:
            raise CTBenchError(f"{candidate}: cannot be read as a VoxelFM config ({e})") from None
    return default


def load_model(path: str | Path, config: VoxelFMConfig | None = None) -> VoxelFM:
    """Build the backbone (config from a ``config.yaml`` beside the file when present, else
    ``config`` or the official defaults), load the weights strictly and put it in eval mode."""
    import torch

    cfg = config_beside(path, default=config or VoxelFMConfig())
    with torch.device("meta"):
        model = VoxelFM(cfg)
    load_backbone_state(model, path)
    return model.eval()
