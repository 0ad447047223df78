"""Where a result came from: ctbench version, git sha and the software environment."""

from __future__ import annotations

import json
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import Distribution, EntryPoint, PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# Bumped whenever a result's numbers would change for the same inputs; results of different
# protocol versions are never ranked together. 2: dense heads refit with several seeds (averaged);
# multi-label/multi-class macro metrics skip labels with one class instead of becoming NaN.
# 3: dimension-free penalties and PCA size; nested label-efficiency subsets of train and val;
# deep-Cox and report heads refit with several seeds; survival horizons from training events;
# failed fits fail their trial; exact trial budgets; one retrieval tie rule; segmentation
# false-positive metrics (docs/protocol.md).
PROTOCOL_VERSION = "4"


def ctbench_version() -> str:
    try:
        return version("ctbench")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the source tree ctbench runs from, when it is a git checkout."""
    return checkout_commit(Path(__file__).resolve().parent)


def checkout_commit(folder: Path) -> str | None:
    """``HEAD`` of the git checkout holding ``folder`` (``-dirty`` when tracked files were
    modified), or None when it is not one (or git is missing)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sha + ("-dirty" if dirty else "")


BUILTIN_PACKAGE = "ctbench"
_BUILTIN_MODULES = ("ctbench", "voxelfm")  # top-level imports of the ctbench distribution


def adapter_info(obj: Any, entry_point: EntryPoint | None = None) -> dict[str, str | None]:
    """``model.adapter`` of a result: the module that implements a model and the distribution
    it comes from (``package``, ``version``) and, where that distribution was installed from a
    git checkout, its ``commit``, so a result of a third-party adapter names the code that
    produced it. ``entry_point``: how a plugin registered the model (None for built-ins and
    models registered in code)."""
    module = entry_point.module if entry_point is not None else getattr(obj, "__module__", None)
    top = (module or "").split(".")[0]
    dist = getattr(entry_point, "dist", None) if entry_point is not None else None
    if dist is None and top in _BUILTIN_MODULES:
        return {"module": module, "package": BUILTIN_PACKAGE, "version": ctbench_version(), "commit": git_sha()}
    if dist is None and top:
        dist = _distribution_of(top)
    if dist is None:
        return {"module": module, "package": None, "version": None, "commit": None}
    name = _metadata_name(dist)
    if name == BUILTIN_PACKAGE:
        return {"module": module, "package": name, "version": ctbench_version(), "commit": git_sha()}
    return {"module": module, "package": name, "version": dist.version, "commit": distribution_commit(dist)}


def distribution_commit(dist: Distribution) -> str | None:
    """The git commit an installed distribution was built from: ``vcs_info.commit_id`` of its
    PEP 610 ``direct_url.json`` (``pip install git+https://...``), or, for an editable install
    (``pip install -e DIR``), the checkout ``DIR`` is in now. None otherwise: a wheel from an
    index, or a copy of a local folder (the folder may have moved on since it was installed)."""
    try:
        info = json.loads(dist.read_text("direct_url.json") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict):
        commit = vcs.get("commit_id")
        return str(commit) if vcs.get("vcs") == "git" and commit else None
    editable = isinstance(info.get("dir_info"), dict) and info["dir_info"].get("editable") is True
    url = urlparse(str(info.get("url", "")))
    if editable and url.scheme == "file":
        folder = Path(unquote(url.path))
        return checkout_commit(folder) if folder.is_dir() else None
    return None


def _distribution_of(top_level: str) -> Distribution | None:
    """The installed distribution providing import package ``top_level``, if exactly one does."""
    names = packages_distributions().get(top_level, [])
    if len(set(names)) != 1:
        return None
    try:
        return Distribution.from_name(names[0])
    except PackageNotFoundError:
        return None


def _metadata_name(dist: Distribution) -> str | None:
    try:
        return dist.metadata["Name"]
    except Exception:  # malformed metadata of a third-party package
        return None


def environment(device: str) -> dict[str, str]:
    """Versions of the libraries that shape a result, plus the device it ran on."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "device": device}
    for pkg in ("torch", "monai", "scikit-learn", "optuna", "numpy", "lifelines", "timm", "open_clip_torch"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    if device.startswith("cuda"):
        import torch

        env["gpu"] = torch.cuda.get_device_name()
    return env
