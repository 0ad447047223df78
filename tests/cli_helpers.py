"""Running the ``ctbench`` command line in-process, as a user would type it."""

from __future__ import annotations

import sys

from ctbench.cli import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``ctbench *args``: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ctbench", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err
