"""Structural checks of one cached feature file (safetensors), without loading its tensors.

A feature file cut short (full disk, power loss, a copy interrupted outside ctbench) or
overwritten with garbage must not make every later run fail: :class:`ctbench.cache.FeatureCache`
checks an entry with :func:`entry_problem` before trusting it and moves a bad one aside.

The checks read the 8-byte header length, the JSON header and the (small) embedding: the header
must fit the file, every tensor's byte range must match its shape and dtype and lie inside the
data section, which must end exactly where the file does (as ``safetensors`` itself requires),
the tensors ctbench writes must have the dtype and rank it writes (embedding float32 ``(E,)``,
tokens float16 ``(C, d1, d2, d3)``, token_affine float64 ``4x4``), the embedding must be finite
and the recorded model / weights / preprocessing must be this cache's.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import BinaryIO

import numpy as np

MAX_HEADER = 100_000_000  # safetensors refuses larger headers too
ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
            "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
# what FeatureCache.put writes: name -> (dtype, shape rule)
EXPECTED = {"embedding": ("F32", lambda s: len(s) == 1),
            "tokens": ("F16", lambda s: len(s) == 4),
            "token_affine": ("F64", lambda s: list(s) == [4, 4])}


class CorruptEntry(ValueError):
    """A cached feature file that cannot be what :meth:`FeatureCache.put` wrote (the reason)."""


def read_header(fh: BinaryIO, size: int) -> tuple[int, dict]:
    """(header length, parsed header) of an open safetensors file of ``size`` bytes; raises
    :class:`CorruptEntry` when the header cannot be read from it."""
    fh.seek(0)
    if size < 8:
        raise CorruptEntry(f"the file is {size} bytes, shorter than a safetensors header")
    (n,) = struct.unpack("<Q", fh.read(8))
    if n > MAX_HEADER or 8 + n > size:
        raise CorruptEntry(f"the header claims {n} bytes but the file has {size} (truncated?)")
    try:
        header = json.loads(fh.read(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CorruptEntry("the header is not valid JSON (truncated or overwritten?)") from None
    if not isinstance(header, dict):
        raise CorruptEntry("the header is not a JSON object")
    return n, header


def _tensor_ranges(header: dict, data_len: int) -> dict[str, tuple[str, list[int], int, int]]:
    """name -> (dtype, shape, begin, end) in the data section, each checked against the header rules."""
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = info["dtype"], [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CorruptEntry(f"tensor {name!r} has a malformed header entry") from None
        if dtype not in ITEMSIZE or any(d < 0 for d in shape):
            raise CorruptEntry(f"tensor {name!r} has dtype {dtype} / shape {shape}")
        if not 0 <= begin <= end <= data_len or end - begin != math.prod(shape) * ITEMSIZE[dtype]:
            raise CorruptEntry(f"tensor {name!r} ({dtype} {shape}) does not fit bytes {begin}-{end} "
                               f"of a {data_len}-byte data section (truncated?)")
        out[name] = (dtype, shape, begin, end)
    return out


def _check_expected(ranges: dict[str, tuple[str, list[int], int, int]]) -> None:
    if "embedding" not in ranges:
        raise CorruptEntry("no 'embedding' tensor")
    if ("tokens" in ranges) != ("token_affine" in ranges):
        raise CorruptEntry("'tokens' and 'token_affine' must be stored together")
    for name, (dtype, rule) in EXPECTED.items():
        if name in ranges and (ranges[name][0] != dtype or not rule(ranges[name][1])):
            raise CorruptEntry(f"tensor {name!r} is {ranges[name][0]} {ranges[name][1]}, "
                               f"not the {dtype} layout ctbench writes")


def _check_owner(header: dict, expected: dict[str, str]) -> None:
    """The metadata ``put`` records, when present, must name this cache's triple."""
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or "ctbench" not in meta:
        return
    try:
        info = json.loads(meta["ctbench"])
    except (TypeError, ValueError):
        raise CorruptEntry("its ctbench metadata is not valid JSON") from None
    if not isinstance(info, dict):
        raise CorruptEntry("its ctbench metadata is not a JSON object")
    for key, want in expected.items():
        if key in info and info[key] != want:
            raise CorruptEntry(f"it was written for {key} {info[key]!r}, not {want!r}")


def check_entry(fh: BinaryIO, expected: dict[str, str]) -> dict:
    """Raise :class:`CorruptEntry` unless the open file ``fh`` is a complete feature file of the
    cache whose ``model`` / ``weights`` / ``preprocessing`` are ``expected``; returns its header."""
    size = os.fstat(fh.fileno()).st_size
    n, header = read_header(fh, size)
    data_len = size - 8 - n
    ranges = _tensor_ranges(header, data_len)
    stored = max((end for *_, end in ranges.values()), default=0)
    if stored != data_len:
        raise CorruptEntry(f"the tensors take {stored} bytes but the data section has {data_len}")
    _check_expected(ranges)
    _check_owner(header, expected)
    _, shape, begin, end = ranges["embedding"]
    fh.seek(8 + n + begin)
    emb = np.frombuffer(fh.read(end - begin), dtype="<f4")
    if emb.size != math.prod(shape) or not np.all(np.isfinite(emb)):
        raise CorruptEntry("the embedding holds non-finite values (overwritten?)")
    return header
