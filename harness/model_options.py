"""Adapter options and precision: from ``--model-option KEY=VALUE`` / ``--precision`` to the
keywords an adapter is built with, and the tag that keeps non-default runs apart.

Nothing here knows any model's options by name: an adapter's options are the keyword
parameters of its constructor (beyond ``weights``, ``device``, ``variant`` and ``precision``),
and its default precision is its class attribute ``default_precision`` (the precision of its
official code). A run records the options it was given (``RunConfig.model_options``); what they
change in the features lands in the adapter's ``preprocessing_id`` (and so in the feature cache
and study keys), and :func:`model_options_tag` suffixes the result folder of a run whose options
or precision differ from the defaults, as task options do.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any, Callable, Iterable

from .devices import check_precision
from .errors import CTBenchError

__all__ = ["BUILT_IN", "parse_model_options", "adapter_options", "default_precision", "encoder_kwargs",
           "model_options_tag"]

#: constructor parameters every adapter takes that are not options
BUILT_IN = ("weights", "device", "variant", "precision")


def parse_model_options(items: Iterable[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> ``{key: value}``; a VALUE that parses as JSON is taken as such
    (``true``, ``3``, ``null``, ``[-1000, 1000]``), anything else as a string (``dicom``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise CTBenchError(f"--model-option {item!r} is not KEY=VALUE; write e.g. "
                               f"--model-option hu_window=dicom (`ctbench models` lists each model's options)")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw.strip()
    return out


def _parameters(factory: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """(keyword parameters of ``factory``, whether it also takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C factory: nothing to check against
        return {}, True
    named = {n: p for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}
    return named, any(p.kind is p.VAR_KEYWORD for p in params.values())


def adapter_options(factory: Callable) -> dict[str, Any]:
    """The options an adapter declares, with their defaults (``inspect.Parameter.empty`` when
    required): its constructor's keyword parameters other than :data:`BUILT_IN`."""
    named, _ = _parameters(factory)
    return {n: p.default for n, p in named.items() if n not in BUILT_IN}


def default_precision(factory: Callable) -> str | None:
    """The adapter's default precision (``default_precision`` class attribute), or ``None`` when
    it declares none (a third-party adapter that manages precision itself)."""
    value = getattr(factory, "default_precision", None)
    return check_precision(value, f"{getattr(factory, '__name__', 'adapter')}.default_precision")


def encoder_kwargs(name: str, factory: Callable, weights: str, device: str, variant: str | None = None,
                   precision: str | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Constructor keywords for model ``name``: weights, device, the variant and precision when
    given, and each option, checked against the adapter's signature (a CTBenchError names an
    option it does not take and lists those it does)."""
    named, open_kwargs = _parameters(factory)
    kwargs: dict[str, Any] = {"weights": weights, "device": device}
    if variant:
        kwargs["variant"] = variant
    precision = check_precision(precision)
    if precision is not None:
        if "precision" not in named and not open_kwargs:
            raise CTBenchError(f"model {name!r} takes no precision setting (its adapter has no 'precision' "
                               f"parameter); leave --precision out")
        kwargs["precision"] = precision
    for key, value in (options or {}).items():
        if key in BUILT_IN:
            flag = "--precision" if key == "precision" else f"--{key}"
            raise CTBenchError(f"--model-option {key}=... is not an option; use {flag}")
        if key not in named and not open_kwargs:
            known = ", ".join(adapter_options(factory)) or "none"
            raise CTBenchError(f"model {name!r} has no option {key!r}; its options: {known} "
                               f"(give them as --model-option KEY=VALUE)")
        kwargs[key] = value
    return kwargs


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (a tuple default equals the list the command line gives)."""
    try:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return a == b


def model_options_tag(factory: Callable, precision: str | None = None,
                      options: dict[str, Any] | None = None) -> str | None:
    """``model<8 hex>``: a short hash of the precision and options that differ from the adapter's
    defaults, or ``None`` when none does, so default runs keep their result folder."""
    defaults = adapter_options(factory)
    changed = {k: v for k, v in (options or {}).items() if k not in defaults or not _same(v, defaults[k])}
    precision = check_precision(precision)
    if precision is not None and precision != default_precision(factory):
        changed["precision"] = precision
    if not changed:
        return None
    blob = json.dumps(changed, sort_keys=True, separators=(",", ":"), default=str)
    return "model" + hashlib.sha256(blob.encode()).hexdigest()[:8]
