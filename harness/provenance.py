"""Where a result came from: ctbench version, git sha and the software environment."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Bumped whenever a result's numbers would change for the same inputs; results of different
# protocol versions are never ranked together. 2: dense heads refit with several seeds (averaged);
# multi-label/multi-class macro metrics skip labels with one class instead of becoming NaN.
# 3: dimension-free penalties and PCA size; nested label-efficiency subsets of train and val;
# deep-Cox and report heads refit with several seeds; survival horizons from training events;
# failed fits fail their trial; exact trial budgets; one retrieval tie rule; segmentation
# false-positive metrics (docs/protocol.md).
PROTOCOL_VERSION = "3"


def ctbench_version() -> str:
    try:
        return version("ctbench")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the source tree ctbench runs from, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return sha + ("-dirty" if dirty else "")


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
