"""``ctbench results``: the result-file schema and a check of result folders against it.

- ``ctbench results schema [--out FILE]``: print (or write) the JSON Schema of ``result.json``
  (the committed copy is ``docs/result.schema.json``).
- ``ctbench results validate PATH``: read, migrate and validate every ``result.json`` under
  ``PATH`` (or that one file); the first invalid file stops with its name and field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

__all__ = ["app", "schema_text"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The result-file JSON Schema; validate result folders against it.")


def schema_text() -> str:
    """The JSON Schema of a current result file, as committed in ``docs/result.schema.json``."""
    from .result_schema import json_schema

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


@app.command("schema")
def schema_command(
    out: Optional[Path] = typer.Option(None, "--out", help="write the schema to this file instead of printing it"),
) -> None:
    """Print the JSON Schema of result.json (version-stamped by its schema_version field)."""
    text = schema_text()
    if out is None:
        sys.stdout.write(text)
        return
    from .atomic import atomic_write_text
    from .errors import CTBenchError

    if out.is_dir():
        raise CTBenchError(f"--out {out} is a folder; give a file name such as {out / 'result.schema.json'}")
    if not out.parent.is_dir():
        raise CTBenchError(f"--out {out}: folder {out.parent} does not exist; create it first")
    atomic_write_text(out, text)
    typer.echo(f"wrote {out}", err=True)


@app.command("validate")
def validate_command(path: Path = typer.Argument(..., help="a results folder or one result.json")) -> None:
    """Validate every result.json under PATH against the current schema (older files migrated)."""
    from .result_files import read_results

    results = read_results(path)
    migrated = sum(r.migrated_from_schema is not None for _, r in results)
    typer.echo(f"{len(results)} valid result file(s) under {path}"
               + (f"; {migrated} from an older schema (upgraded when read)" if migrated else ""))
