"""Reference-parity fixtures: weights derived from official key names, a fixed synthetic input,
and the official implementation's outputs stored as small safetensors files.

This module imports only numpy, torch and safetensors, so the regeneration scripts can run it in
a separate environment that holds the official code (it is never run by the suite itself).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FIXTURES = Path(__file__).parent / "fixtures"
WEIGHT_RULE = "sha256-key-seeded-v1"


def key_seed(key: str) -> int:
    """A 63-bit seed from a parameter name, identical on every machine and library version."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def seeded_tensor(key: str, shape: Sequence[int], dtype: str = "float32") -> torch.Tensor:
    """The deterministic value of one official tensor, from its key and shape only.

    Matrices and kernels: normal / sqrt(fan-in), so deep stacks neither explode nor vanish fast;
    1-D scales (norm weights, gammas) and running variances: near 1; other vectors: small normal;
    integer tensors (e.g. ``num_batches_tracked``): zero."""
    shape = tuple(int(s) for s in shape)
    if not dtype.startswith("float") and dtype not in ("bfloat16",):
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    g = torch.Generator().manual_seed(key_seed(key))
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) >= 2:
        x = x / np.sqrt(max(1, int(np.prod(shape[1:]))))
    elif leaf == "running_var":
        x = 1.0 + 0.25 * x.abs()
    elif leaf in ("weight", "gamma", "scale", "g"):
        x = 1.0 + 0.1 * x
    else:
        x = 0.1 * x
    return x.to(getattr(torch, dtype))


def seeded_state_dict(keys: Mapping[str, tuple[Sequence[int], str]]) -> dict[str, torch.Tensor]:
    """``{key: (shape, dtype)}`` -> the seeded state dict in the official layout."""
    return {k: seeded_tensor(k, shape, dtype) for k, (shape, dtype) in keys.items()}


def key_list(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[list[int], str]]:
    """The key list of an official state dict, as stored in a fixture."""
    return {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}


def synthetic_volume(
    shape: tuple[int, int, int] = (48, 40, 36),
    seed: int = 7,
    spacing: tuple[float, float, float] = (1.6, 1.3, 2.5),
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed oblique, non-RAS (LPS-like, anisotropic) CT-like volume in HU and its affine.

    ``spacing`` (mm per index axis) is there for references whose loaders require equal
    in-plane spacing (e.g. VoxelFM's NIfTI loader): the voxel values do not depend on it.

    A body ellipsoid (~0 HU) in air (-1000), a lung-like region (-850), a dense sphere (+700)
    off centre, and mild seeded noise, so orientation and resampling errors change outputs."""
    rng = np.random.default_rng(seed)
    idx = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt(((idx / np.array([0.9, 0.8, 0.95])[:, None, None, None]) ** 2).sum(0))
    vol = np.full(shape, -1000.0)
    vol[r < 1] = 20.0
    lung = np.sqrt(((idx - np.array([0.25, 0.0, 0.0])[:, None, None, None]) ** 2 / 0.12).sum(0))
    vol[(lung < 1) & (r < 1)] = -850.0
    dense = np.sqrt(((idx - np.array([-0.35, 0.3, 0.2])[:, None, None, None]) ** 2).sum(0))
    vol[dense < 0.22] = 700.0
    vol = vol + rng.normal(0, 15, shape)
    theta = np.deg2rad(12.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    flip = np.diag([-1.0, -1.0, 1.0])  # LPS-like: first two world axes reversed
    aff = np.eye(4)
    aff[:3, :3] = flip @ rot @ np.diag([float(s) for s in spacing])
    aff[:3, 3] = [40.0, 30.0, -60.0]
    return vol.astype(np.float32), aff


def subsample(x: torch.Tensor, step: int = 4) -> torch.Tensor:
    """Every ``step``-th element along each spatial (last three) axis: enough to catch any
    orientation, resampling or intensity error while keeping fixtures small."""
    return x[..., ::step, ::step, ::step].contiguous()


def write_fixture(name: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Save ``tensors`` (float32) with ``meta`` (official source and commit/version, date,
    tolerance, key list, notes) as ``fixtures/<name>.safetensors``."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{name}.safetensors"
    header = {k: json.dumps(v) for k, v in {**meta, "weight_rule": WEIGHT_RULE}.items()}
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}, str(path), metadata=header)
    return path


def read_fixture(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and decoded metadata of ``fixtures/<name>.safetensors``."""
    from safetensors import safe_open

    path = FIXTURES / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    return load_file(str(path)), meta


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: the parity measure quoted on model cards."""
    got, want = got.double().reshape(want.shape), want.double()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def write_nifti(path: Path | str, volume: np.ndarray, affine: np.ndarray) -> Path:
    """Save a volume and its affine as a float32 NIfTI file, the format both the references'
    loaders and ctbench's reader take (nibabel is imported here, so this module stays light)."""
    import nibabel as nib

    path = Path(path)
    nib.save(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.asarray(affine, dtype=np.float64)), str(path))
    return path


def check_close(what: str, got: torch.Tensor, want: torch.Tensor, tolerance: float) -> float:
    """``relative_error(got, want)`` after checking shapes; raises AssertionError naming ``what``,
    the error and the tolerance when it is above ``tolerance``."""
    got = torch.as_tensor(got)
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)}, reference {tuple(want.shape)}"
    err = relative_error(got, want)
    assert err <= tolerance, f"{what}: relative error {err:.3g} > tolerance {tolerance:g} against the reference"
    return err


def pad_volume(
    volume: np.ndarray, affine: np.ndarray, pad: Sequence[tuple[int, int]], value: float = -1024.0
) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` padded by ``pad`` voxels ``(before, after)`` per axis with ``value`` (e.g. the
    -1024 HU a scanner writes outside its field of view), and the affine of the padded grid,
    so that foreground crops have something to remove."""
    out = np.pad(volume, [tuple(int(v) for v in p) for p in pad], constant_values=value).astype(volume.dtype)
    shift = np.eye(4)
    shift[:3, 3] = [-int(p[0]) for p in pad]
    return out, np.asarray(affine, dtype=np.float64) @ shift


def checkout_commit(root: Path) -> str:
    """The git commit of an official checkout (recorded in the fixture), or ``unknown``."""
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
