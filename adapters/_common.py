"""Helpers shared by the built-in adapters: input checks, MONAI preprocessing with affine
tracking, the token-grid affine, and strict checkpoint loading with clear errors.

Cheap to import (numpy and ctbench only); torch and MONAI are imported inside the functions.
The API is deliberately small and stable:

- ``as_volume(volume, model)``: validate / coerce a canonical volume into a float32 MetaTensor.
- ``preprocess(volume, transforms, model)``: run MONAI transforms, return the network input
  ``(1, d1, d2, d3)`` MetaTensor whose ``.affine`` (index -> world RAS mm) MONAI tracked.
- ``affine_of(x)``: a MetaTensor's affine as a float64 numpy 4x4.
- ``permute_affine(affine, order)``: the affine of ``array.permute(order)`` (spatial axes only).
- ``token_affine(input_affine, strides, first_centre)``: token index -> world mm for a strided grid.
- ``read_checkpoint(path, model)``: tensor-only read of a file into a flat ``{key: Tensor}``.
- ``select_prefix(state, prefix, ignore, source)``: keep (and strip) one sub-model's keys.
- ``load_strict(module, state, source, model)``: strict load with one actionable message.
- ``check_variant(model, variant, variants, weights)``: refuse unknown variants / ``auto`` weights
  for the CI stand-ins.
- ``build_module(ref, build, load, device)``: the frozen network, seeded-random or loaded strictly.
- ``resolve_precision(precision, model, default)``: ``fp32`` / ``bf16`` (``None`` -> the default).
- ``run_batch(model, inputs, device, autocast)``: stack prepared inputs and run one forward pass.
- ``split_features(embedding, tokens, token_affines)``: a batch's outputs as per-volume ``Features``.
- ``encode_grouped(prepared, forward, batch_size)``: batch inputs of equal shape, in input order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np

from ctbench.errors import CTBenchError
from ctbench.types import Features

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor

    from ctbench.weights import WeightsRef

_T = TypeVar("_T")

__all__ = [
    "as_volume",
    "preprocess",
    "affine_of",
    "permute_affine",
    "token_affine",
    "read_checkpoint",
    "select_prefix",
    "load_strict",
    "check_variant",
    "build_module",
    "resolve_precision",
    "run_batch",
    "split_features",
    "encode_grouped",
]

_SHOW = 8  # keys listed per category in error messages


def affine_of(x: Any) -> np.ndarray:
    """The 4x4 ``affine`` of a MetaTensor (or an array-like 4x4) as float64 numpy."""
    aff = getattr(x, "affine", x)
    if hasattr(aff, "detach"):
        aff = aff.detach().cpu().numpy()
    aff = np.asarray(aff, dtype=np.float64)
    if aff.shape != (4, 4):
        raise CTBenchError(f"a volume affine must be 4x4, got shape {aff.shape}")
    return aff


def as_volume(volume: Any, model: str) -> "MetaTensor":
    """Check that ``volume`` is a canonical ``(1, X, Y, Z)`` volume with a finite 4x4 affine and
    return it as a float32 MetaTensor (a copy is made only when needed)."""
    import torch
    from monai.data import MetaTensor

    if not isinstance(volume, MetaTensor):
        raise CTBenchError(
            f"{model}: expected a MONAI MetaTensor (1, X, Y, Z) in HU with a RAS affine, got "
            f"{type(volume).__name__}; read images with ctbench's readers"
        )
    if volume.ndim != 4 or volume.shape[0] != 1 or min(volume.shape[1:]) < 1:
        raise CTBenchError(f"{model}: expected a volume of shape (1, X, Y, Z), got {tuple(volume.shape)}")
    aff = affine_of(volume)
    if not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise CTBenchError(f"{model}: the volume affine is singular or not finite: {aff.tolist()}")
    if volume.dtype != torch.float32:
        volume = volume.to(torch.float32)
    return volume


def preprocess(volume: Any, transforms: Sequence[Any], model: str) -> "MetaTensor":
    """Apply MONAI array transforms to a canonical volume; the result keeps its tracked affine.

    Every transform must be a MONAI transform that updates MetaTensor metadata (Orientation,
    Spacing, SpatialPad, CenterSpatialCrop, CropForeground, ScaleIntensityRange, ...): then
    ``affine_of(result)`` maps the network-input index to world RAS mm exactly.
    """
    from monai.data import MetaTensor
    from monai.transforms import Compose

    x = Compose(list(transforms))(as_volume(volume, model))
    if not isinstance(x, MetaTensor):  # a transform dropped the metadata: geometry unknown
        raise CTBenchError(f"{model}: preprocessing lost the volume affine (a non-MONAI transform?)")
    return x


def permute_affine(affine: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Affine of ``a.permute(order)`` for a 3D array ``a`` with affine ``affine``: new axis ``n``
    is old axis ``order[n]``."""
    order = list(order)
    if sorted(order) != [0, 1, 2]:
        raise ValueError(f"order must be a permutation of (0, 1, 2), got {order}")
    p = np.zeros((4, 4))
    for new, old in enumerate(order):
        p[old, new] = 1.0
    p[3, 3] = 1.0
    return affine_of(affine) @ p


def token_affine(
    input_affine: np.ndarray,
    strides: Sequence[float],
    first_centre: Sequence[float] | float | None = None,
) -> np.ndarray:
    """Token index -> world mm for a grid that downsamples the network input by ``strides``.

    Token ``t`` along an axis of stride ``s`` is centred at input index ``s*t + c``, where ``c``
    (``first_centre``) is the input index of token 0's centre:
    - ``None`` (default): ``(s - 1) / 2``, for non-overlapping patches (a ViT's ``[s*t, s*t+s-1]``);
    - ``0``: for CNNs whose strided convs / pools use "same" padding (kernel ``k``, padding
      ``k // 2``): output ``t`` is centred on input ``s*t``, where its receptive field peaks.
    Tokens must be stored in the input's axis order (use ``permute_affine`` otherwise).
    """
    s = np.asarray(list(strides), dtype=np.float64)
    if s.shape != (3,) or np.any(s <= 0):
        raise ValueError(f"strides must be three positive numbers, got {list(strides)}")
    c = (s - 1.0) / 2.0 if first_centre is None else np.broadcast_to(np.asarray(first_centre, dtype=np.float64), (3,))
    m = np.eye(4)
    m[:3, :3] = np.diag(s)
    m[:3, 3] = c
    return affine_of(input_affine) @ m


def read_checkpoint(path: Path | str, model: str) -> dict[str, "torch.Tensor"]:
    """Read a checkpoint without unpickling arbitrary objects (``ctbench.weights``) and check it
    is a flat mapping of tensors."""
    import torch

    from ctbench.weights import load_state_dict

    state = load_state_dict(Path(path))
    if not isinstance(state, Mapping):
        raise CTBenchError(
            f"{path}: expected a state_dict (a mapping of tensors) for {model}, got "
            f"{type(state).__name__}"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CTBenchError(
            f"{path}: entries {_names(bad)} are not tensors; {model} needs a flat state_dict "
            f"(e.g. torch.save(model.state_dict(), path) or a safetensors file)"
        )
    return dict(state)


def select_prefix(
    state: Mapping[str, "torch.Tensor"],
    prefix: str,
    ignore: Iterable[str] = (),
    source: str = "checkpoint",
) -> dict[str, "torch.Tensor"]:
    """Keep one sub-model's keys of a bigger checkpoint, with ``prefix`` stripped.

    If no key starts with ``prefix`` the state is taken as already stripped and returned as is.
    Otherwise keys outside ``prefix`` must start with one of the documented ``ignore`` prefixes
    (e.g. a text tower): anything else is an unexpected key and raises ``CTBenchError``.
    """
    if not any(k.startswith(prefix) for k in state):
        return dict(state)
    ignore = tuple(ignore)
    kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    stray = [k for k in state if not k.startswith(prefix) and not k.startswith(ignore)]
    if stray:
        allowed = ", ".join(repr(i) for i in ignore) or "none"
        raise CTBenchError(
            f"{source}: unexpected keys {_names(stray)} outside {prefix!r} (ignored prefixes: "
            f"{allowed}); pass the official checkpoint or a state_dict of the image encoder only"
        )
    return kept


def load_strict(module: "torch.nn.Module", state: Mapping[str, "torch.Tensor"], source: str, model: str) -> None:
    """``module.load_state_dict(state, strict=True)`` after checking names and shapes, so that a
    mismatch gives one message naming the missing, unexpected and wrongly shaped keys.

    A module built under ``torch.device("meta")`` (no random init wasted) gets the file's
    tensors assigned, cast to the module's dtypes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} (file {list(state[k].shape)}, model {list(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if shapes:
        problems.append(f"wrongly shaped keys {_names(shapes, quote=False)}")
    if problems:
        raise CTBenchError(
            f"{source} does not fit the {model} encoder: {'; '.join(problems)}. Pass the official "
            f"checkpoint for this model and variant, or --weights random"
        )
    if any(t.is_meta for t in expected.values()):  # built on the meta device: no wasted init
        cast = {k: state[k].to(dtype=v.dtype) for k, v in expected.items()}
        module.load_state_dict(cast, strict=True, assign=True)
    else:
        module.load_state_dict(dict(state), strict=True)


def check_variant(
    model: str, variant: str, variants: Iterable[str], weights: str | Path, published: str = "full"
) -> None:
    """Refuse an unknown ``variant``, and ``weights="auto"`` for any variant but ``published``
    (the others are small CI stand-ins with no checkpoint), before anything is built."""
    names = tuple(variants)
    if variant not in names:
        raise CTBenchError(f"unknown {model} variant {variant!r}; choose one of {names}")
    if variant != published and str(weights) == "auto":
        raise CTBenchError(
            f"{model} variant {variant!r} has no published weights; pass --weights random or a PATH"
        )


def build_module(
    ref: "WeightsRef",
    build: Callable[[], "torch.nn.Module"],
    load: Callable[["torch.nn.Module", Path], None],
    device: "torch.device | str",
) -> "torch.nn.Module":
    """The frozen network an encoder runs: ``build()`` under ``seeded_init`` for the random
    control (reproducible), or on the meta device (no wasted random init) followed by
    ``load(module, ref.path)``, which must load strictly (``load_strict`` assigns the file's
    tensors). Returned in eval mode, without gradients, on ``device``."""
    import torch

    from ctbench.weights import seeded_init

    if ref.is_random:
        with seeded_init():
            module = build()
    else:
        with torch.device("meta"):
            module = build()
        load(module, ref.path)  # type: ignore[arg-type]
    return module.eval().requires_grad_(False).to(device)


def resolve_precision(precision: str | None, model: str, default: str = "fp32") -> str:
    """The forward precision of an encoder: ``precision`` (``fp32`` or ``bf16``, checked) or,
    for ``None``, ``default`` (the official code's precision: ``fp32`` for every built-in).
    ``bf16`` means bfloat16 autocast on any device (CPU too: slow, but the same arithmetic)."""
    from ctbench.devices import check_precision

    return check_precision(precision, f"{model} precision") or default


def run_batch(
    model: Callable[["torch.Tensor"], Any],
    inputs: Sequence["MetaTensor"],
    device: "torch.device",
    autocast: bool = False,
) -> Any:
    """``model`` on the prepared inputs stacked into one batch on ``device``, under inference
    mode, with bf16 autocast when ``autocast`` (otherwise autocast is off: full precision)."""
    import torch

    x = torch.stack([v.as_tensor() for v in inputs]).to(device)
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
        return model(x)


def split_features(
    embedding: "torch.Tensor", tokens: "torch.Tensor", token_affines: Sequence[np.ndarray]
) -> list[Features]:
    """One ``Features`` per volume from a batch's ``(B, E)`` embeddings and ``(B, C, d1, d2, d3)``
    tokens (copied to the CPU as float32), with each volume's token affine."""
    emb = embedding.float().cpu().numpy()
    tok = tokens.float().cpu().numpy()
    return [Features(emb[i], tok[i], aff) for i, aff in enumerate(token_affines)]


def encode_grouped(
    prepared: Sequence[_T], forward: Callable[[list[_T]], list[Features]], batch_size: int
) -> list[Features]:
    """``forward`` on prepared inputs of equal shape together, at most ``batch_size`` at a time;
    the features come back in input order (a fixed-size model makes one group)."""
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(prepared):
        groups.setdefault(tuple(x.shape), []).append(i)  # type: ignore[attr-defined]
    out: list[Features | None] = [None] * len(prepared)
    for idx in groups.values():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            for i, feats in zip(chunk, forward([prepared[i] for i in chunk])):
                out[i] = feats
    return out  # type: ignore[return-value]


def _names(keys: Sequence[str], quote: bool = True) -> str:
    shown = [repr(k) if quote else k for k in keys[:_SHOW]]
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(shown) + more
