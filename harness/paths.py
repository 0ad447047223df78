"""Where ctbench keeps things on disk (``$CTBENCH_HOME``, default ``~/.cache/ctbench``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of weights/, features/, datasets/, studies/ and results/."""
    return Path(os.environ.get("CTBENCH_HOME", "~/.cache/ctbench")).expanduser()
