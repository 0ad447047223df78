"""One place that turns a device setting (``--device``, ``CTBENCH_REPORT_DEVICE``, a task's
``device``) into a torch device name, with one-line errors that name the value and the fix."""

from __future__ import annotations

import re

from .errors import CTBenchError

_CUDA = re.compile(r"cuda(?::(\d+))?")
CHOICES = "auto, cpu, cuda or cuda:N"


def _use(source: str, value: str) -> str:
    """How the user writes ``value`` for ``source``: ``--device cpu`` or ``CTBENCH_X=cpu``."""
    return f"{source} {value}" if source.startswith("-") else f"{source}={value}"


def check_device_name(name: str | None, source: str = "--device") -> str:
    """``name`` (``None`` -> ``auto``) if it spells a device ctbench accepts, else a one-line
    :class:`CTBenchError`; no GPU is looked for (construction time, before any work)."""
    name = "auto" if name is None else str(name).strip()
    if name in ("auto", "cpu") or _CUDA.fullmatch(name):
        return name
    raise CTBenchError(f"{source} {name!r} is not a device; use {CHOICES} (e.g. {_use(source, 'cpu')})")


def resolve_device(name: str | None, source: str = "--device") -> str:
    """The device to use for ``name``: ``auto`` (or ``None``) -> ``cuda`` when a GPU is visible,
    else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` as given once checked. A misspelt name, CUDA
    without a visible GPU, or a GPU index past the visible ones is a one-line
    :class:`CTBenchError` naming ``source`` (the flag or environment variable), the value and the fix."""
    import torch

    name = check_device_name(name, source)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    match = _CUDA.fullmatch(name)
    if match is None:
        return name
    if not torch.cuda.is_available():
        raise CTBenchError(f"{source} {name!r} asks for a CUDA GPU but none is visible; "
                           f"use {_use(source, 'cpu')} (or auto)")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise CTBenchError(f"{source} {name!r}: only {count} CUDA GPU(s) are visible (cuda:0 to "
                           f"cuda:{count - 1}); use one of those, {_use(source, 'cuda')} or auto")
    return name


#: numeric precisions of an encoder's forward pass: ``fp32`` (full precision, what every
#: official implementation wrapped so far runs) or ``bf16`` (bfloat16 autocast: faster on GPUs,
#: not bit-equal to the official features)
PRECISIONS = ("fp32", "bf16")


def check_precision(name: str | None, source: str = "--precision") -> str | None:
    """``name`` if it spells a precision (``None``: the model's own default), else a one-line
    :class:`CTBenchError` naming ``source``, the value and the choices."""
    if name is None:
        return None
    value = str(name).strip().lower()
    if value in PRECISIONS:
        return value
    raise CTBenchError(f"{source} {name!r} is not a precision; use {' or '.join(PRECISIONS)} "
                       f"(or leave it out for the model's default, its official code's precision)")
