"""Helpers shared by the adapter tests: writing checkpoints in a model's file layout, asserting
strict-load outcomes, and reading token geometry off encoded probe volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ctbench.adapters._common import affine_of
from ctbench.check_adapter import PROBE_AFFINE, PROBE_SHAPE, probe_volumes
from ctbench.errors import CTBenchError
from ctbench.types import Features


def write_checkpoint(
    path: Path, state: Mapping[str, torch.Tensor], prefix: str = "", extra: Mapping[str, torch.Tensor] | None = None
) -> Path:
    """Save ``state`` with ``prefix`` on every key plus the ``extra`` entries (other towers of
    an official file): safetensors for a ``.safetensors`` path, ``torch.save`` otherwise."""
    full = {prefix + k: v for k, v in state.items()} | dict(extra or {})
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in full.items()}, str(path))
    else:
        torch.save(full, path)
    return path


def rewrite_checkpoint(path: Path, edit: Callable[[dict[str, torch.Tensor]], Any]) -> None:
    """Apply ``edit`` to the file's state dict in place and save it back in the same format."""
    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    edit(state)
    write_checkpoint(path, state)


def assert_load_refused(encoder: type, path: Path, words: Sequence[str]) -> None:
    """Building the test variant from ``path`` raises a ``CTBenchError`` naming the file and
    every one of ``words``."""
    with pytest.raises(CTBenchError) as err:
        encoder(weights=str(path), variant="test")
    msg = str(err.value)
    for w in [str(path), *words]:
        assert w in msg, (w, msg)


def assert_loaded(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Every tensor of ``state`` reached ``module`` exactly (after the cast to its dtype)."""
    loaded = module.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v.to(loaded[k].dtype)), k


def peak_index(x: Any) -> np.ndarray:
    """The (float) index of the maximum of a ``(1, d1, d2, d3)`` network input."""
    x = torch.as_tensor(x)
    return np.asarray(np.unravel_index(int(x.argmax()), tuple(x.shape[1:])), float)


def patch_token_affine(input_affine: np.ndarray, strides: Sequence[float]) -> np.ndarray:
    """Token index -> world for non-overlapping patches: token ``t`` is centred on input voxel
    ``s * t + (s - 1) / 2`` (written out here, independently of ``_common.token_affine``)."""
    s = np.asarray(strides, float)
    return input_affine @ np.r_[np.c_[np.diag(s), (s - 1) / 2], [[0, 0, 0, 1]]]


def token_cell(token_affine: np.ndarray, world: np.ndarray) -> list[int]:
    """The token whose centre is nearest the world point, as ``token_affine`` names it."""
    return np.rint(np.linalg.solve(token_affine, np.r_[world, 1.0])[:3]).astype(int).tolist()


def token_response(f0: Features, f1: Features) -> np.ndarray:
    """Per-token norm of the change of the tokens from ``f0`` to ``f1``."""
    return np.linalg.norm(f1.tokens.astype(np.float32) - f0.tokens.astype(np.float32), axis=0)


def strongest_token(f0: Features, f1: Features) -> list[int]:
    """The token that changes most from ``f0`` to ``f1``."""
    response = token_response(f0, f1)
    return [int(i) for i in np.unravel_index(int(response.argmax()), response.shape)]


def blob_at_token(enc: Any, strides: np.ndarray, target: np.ndarray, shape: tuple[int, int, int] = PROBE_SHAPE):
    """(base, blob, blob centre in world mm, its network-input index) for probe volumes of
    ``shape`` whose blob sits 0.3 token before ``target``'s centre in the network input of
    ``enc`` (where block-style and centre-style cell conventions disagree)."""
    base, _, _ = probe_volumes(shape=shape)
    p_aff = affine_of(enc.preprocess(base))
    v = strides * target - 0.3 * strides
    world = (p_aff @ np.r_[v, 1.0])[:3]
    index = np.linalg.solve(PROBE_AFFINE, np.r_[world, 1.0])[:3]
    base, blob, w = probe_volumes(shape=shape, blob_index=tuple(index))
    assert np.allclose(w, world)
    return base, blob, world, v
