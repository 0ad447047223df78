"""Task options: from command-line flags to task constructor keywords, and the options tag.

Each category declares its options (:class:`ctbench.task.TaskOption`); nothing here knows any
category's options by name. A run carries the options the user gave (``RunConfig.task_options``),
the task resolves the rest (defaults, environment), and a task whose
:meth:`~ctbench.task.Task.probe_settings` differ from their defaults gets an ``opts<8 hex>`` tag
that keeps its study and result folder apart.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .datasets import TaskSpec
from .devices import resolve_device
from .errors import CTBenchError
from .registry import TASKS
from .run_config import RunConfig
from .task import Task, TaskOption


def declared(task_cls: type[Task]) -> dict[str, TaskOption]:
    """The options ``task_cls`` declares, by name."""
    return {o.name: o for o in task_cls.options}


def parse_flags(task_cls: type[Task], args: list[str]) -> dict[str, Any]:
    """``--name value`` / ``--name=value`` pairs left over on the command line -> option values,
    for the options ``task_cls`` declares; anything else is a CTBenchError naming the flag and
    the flags this category takes."""
    by_flag = {o.flag: o for o in task_cls.options}
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        flag, _, value = args[i].partition("=")
        option = by_flag.get(flag)
        if option is None:
            takers = ", ".join(categories_taking(flag)) or "no registered"
            raise CTBenchError(f"{flag} applies only to {takers} tasks, not to {task_cls.category} tasks (options "
                               f"of this category: {', '.join(by_flag) or 'none'}; see `ctbench tasks`)")
        if not value:
            if i + 1 >= len(args):
                raise CTBenchError(f"{flag} needs a value")
            i += 1
            value = args[i]
        out[option.name] = option.parse(value)
        i += 1
    return out


def task_kwargs(task_cls: type[Task], spec: TaskSpec, cfg: RunConfig) -> dict[str, Any]:
    """Constructor keywords for ``task_cls`` from the run: its given ``task_options`` and, for a
    task that takes a device, ``cfg.device`` unless ``auto`` (the task then falls back to its
    own default). An option the category does not declare is a user error naming its flag."""
    options = declared(task_cls)
    kwargs: dict[str, Any] = {}
    for key, value in cfg.task_options.items():
        if key not in options:
            flag = TaskOption(key, str, None, "").flag
            takers = ", ".join(categories_taking(flag)) or "no registered"
            raise CTBenchError(f"{flag} applies only to {takers} tasks; task {spec.name!r} is a "
                               f"{spec.category} task")
        kwargs[key] = value
    if task_cls.takes_device and cfg.device != "auto":
        kwargs["device"] = resolve_device(cfg.device)
    return kwargs


def categories_taking(flag: str) -> list[str]:
    """Registered task categories that declare ``flag`` (for error messages only)."""
    out = []
    for name in TASKS.names():
        try:
            if any(o.flag == flag for o in TASKS.get(name).options):
                out.append(name)
        except CTBenchError:  # a broken third-party category must not hide the real error
            continue
    return out


def options_tag(task: Task) -> str | None:
    """``opts<8 hex>``: a short hash of ``task.probe_settings()`` (sorted JSON), or ``None`` when
    they equal its defaults, so default runs keep their study name and result folder."""
    settings = task.probe_settings()
    if settings == task.default_probe_settings():
        return None
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return "opts" + hashlib.sha256(blob.encode()).hexdigest()[:8]
