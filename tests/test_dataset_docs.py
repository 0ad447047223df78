"""The examples of docs/datasets.md are complete datasets: each is built into a folder with
generated NIfTI volumes (and label maps) and must load and validate clean."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctbench.datasets import CARD_FILE, MANIFEST_FILE, load_dataset_folder
from ctbench.validate import validate_folder

DOC = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
MARKER = re.compile(r"<!-- example: ([a-z-]+) -->")
BLOCK = re.compile(r"```(json|csv)\n(.*?)```", re.S)
CATEGORIES = {"classification", "regression", "survival", "retrieval", "localisation", "segmentation",
              "report-generation"}
SHAPE = (12, 12, 12)
# a scan stored left-posterior-first (as ITK-written files often are): voxel centres span
# -88 ... 88 mm on every world axis
AFFINE = np.array([[-16.0, 0, 0, 88], [0, -16.0, 0, 88], [0, 0, 16.0, -88], [0, 0, 0, 1]])


def examples() -> dict[str, tuple[str, str]]:
    """``{name: (card JSON, manifest CSV)}``: after each marker, the next json and csv blocks."""
    text = DOC.read_text(encoding="utf-8")
    marks = list(MARKER.finditer(text))
    out = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        blocks = dict((kind, body) for kind, body in reversed(BLOCK.findall(text, mark.end(), end)))
        assert set(blocks) == {"json", "csv"}, f"example {mark.group(1)!r} needs a json and a csv block"
        out[mark.group(1)] = (blocks["json"], blocks["csv"])
    return out


EXAMPLES = examples()


def build(folder: Path, card_text: str, manifest_text: str) -> Path:
    """Write the card and manifest, and a volume (and label map) for every path they name."""
    folder.mkdir(parents=True)
    (folder / CARD_FILE).write_text(card_text, encoding="utf-8")
    (folder / MANIFEST_FILE).write_text(manifest_text, encoding="utf-8")
    card = json.loads(card_text)
    rows = pd.read_csv(io.StringIO(manifest_text), dtype=str)
    rng = np.random.default_rng(0)
    mask_columns = [t["targets"][0] for t in card["tasks"] if t["category"] == "segmentation"]
    labels = [int(k) for t in card["tasks"] for k in t.get("label_names", {})] or [1]
    for row in rows.itertuples(index=False):
        image = folder / row.image
        image.parent.mkdir(parents=True, exist_ok=True)
        hu = rng.uniform(-1000, 1000, SHAPE).astype(np.int16)
        nib.Nifti1Image(hu, AFFINE).to_filename(image)
        for col in mask_columns:
            value = getattr(row, col)
            if isinstance(value, str) and value:
                mask = folder / value
                mask.parent.mkdir(parents=True, exist_ok=True)
                nib.Nifti1Image(rng.choice([0, *labels], SHAPE).astype(np.uint8), AFFINE).to_filename(mask)
    return folder


def test_every_category_and_classification_kind_has_an_example() -> None:
    cats = {t["category"] for card, _ in EXAMPLES.values() for t in json.loads(card)["tasks"]}
    assert cats == CATEGORIES
    kinds = {t.get("kind") for card, _ in EXAMPLES.values() for t in json.loads(card)["tasks"]
             if t["category"] == "classification"}
    assert kinds == {"binary", "multiclass", "multilabel"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_loads_and_validates_clean(tmp_path: Path, name: str) -> None:
    card_text, manifest_text = EXAMPLES[name]
    folder = build(tmp_path / name, card_text, manifest_text)
    dataset = load_dataset_folder(folder)
    assert dataset.card.name == json.loads(card_text)["name"]
    report = validate_folder(folder)
    assert report.ok, [p.message for p in report.problems]
    assert not report.warnings, [w.message for w in report.warnings]
    assert {c.name for c in report.checks} >= {"card", "manifest", "splits", "images"}
    assert all(f"task {t.name}" in {c.name for c in report.checks} for t in dataset.card.tasks)
