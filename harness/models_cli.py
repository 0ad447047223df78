"""``ctbench models``: every registered model's card, grouped (the VoxelFM paper's five, newer open
models, baselines and references, plugins), as a terminal table, plain lines, JSON or the Markdown
table of ``docs/models.md``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import CTBenchError
from .plain_text import escape, print_whole

#: card ``group`` -> heading, in listing order
GROUPS = {
    "paper": "The VoxelFM paper's five",
    "newer": "Newer open models",
    "baseline": "Baselines and references (no weights)",
    "other": "Other models (plugins)",
}
HEADER = ("name", "params", "emb", "tokens", "supervision", "licence", "weights access", "native input",
          "weights", "parity")


def card_rows(registry: Any) -> list[dict]:
    """One dict per registered model (its card as JSON plus ``access`` and ``parity_status``), in
    group order; a plugin whose card cannot be read is one ``{"name", "error"}`` row."""
    rows = []
    for name in registry.names():
        try:
            card = registry.get(name).card
        except CTBenchError as e:
            rows.append({"name": name, "group": "other", "error": str(e)})
            continue
        row = {"name": name, **card.model_dump(mode="json")}
        rows.append({**row, "access": card.access_text(), "parity_status": parity_text(row.get("parity"))})
    order = list(GROUPS)
    return sorted(rows, key=lambda r: order.index(r["group"]))


def grouped(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """``rows`` split by group, as (heading, rows) in listing order, empty groups left out."""
    return [(title, [r for r in rows if r["group"] == g]) for g, title in GROUPS.items()
            if any(r["group"] == g for r in rows)]


def parity_text(parity: dict | None, short: bool = False) -> str:
    """A card's reference-parity facts in a few words: "matches REFERENCE@VERSION (rel <= TOL,
    checked DATE)" (``short``: "matches @VERSION, rel <= TOL"), or "not checked"."""
    if not parity:
        return "not checked"
    version = parity["reference_version"]
    if len(version) == 40 and all(c in "0123456789abcdef" for c in version):
        version = version[:7]  # a commit sha
    tol = f"{parity['tolerance']:.0e}"
    if short:
        return f"matches @{version}, rel <= {tol}"
    return f"matches {parity['reference']}@{version} (rel <= {tol}, checked {parity['checked']})"


def model_row(r: dict, short: bool = True) -> list[str]:
    """The :data:`HEADER` cells of one row; ``short`` cuts a long native input description and
    names only the reference's version (terminal tables)."""
    if "error" in r:
        return [r["name"], "broken (see below)", *[""] * (len(HEADER) - 2)]
    inp, w = r["input"], r["weights"]
    size = inp["spatial_size"] if isinstance(inp["spatial_size"], str) else "x".join(map(str, inp["spatial_size"]))
    source = (f"{w['hub_repo']}/{w['filename']}" if w["hub_repo"]
              else "none (no weights)" if w.get("format") == "none" else "local file")
    return [r["name"], f"{r['parameters'] / 1e6:.1f}M", str(r["embedding_dim"]), str(r["token_dim"] or "-"),
            r["supervision"], r["licence"], r["access"], _short(size) if short else size, source,
            parity_text(r.get("parity"), short)]


def model_lines(r: dict) -> list[str]:
    """One row as plain lines: a summary, then licence, access, input, weights and parity."""
    name, params, emb, tokens, supervision, licence, access, size, source, parity = model_row(r, short=False)
    if "error" in r:
        return [f"{name}: {params}"]
    return [f"{name}: {params} parameters, embedding {emb}, tokens {tokens}, supervision {supervision}",
            f"  licence: {licence}", f"  weights access: {access}", f"  native input: {size}",
            f"  weights: {source}", f"  parity: {parity}"]


def print_listing(console: Console, rows: list[dict]) -> None:
    """A table per group on a terminal; plain lines under ``# heading`` when piped."""
    if not console.is_terminal:  # piped: a plain list, nothing folded or cut
        text = "\n\n".join("\n".join([f"# {title}", *(ln for r in group for ln in model_lines(r))])
                           for title, group in grouped(rows))
        print_whole(console, text, markup=False)
        return
    for title, group in grouped(rows):
        table = Table(title=title)
        for col in HEADER:
            table.add_column(col, overflow="fold")
        for r in group:
            table.add_row(*map(escape, model_row(r)))
        console.print(table)


def markdown_table(rows: list[dict]) -> str:
    """The table of ``docs/models.md``: one section per group with architecture, input spec,
    parameters, licence and access, pre-training data and parity status of every model."""
    out = []
    for title, group in grouped(rows):
        out += [f"### {title}", "",
                "| model | architecture | input | parameters | licence (weights access) | pre-training data | parity |",
                "|---|---|---|---|---|---|---|"]
        for r in group:
            if "error" in r:
                continue
            inp = r["input"]
            size = inp["spatial_size"] if isinstance(inp["spatial_size"], str) else "x".join(map(str, inp["spatial_size"]))
            spacing = inp["spacing_mm"] if isinstance(inp["spacing_mm"], str) else " x ".join(f"{v:g}" for v in inp["spacing_mm"])
            window = "" if inp["hu_window"] is None else f"; HU [{inp['hu_window'][0]:g}, {inp['hu_window'][1]:g}]"
            cells = [f"`{r['name']}` ({r['title']})", r["architecture"],
                     f"{inp['orientation']}, {spacing} mm, {size}{window}",
                     f"{r['parameters'] / 1e6:.1f}M" if r["parameters"] else "0",
                     f"{r['licence']} ({r['access']})", ", ".join(r["pretraining_datasets"]) or "-",
                     parity_text(r.get("parity"))]
            out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
