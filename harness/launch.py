"""Running a Typer app as a console script: exit codes, error messages and ``--debug``.

Exit codes of every ``ctbench`` command:

- ``0``: the command did what was asked;
- ``1``: it ran but failed (a failed ``bench`` cell, a failed ``check-adapter`` check, a case
  ``extract`` could not extract), or an internal error (a bug: one ``internal error:`` line);
- ``2``: a user error: bad usage (click's convention: unknown command or flag, missing or
  invalid option) or a :class:`~ctbench.errors.CTBenchError` / file-system refusal (bad path,
  unknown name, unreadable file, folder not writable): one message naming what to fix;
- ``130``: interrupted (Ctrl-C); finished work is kept.

No Python traceback is shown unless ``--debug`` is given (anywhere on the command line) or
``CTBENCH_DEBUG=1`` is set; then every error also prints its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any, NoReturn, Optional, Sequence

import typer
from rich.console import Console

from .errors import CTBenchError

__all__ = ["DEBUG_ENV", "DEBUG_FLAG", "debug_enabled", "set_debug", "run_app"]

DEBUG_FLAG = "--debug"
DEBUG_ENV = "CTBENCH_DEBUG"
INTERRUPTED = 130
#: file-system refusals the user fixes (permissions, read-only or full disk, a file in the way)
USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                         errno.EISDIR})

_debug = False
err = Console(stderr=True)


def set_debug(on: bool = True) -> None:
    """Show tracebacks for this process (the ``--debug`` flag)."""
    global _debug
    _debug = on


def debug_enabled() -> bool:
    """``--debug`` was given or ``CTBENCH_DEBUG`` is set to a true value."""
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _take_debug_flag(args: list[str]) -> list[str]:
    """``args`` without ``--debug`` (before any ``--``), turning debug on if it was there."""
    end = args.index("--") if "--" in args else len(args)
    kept = [a for a in args[:end] if a != DEBUG_FLAG]
    if len(kept) != end:
        set_debug(True)
    return kept + args[end:]


def _click_modules() -> list[Any]:
    """The exception modules of typer's vendored click (typer >= 0.2x) and of click itself."""
    mods = []
    try:
        from typer._click import exceptions as vendored

        mods.append(vendored)
    except ImportError:  # older typer: click's own classes
        pass
    try:
        from click import exceptions as click_exceptions

        mods.append(click_exceptions)
    except ImportError:
        pass
    return mods


def _classes(name: str, *extra: type) -> tuple[type, ...]:
    found = [getattr(m, name) for m in _click_modules() if isinstance(getattr(m, name, None), type)]
    return tuple(dict.fromkeys([*extra, *found]))


def _show_traceback(e: BaseException) -> None:
    if debug_enabled():
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)


def _interrupted() -> int:
    err.print("interrupted: run the same command again to resume (finished work is kept: cached "
              "features, checkpoints)")
    return INTERRUPTED


def _user_os_error(e: OSError) -> bool:
    return e.errno in USER_ERRNOS


def _handle(e: BaseException) -> int:
    """Print ``e`` the way a user should see it; return the exit code."""
    if isinstance(e, KeyboardInterrupt):
        return _interrupted()
    if isinstance(e, _classes("Exit", typer.Exit)):
        code = getattr(e, "exit_code", 1)
        return _interrupted() if code == INTERRUPTED else int(code)
    _show_traceback(e)
    if isinstance(e, CTBenchError):
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    if isinstance(e, _classes("ClickException")):
        e.show()  # type: ignore[attr-defined]  # usage, "Try ... --help", and the error
        return int(getattr(e, "exit_code", 2))
    if isinstance(e, _classes("Abort", typer.Abort)):
        err.print("Aborted!")
        return 1
    if isinstance(e, OSError) and _user_os_error(e):
        where = f": {e.filename}" if e.filename else ""
        err.print(f"[bold red]error:[/] {e.strerror or e}{where}; check that this path is a folder you can "
                  f"write (permissions, free space), or choose another with --out or $CTBENCH_HOME",
                  highlight=False, soft_wrap=True)
        return 2
    hint = "" if debug_enabled() else f" (rerun with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback; please report it)"
    message = " ".join(str(e).split())
    err.print(f"internal error: {type(e).__name__}: {message}{hint}", highlight=False, soft_wrap=True, markup=False)
    return 1


def _exit_code(rv: Any) -> int:
    """With ``standalone_mode=False`` typer returns the code of ``typer.Exit`` instead of raising
    it; a command itself returns ``None``."""
    if isinstance(rv, int) and not isinstance(rv, bool):
        return _interrupted() if rv == INTERRUPTED else rv
    return 0


def run_app(typer_app: typer.Typer, args: Optional[Sequence[str]] = None) -> NoReturn:
    """Run ``typer_app`` on ``args`` (default ``sys.argv[1:]``) and exit with the code described
    in this module's docstring."""
    set_debug(False)  # per invocation: only this command line (or the environment) turns it on
    argv = _take_debug_flag(list(sys.argv[1:] if args is None else args))
    try:
        rv = typer_app(args=argv, standalone_mode=False)
    except SystemExit:
        raise
    except (Exception, KeyboardInterrupt) as e:
        code = _handle(e)
    else:
        code = _exit_code(rv)
    raise SystemExit(code)
