"""Pre-training checkpoints (exact resume) and the teacher export in the official layout.

A checkpoint holds tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)``: the model (student, teacher, both centres), the optimizer,
the iteration (the schedules and the data order are functions of it), the config document and
every rank's RNG states (torch CPU/CUDA, numpy, random). The export is
``{"teacher": {"backbone.<key>": ..., "dino_head.<key>": ...}}`` with a reference-style
``config.yaml`` beside it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ctbench.atomic import atomic_path
from ctbench.errors import CTBenchError

__all__ = ["FORMAT", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint", "export_teacher",
           "write_config"]

FORMAT = "ctbench-voxelfm-pretrain/1"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def save_checkpoint(path: Path, *, iteration: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    config: dict, rng: list[dict], world_size: int) -> Path:
    """Write the training state atomically (rank 0 only)."""
    state = {
        "format": FORMAT,
        "iteration": int(iteration),
        "world_size": int(world_size),
        "config": config,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "rng": rng,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by ``save_checkpoint`` (tensor-only unpickling)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise CTBenchError(f"{path}: not a readable pre-training checkpoint ({e}); delete it or "
                           "start with --no-resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CTBenchError(f"{path}: not a ctbench VoxelFM pre-training checkpoint ({FORMAT})")
    return state


def write_config(path: Path, doc: dict) -> Path:
    """Write a reference-style config YAML atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Path(path)


def export_teacher(teacher: nn.ModuleDict, folder: Path, config: dict,
                   name: str = "teacher_checkpoint.pth") -> Path:
    """Save ``{"teacher": state_dict}`` (keys ``backbone.*``, ``dino_head.*``) and
    ``config.yaml`` into ``folder``; returns the weights path."""
    folder = Path(folder)
    sd = {k: v.detach().float().cpu().clone() for k, v in teacher.state_dict().items()}
    path = folder / name
    with atomic_path(path) as tmp:
        torch.save({"teacher": sd}, tmp)
    write_config(folder / "config.yaml", config)
    return path
