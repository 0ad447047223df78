"""User-facing errors: one clear message naming the case and the fix, never a traceback."""

from __future__ import annotations


class CTBenchError(Exception):
    """An error the user can cause and fix (bad path, bad file, unknown name, missing column).

    The CLI prints its message alone, without a traceback. Messages should name the offending
    case or file and say what to do about it.
    """


class CaseError(CTBenchError):
    """A failure tied to one case of a dataset; multi-case runs record it and go on."""

    def __init__(self, case_id: str, message: str) -> None:
        super().__init__(f"case {case_id!r}: {message}")
        self.case_id = case_id
        self.reason = message
