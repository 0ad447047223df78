"""``ctbench check-adapter NAME``: verify that a model adapter keeps the ``Encoder`` contract.

Checks, each reported as pass/fail in a table (the command exits 1 when any fails):
construction offline with random weights, the instance hooks, output shapes and dtypes against
the card, determinism, token geometry (a bright blob at a known world point must light up the
token cell that ``token_affine`` names), the preprocessing affine (when the adapter exposes
``preprocess``), a strict weights round trip through ``--weights PATH`` (for a model whose card
says it has no weights, format ``none``: no parameters and a weights file refused), and peak memory.

Adapter hooks used here (documented in docs/adding-a-model.md):
- required: ``card``, ``weights_ref``, ``preprocessing_id``, ``encode``;
- weights round trip: ``state_dict()`` or a ``model`` attribute (an ``nn.Module``) whose state
  dict, saved in the card's format, loads back through ``Adapter(weights=PATH)``;
- optional: ``preprocess(volume)`` returning the network input as a MetaTensor with its
  tracked affine; ``embedding_dim`` / ``token_dim`` attributes when a non-default variant
  changes the output dimensions.
"""

from __future__ import annotations

import contextlib
import inspect
import resource
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import typer

from .errors import CTBenchError
from .types import Encoder, Features

__all__ = ["Check", "probe_volumes", "run_checks", "resolve_adapter", "render", "command"]

# The probe: a body box in air with an anisotropic, non-RAS grid; a Gaussian blob off-centre.
PROBE_SHAPE = (96, 80, 48)
PROBE_AFFINE = np.array(
    [[0.0, -1.8, 0.0, 80.0], [-1.5, 0.0, 0.0, 60.0], [0.0, 0.0, 3.5, -90.0], [0.0, 0.0, 0.0, 1.0]]
)  # index axes run towards L, P, S (an "LPS"-like file), spacing 1.5 x 1.8 x 3.5 mm
BLOB_INDEX = (62.0, 27.0, 31.0)  # off-centre on every axis, so flips and swaps are caught
BLOB_SIGMA_MM = 5.0
BLOB_HU = 900.0
PROBE_SEED_OFFSET_MM = (6.0, -4.0, 3.0)  # a seed-conditioned model's seed: near the blob, not on it


@dataclass
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


def probe_volumes(shape: tuple[int, int, int] = PROBE_SHAPE, affine: np.ndarray = PROBE_AFFINE,
                  blob_index: tuple[float, float, float] = BLOB_INDEX):
    """(base volume, the same with a bright Gaussian blob, the blob centre in world mm)."""
    import torch
    from monai.data import MetaTensor

    base = np.full(shape, -1000.0, dtype=np.float32)
    lo = [s // 8 for s in shape]
    base[lo[0]: shape[0] - lo[0], lo[1]: shape[1] - lo[1], lo[2]: shape[2] - lo[2]] = 40.0
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float64)
    offset_mm = (grid - np.asarray(blob_index)) @ np.asarray(affine)[:3, :3].T
    blob = base + BLOB_HU * np.exp(-0.5 * (offset_mm**2).sum(-1) / BLOB_SIGMA_MM**2)
    world = (np.asarray(affine) @ np.r_[blob_index, 1.0])[:3]

    def mt(a: np.ndarray) -> Any:
        return MetaTensor(torch.from_numpy(a[None].astype(np.float32)), affine=torch.as_tensor(affine))

    return mt(base), mt(blob), world


def resolve_adapter(name: str) -> type:
    """A registered model name, or ``package.module:Class`` for an adapter not registered yet."""
    from .registry import MODELS, import_ref

    if ":" in name:
        return import_ref(name, "adapter")
    return MODELS.get(name)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Make any socket connection fail, to prove construction touches no network."""
    real = socket.socket.connect

    def refuse(self: socket.socket, *a: Any, **k: Any) -> None:
        raise OSError("check-adapter: network access during adapter construction")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = real  # type: ignore[method-assign]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: peak RSS so far (kilobytes on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _measure(fn: Callable[[], Any], device: str) -> tuple[Any, float, int]:
    """Run ``fn``; return (result, seconds, peak extra memory in bytes: CUDA allocator peak on
    CUDA, else resident-set growth sampled every 2 ms)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return out, time.perf_counter() - t, torch.cuda.max_memory_allocated() - before
    before = _rss_bytes()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            stop.wait(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    try:
        out = fn()
    finally:
        seconds = time.perf_counter() - t
        stop.set()
        th.join()
    peak[0] = max(peak[0], _rss_bytes())
    return out, seconds, peak[0] - before


def _state_of(enc: Any) -> dict | None:
    if callable(getattr(enc, "state_dict", None)):
        return dict(enc.state_dict())
    model = getattr(enc, "model", None)
    if model is not None and callable(getattr(model, "state_dict", None)):
        return dict(model.state_dict())
    return None


def _perturbed(state: dict, seed: int = 0) -> dict:
    """Weights and biases scaled elementwise by 1 +- 5% (seeded): a different but sane model."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point() and k.rsplit(".", 1)[-1] in ("weight", "bias"):
            v = v * (1 + 0.05 * (2 * torch.rand(v.shape, generator=g) - 1)).to(v.dtype)
        out[k] = v.contiguous().clone()
    return out


def _save(state: dict, path: Path, fmt: str) -> Path:
    """Write ``state`` in the card's format: safetensors, else a torch state_dict file."""
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = path.with_suffix(".safetensors")
        save_file(state, str(path))
    else:
        import torch

        path = path.with_suffix(".pt")
        torch.save(state, path)
    return path


def _expected_dims(cls: type, enc: Any, variant: Optional[str]) -> tuple[int, Optional[int]]:
    card = cls.card
    default = None
    param = inspect.signature(cls.__init__).parameters.get("variant")
    if param is not None and param.default is not inspect.Parameter.empty:
        default = param.default
    if variant is None or variant == default:
        return card.embedding_dim, card.token_dim
    return getattr(enc, "embedding_dim", card.embedding_dim), getattr(enc, "token_dim", card.token_dim)


def _shape_checks(f: Any, emb_dim: int, tok_dim: Optional[int]) -> list[Check]:
    if not isinstance(f, Features):
        return [Check("output type", False, f"encode returned {type(f).__name__}, not Features")]
    out = [Check(
        "embedding shape/dtype",
        f.embedding.shape == (emb_dim,) and f.embedding.dtype == np.float32,
        f"{f.embedding.shape} {f.embedding.dtype}, expected ({emb_dim},) float32",
    )]
    if tok_dim is None:
        out.append(Check("tokens", f.tokens is None, "card has no token_dim; tokens must be None"))
        return out
    if f.tokens is None:
        out.append(Check("tokens shape/dtype", False, f"no tokens, but the card says token_dim {tok_dim}"))
        return out
    aff = f.token_affine
    ok_aff = aff is not None and np.all(np.isfinite(aff)) and abs(np.linalg.det(aff[:3, :3])) > 1e-9
    out.append(Check(
        "tokens shape/dtype",
        f.tokens.ndim == 4 and f.tokens.shape[0] == tok_dim and f.tokens.dtype == np.float16
        and bool(np.all(np.isfinite(f.tokens))),
        f"{f.tokens.shape} {f.tokens.dtype}, expected ({tok_dim}, d1, d2, d3) float16, finite",
    ))
    out.append(Check("token_affine", bool(ok_aff), "4x4, finite, invertible"))
    return out


def _geometry(base: Features, blob: Features, world: np.ndarray) -> Check:
    diff = np.linalg.norm(blob.tokens.astype(np.float32) - base.tokens.astype(np.float32), axis=0)
    hit = np.unravel_index(int(np.argmax(diff)), diff.shape)
    cell = np.rint(np.linalg.solve(blob.token_affine, np.r_[world, 1.0])[:3]).astype(int)
    inside = bool(np.all(cell >= 0) and np.all(cell < np.asarray(diff.shape)))
    dist = int(np.max(np.abs(np.asarray(hit) - cell)))
    return Check(
        "geometry: blob token",
        inside and dist <= 1 and float(diff.max()) > 0,
        f"blob at world {np.round(world, 1).tolist()} -> token_affine cell {cell.tolist()}, strongest "
        f"token response at {list(map(int, hit))} (grid {list(diff.shape)}; tolerance 1 cell)",
    )


def _preprocess_geometry(enc: Any, base_v: Any, blob_v: Any, world: np.ndarray) -> Check | None:
    if not callable(getattr(enc, "preprocess", None)):
        return None
    a, b = enc.preprocess(base_v), enc.preprocess(blob_v)
    if not hasattr(b, "affine") or tuple(a.shape) != tuple(b.shape):
        return None  # not a MetaTensor: nothing generic to verify
    aff = np.asarray(b.affine.detach().cpu() if hasattr(b.affine, "detach") else b.affine, dtype=np.float64)
    d = (b.float() - a.float()).abs().detach().cpu().numpy().reshape(b.shape[-3:])
    idx = np.unravel_index(int(np.argmax(d)), d.shape)
    got = (aff @ np.r_[idx, 1.0])[:3]
    err = float(np.linalg.norm(got - world))
    voxel = float(np.linalg.norm(aff[:3, :3], axis=0).max())
    return Check(
        "geometry: preprocessing affine",
        err <= voxel,
        f"blob peak of the network input maps to {np.round(got, 1).tolist()} mm, {err:.2f} mm from "
        f"the truth (tolerance one input voxel, {voxel:.2f} mm)",
    )


def run_checks(name: str, variant: Optional[str] = None, device: str = "cpu",
               max_memory_gb: Optional[float] = None) -> list[Check]:
    """Run every check on adapter ``name`` (registered name or ``module:Class``)."""
    checks: list[Check] = []
    cls = resolve_adapter(name)
    kwargs: dict[str, Any] = {"device": device}
    if variant:
        kwargs["variant"] = variant
    try:
        with _offline():
            enc = cls(weights="random", **kwargs)
        checks.append(Check("construct offline (random weights)", True, type(enc).__name__))
    except Exception as e:  # report, do not crash: everything below needs the instance
        checks.append(Check("construct offline (random weights)", False, f"{type(e).__name__}: {e}"))
        return checks
    missing = [h for h in ("card", "weights_ref", "preprocessing_id", "encode") if not hasattr(enc, h)]
    weightless = cls.card.weights.format == "none"
    ok = not missing and isinstance(enc, Encoder) and (
        enc.weights_ref.is_none if weightless else enc.weights_ref.is_random)
    checks.append(Check("hooks", ok, "missing: " + ", ".join(missing) if missing else
                        f"card, weights_ref ({'none' if weightless else 'random'}), preprocessing_id, encode"))
    if missing:
        return checks
    base_v, blob_v, world = probe_volumes()
    from .seeds import attach_seed, seed_columns

    if seed_columns(enc) is not None:  # seed-conditioned (ctbench.seeds): a click near the blob

        for v in (base_v, blob_v):
            attach_seed(v, world + np.asarray(PROBE_SEED_OFFSET_MM))
    emb_dim, tok_dim = _expected_dims(cls, enc, variant)
    try:
        f1, seconds, mem = _measure(lambda: enc.encode(base_v), device)
    except Exception as e:
        checks.append(Check("encode", False, f"{type(e).__name__}: {e}"))
        return checks
    shape_checks = _shape_checks(f1, emb_dim, tok_dim)
    if variant and not hasattr(enc, "embedding_dim") and not all(c.ok for c in shape_checks):
        for c in shape_checks:  # the likely cause: a smaller variant that does not say so
            c.detail += (f"; variant {variant!r} is not the default: if it changes the output "
                         f"size, expose embedding_dim / token_dim on the instance")
    checks += shape_checks
    if not all(c.ok for c in checks):
        return checks
    f2 = enc.encode(base_v)
    same = np.array_equal(f1.embedding, f2.embedding) and (
        f1.tokens is None or np.array_equal(f1.tokens, f2.tokens))
    checks.append(Check("deterministic", bool(same), "two encodes of one volume are identical"))
    fb = enc.encode(blob_v)
    if f1.tokens is not None:
        checks.append(_geometry(f1, fb, world))
        pre = _preprocess_geometry(enc, base_v, blob_v, world)
        if pre is not None:
            checks.append(pre)
    checks.append(_no_weights(cls, enc, kwargs) if weightless else _roundtrip(cls, enc, kwargs, blob_v, fb))
    limit = f" (limit {max_memory_gb} GB)" if max_memory_gb else ""
    checks.append(Check(
        "peak memory / time", max_memory_gb is None or mem <= max_memory_gb * 2**30,
        f"{mem / 2**20:.0f} MiB extra during one encode, {seconds:.2f} s on {device}{limit}",
    ))
    return checks


def _no_weights(cls: type, enc: Any, kwargs: dict) -> Check:
    """A model whose card says it has no weights: no parameters, no state, and a weights file
    refused with a CTBenchError naming the model (rather than silently ignored)."""
    import torch

    state = _state_of(enc)
    with tempfile.TemporaryDirectory() as tmp:
        path = _save({"weight": torch.zeros(1)}, Path(tmp) / "weights", "safetensors")
        try:
            cls(weights=str(path), **kwargs)
            refused = False
        except CTBenchError as e:
            refused = cls.card.name in str(e)
    ok = cls.card.parameters == 0 and not state and refused
    return Check(
        "no weights", ok,
        f"card weights format 'none': parameters {cls.card.parameters} (must be 0), state tensors "
        f"{len(state or {})}, a weights file refused with a CTBenchError naming it={refused}",
    )


def _roundtrip(cls: type, enc: Any, kwargs: dict, volume: Any, before: Features) -> Check:
    state = _state_of(enc)
    if state is None:
        return Check("weights round trip", False, "adapter exposes neither state_dict() nor .model")
    fmt = cls.card.weights.format
    changed = _perturbed(state)
    with tempfile.TemporaryDirectory() as tmp:
        path = _save(changed, Path(tmp) / "roundtrip", fmt)
        try:
            loaded = cls(weights=str(path), **kwargs)
        except Exception as e:
            return Check("weights round trip", False, f"loading its own state_dict failed: {e}")
        broken = dict(changed)
        dropped = next(iter(broken))
        del broken[dropped]
        bad_path = _save(broken, Path(tmp) / "missing-key", fmt)
        try:
            cls(weights=str(bad_path), **kwargs)
            rejects = False
        except CTBenchError as e:
            rejects = dropped in str(e)
    got = _state_of(loaded) or {}
    equal = set(got) == set(changed) and all(
        np.array_equal(got[k].detach().cpu().numpy(), changed[k].numpy()) for k in changed)
    after = loaded.encode(volume)
    moved = not np.allclose(after.embedding, before.embedding, rtol=1e-6, atol=0)
    ok = equal and moved and rejects and loaded.weights_ref.path is not None
    return Check(
        "weights round trip", ok,
        f"{len(changed)} tensors saved as {fmt}: reloaded exactly={equal}, features follow the "
        f"weights={moved}, missing key {dropped!r} rejected with a CTBenchError naming it={rejects}",
    )


def render(name: str, checks: list[Check]) -> None:
    """Print the checks as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"check-adapter {name}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, "[green]pass[/]" if c.ok else "[bold red]FAIL[/]", c.detail)
    Console().print(table)


def command(
    name: str = typer.Argument(..., help="registered model name, or package.module:Class"),
    variant: Optional[str] = typer.Option(None, "--variant", help="model variant, e.g. test"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    max_memory_gb: Optional[float] = typer.Option(None, "--max-memory-gb", help="fail above this peak"),
) -> None:
    """Verify an adapter: shapes, determinism, token geometry, weights round trip, memory."""
    checks = run_checks(name, variant, device, max_memory_gb)
    render(name + (f" ({variant})" if variant else ""), checks)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
