"""``ctbench models`` shows each model's group, weights access and reference-parity status: in
--json, piped plain lines and the terminal table, from the card (parity "not checked" without
facts); ``docs/models.md`` holds the same cards' Markdown table."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from pathlib import Path

from ctbench import cli, models_cli
from ctbench.adapters.voxelfm import CARD as VOXELFM
from tests.cli_helpers import run_cli


def _expected(card) -> str:
    p = card.parity
    version = p.reference_version[:7] if len(p.reference_version) == 40 else p.reference_version
    return f"matches {p.reference}@{version} (rel <= {p.tolerance:.0e}, checked {p.checked})"


def _block(out: str, name: str) -> list[str]:
    """The indented lines under ``name: ...`` in the plain listing."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{name}: "))
    block = []
    for ln in lines[start + 1 :]:
        if not ln.startswith("  "):
            break
        block.append(ln)
    return block


def test_json_rows_carry_parity_facts_and_status(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    voxelfm = rows["voxelfm"]
    assert voxelfm["parity"]["fixture"] == "voxelfm"
    assert voxelfm["parity"]["reference_version"] == VOXELFM.parity.reference_version
    assert voxelfm["parity_status"] == _expected(VOXELFM)
    assert voxelfm["parity_status"].startswith("matches github.com/rmaguado/VoxelFM@fba41a3 (rel <= 1e-05")
    assert rows["test-histogram"]["parity"] is None
    assert rows["test-histogram"]["parity_status"] == "not checked"


def test_plain_listing_has_a_parity_line_per_model(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0
    assert f"  parity: {_expected(VOXELFM)}" in _block(out, "voxelfm")
    assert "  parity: not checked" in _block(out, "test-histogram")


def test_terminal_table_has_a_short_parity_column(monkeypatch, capsys) -> None:
    table = Console(force_terminal=True, width=400, record=True)
    monkeypatch.setattr(cli, "console", table)
    code, _, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0
    text = table.export_text()
    assert "parity" in text.splitlines()[2]  # the header row, under the title and the top rule
    row = next(ln for ln in text.splitlines() if "│ voxelfm " in ln)
    assert "matches @fba41a3, rel <= 1e-05" in row
    row = next(ln for ln in text.splitlines() if "│ test-histogram " in ln)
    assert "not checked" in row


@pytest.mark.parametrize("version, shown", [("a" * 40, "aaaaaaa"), ("0.0.6", "0.0.6")])
def test_parity_text_shortens_commit_shas_only(version: str, shown: str) -> None:
    facts = {"reference": "ref", "reference_version": version, "tolerance": 1e-4, "checked": "2026-01-02"}
    assert models_cli.parity_text(facts) == f"matches ref@{shown} (rel <= 1e-04, checked 2026-01-02)"
    assert models_cli.parity_text(facts, short=True) == f"matches @{shown}, rel <= 1e-04"
    assert models_cli.parity_text(None) == "not checked"


def test_listing_groups_models_and_shows_access(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0
    headings = [ln for ln in out.splitlines() if ln.startswith("# ")]
    assert headings == [f"# {t}" for t in models_cli.GROUPS.values()]  # the suite registers plugins too
    sections = {h: out.split(h + "\n", 1)[1].split("\n# ", 1)[0] for h in headings}
    paper, newer, baselines, other = sections.values()
    for name in ("voxelfm", "merlin", "ct-clip", "m3d", "radfm"):
        assert f"\n{name}: " in "\n" + paper
    assert "\nct-fm: " in "\n" + newer
    for name in ("hu-histogram", "thumbnail", "oracle", "chance"):
        assert f"\n{name}: " in "\n" + baselines
    assert "\ntest-histogram: " in "\n" + other
    assert "  weights access: gated, non-commercial" in _block(out, "ct-clip")
    assert "  weights access: public" in _block(out, "voxelfm")
    assert "  weights access: no weights" in _block(out, "thumbnail")


def test_docs_models_table_is_the_cards_table(monkeypatch, capsys) -> None:
    """docs/models.md is regenerated with ``ctbench models --markdown``; built-in rows only."""
    code, out, _ = run_cli(monkeypatch, capsys, "models", "--markdown")
    assert code == 0
    built_in = out.split("### " + models_cli.GROUPS["other"])[0].rstrip()
    doc = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    assert built_in in doc, "docs/models.md is stale: regenerate its table with `ctbench models --markdown`"
    assert "| `ct-clip` (" in built_in and "(gated, non-commercial)" in built_in


def test_a_baseline_card_must_say_it_has_no_weights() -> None:
    from ctbench.adapters.thumbnail import CARD
    from ctbench.card import ModelCard

    with pytest.raises(ValueError, match="weights_access is 'none' exactly when"):
        ModelCard.model_validate({**CARD.model_dump(), "weights_access": "public"})
