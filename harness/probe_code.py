"""A fingerprint of the code that defines a task's probe, for study names and result files.

A study resumed after the probe code changed would mix trials of two different probes, so the
study name carries this fingerprint: the source of the shared engine and probe families, of
every class of the task (its module and its bases' modules) and of the modules it lists in
``ProbeTask.probe_modules``.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from .task import ProbeTask

SHARED_MODULES = ("ctbench.engine", "ctbench.probe_fit", "ctbench.probes", "ctbench.probe_attentive", "ctbench.views",
                  "ctbench.family_task", "ctbench.task", "ctbench.bootstrap")


def probe_modules(task: ProbeTask) -> list[str]:
    """Sorted names of the modules whose source defines ``task``'s probe."""
    own = {cls.__module__ for cls in type(task).__mro__ if cls.__module__ not in ("builtins", "abc")}
    return sorted(own | set(SHARED_MODULES) | set(task.probe_modules))


def probe_code_hash(task: ProbeTask) -> str:
    """16 hex digits of sha256 over the names and source bytes of :func:`probe_modules`."""
    digest = hashlib.sha256()
    for name in probe_modules(task):
        module = importlib.import_module(name)
        source = Path(module.__file__).read_bytes() if getattr(module, "__file__", None) else b""
        digest.update(name.encode() + b"\0" + source + b"\0")
    return digest.hexdigest()[:16]
