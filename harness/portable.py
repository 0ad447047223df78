"""Paths as a shared file may record them: never an absolute path of the machine that wrote it.

Result folders and published boards travel (copied to a colleague, uploaded as a site), so a
local path in them is both noise and a leak of the writer's disk layout. One rule throughout:
a path under ctbench's home is written ``$CTBENCH_HOME/<relative path>`` (where it lives is
still clear, e.g. a cached weights file or the default study storage); any other path is
written as its bare name (a weights file is identified by its sha256, a dataset by its card,
version and split hash). Names and values that are not paths are left as they are, and the
conversion is idempotent, so files written before it was introduced can be passed through it
when published.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath
from typing import Any

from .paths import home

HOME_MARK = "$CTBENCH_HOME"
#: an absolute POSIX path inside free text (an error message): not preceded by a word character,
#: ``.``, ``~``, ``:``, ``/`` or ``$``, so ``a/b``, ``../x``, URLs and ``$CTBENCH_HOME/x`` are left alone
_PATH_IN_TEXT = re.compile(r"(?<![\w.~:/$-])/[^\s'\"<>|,;()\[\]{}]+")


def looks_like_path(value: str) -> bool:
    """Whether a recorded value is a path rather than a name (``phantom``, ``auto``, ``random``):
    it holds a separator or starts with ``~`` or ``.``."""
    return ("/" in value or "\\" in value or value.startswith(("~", "."))) and not value.startswith(HOME_MARK)


def portable_path(value: str | PurePath | None, base: Path | None = None) -> str | None:
    """``$CTBENCH_HOME/<rel>`` for a path under ctbench's home, the path relative to ``base``
    (a run's dataset folder) for one inside it, else the path's bare name; a value that is not
    a path (see :func:`looks_like_path`) is returned unchanged."""
    if value is None:
        return None
    text = str(value)
    if not looks_like_path(text):
        return text
    absolute = Path(os.path.abspath(Path(text).expanduser()))  # relative: to the working folder
    for where in _homes():
        if absolute == where:
            return HOME_MARK
        if absolute.is_relative_to(where):
            return f"{HOME_MARK}/{absolute.relative_to(where).as_posix()}"
    if base is not None and absolute.is_relative_to(root := Path(os.path.abspath(base))) and absolute != root:
        return absolute.relative_to(root).as_posix()
    return absolute.name or text.strip("/\\") or "."


def portable_url(url: str | None) -> str | None:
    """A storage URL without its password, a SQLite file's path made portable
    (``sqlite:///$CTBENCH_HOME/studies/optuna.db``); other URLs keep their host and database."""
    if url is None:
        return None
    if url.startswith("sqlite:///"):
        return "sqlite:///" + (portable_path(url[len("sqlite:///"):]) or "")
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def portable_text(text: str, base: Path | None = None) -> str:
    """Free text (a failure reason, a note) with every absolute path in it made portable (a file
    of the dataset folder ``base`` keeps its path inside the dataset, so the reason stays useful)."""
    return _PATH_IN_TEXT.sub(lambda m: portable_path(m.group(0), base) or "", text)


def portable_values(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Options (``--llm /models/lm``, ...) with every string value that is a path made portable."""
    if values is None:
        return None
    return {k: portable_path(v) if isinstance(v, str) else v for k, v in values.items()}


def portable_result(data: dict[str, Any]) -> dict[str, Any]:
    """A result dict (``result.json``) with every local path it records made portable: the run's
    ``config`` (dataset folder, ``--weights`` file, ``--out``, storage URL, path options), the
    weights file, the probe's storage, the task options and per-case failure/warning reasons."""
    out = dict(data)
    dataset = (out.get("config") or {}).get("dataset") if isinstance(out.get("config"), dict) else None
    base = Path(dataset) if isinstance(dataset, str) and Path(dataset).is_absolute() else None
    if isinstance(out.get("config"), dict):
        cfg = dict(out["config"])
        for key in ("dataset", "weights", "out"):
            if isinstance(cfg.get(key), str):
                cfg[key] = portable_path(cfg[key])
        if isinstance(cfg.get("storage"), str):
            cfg["storage"] = portable_url(cfg["storage"])
        if isinstance(cfg.get("task_options"), dict):
            cfg["task_options"] = portable_values(cfg["task_options"])
        out["config"] = cfg
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("weights"), dict):
        weights = dict(model["weights"])
        for key in ("choice", "path"):
            if isinstance(weights.get(key), str):
                weights[key] = portable_path(weights[key])
        out["model"] = {**model, "weights": weights}
    if isinstance(out.get("probe"), dict) and isinstance(out["probe"].get("storage"), str):
        out["probe"] = {**out["probe"], "storage": portable_url(out["probe"]["storage"])}
    if isinstance(out.get("task"), dict) and isinstance(out["task"].get("options"), dict):
        out["task"] = {**out["task"], "options": portable_values(out["task"]["options"])}
    for key in ("failures", "warnings"):
        if isinstance(out.get(key), list):
            out[key] = [{**n, "reason": portable_text(n["reason"], base)} if isinstance(n, dict)
                        and isinstance(n.get("reason"), str) else n for n in out[key]]
    return out


def _homes() -> list[Path]:
    """ctbench's home as given and as resolved (they differ behind a symlink)."""
    given = Path(os.path.abspath(home()))
    try:
        resolved = given.resolve()
    except (OSError, RuntimeError):
        resolved = given
    return list(dict.fromkeys([given, resolved]))
