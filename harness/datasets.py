"""Datasets: a manifest (CSV/Parquet) plus a small dataset card with task definitions.

Images stay where the user keeps them; relative paths in the manifest are resolved against the
manifest's folder.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import CTBenchError
from .splits import SPLITS, split_hash

Category = Literal[
    "classification",
    "regression",
    "survival",
    "retrieval",
    "localisation",
    "segmentation",
    "report-generation",
]
CARD_FILE = "dataset.json"
MANIFEST_FILE = "manifest.csv"
REQUIRED_COLUMNS = ("case_id", "patient_id", "image", "split")


class TaskSpec(BaseModel):
    """One task on a dataset: category, target columns, main metric and a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    category: Category
    targets: tuple[str, ...] = Field(min_length=1)
    main_metric: str
    version: str = "1"
    kind: Literal["binary", "multiclass", "multilabel"] | None = None
    horizons: tuple[float, ...] = ()
    description: str = ""
    label_names: dict[int, str] = Field(default_factory=dict)  # segmentation: label id -> name


class DatasetCard(BaseModel):
    """Name, version, licence and task definitions of a dataset.

    ``collections``: the public names its images were published under (its own first, then the
    collections holding them, e.g. LUNA16 -> LUNA16, LIDC-IDRI, TCIA, IDC). A model pre-trained
    on any of them has seen these images: leaderboards flag it as contaminated.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    licence: str
    description: str = ""
    source: str = ""
    collections: tuple[str, ...] = ()
    tasks: tuple[TaskSpec, ...]

    def task(self, name: str) -> TaskSpec:
        """The task called ``name``, or a clear error with the closest names."""
        names = [t.name for t in self.tasks]
        for t in self.tasks:
            if t.name == name:
                return t
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CTBenchError(
            f"unknown task {name!r} on dataset {self.name!r}.{hint} Available: {', '.join(names)}"
        )


@dataclass
class Dataset:
    """A loaded dataset: its card, its manifest and the folder relative paths resolve from."""

    card: DatasetCard
    manifest: pd.DataFrame
    root: Path

    def resolve(self, value: str) -> Path:
        """Absolute path of a manifest path entry (``image``, ``mask``)."""
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else self.root / p

    def split_hash(self) -> str:
        return split_hash(self.manifest["case_id"], self.manifest["split"])

    def require_columns(self, columns: tuple[str, ...] | list[str]) -> None:
        missing = [c for c in columns if c not in self.manifest.columns]
        if missing:
            raise CTBenchError(
                f"dataset {self.card.name!r}: manifest lacks column(s) {', '.join(missing)}; "
                f"add them to {self.root / MANIFEST_FILE} or pick another task"
            )


def write_card(card: DatasetCard, folder: Path) -> Path:
    """Write ``dataset.json`` atomically."""
    from .atomic import atomic_write_text

    path = Path(folder) / CARD_FILE
    atomic_write_text(path, json.dumps(card.model_dump(mode="json"), indent=2))
    return path


def load_dataset_folder(folder: Path) -> Dataset:
    """Load a dataset folder holding ``dataset.json`` and ``manifest.csv`` (or ``.parquet``)."""
    folder = Path(folder).expanduser()
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise CTBenchError(f"{folder} is not a ctbench dataset: {CARD_FILE} is missing")
    try:
        card = DatasetCard.model_validate_json(card_path.read_text())
    except ValidationError as e:
        first = e.errors()[0]
        raise CTBenchError(
            f"{card_path}: invalid dataset card at {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    manifest_path, manifest = _read_manifest(folder)
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise CTBenchError(f"{folder}: manifest lacks required column(s) {', '.join(missing)}")
    bad = sorted(set(manifest["split"].astype(str)) - set(SPLITS))
    if bad:
        raise CTBenchError(f"{folder}: unknown split value(s) {bad}; use {', '.join(SPLITS)}")
    if manifest["case_id"].duplicated().any():
        dup = manifest.loc[manifest["case_id"].duplicated(), "case_id"].iloc[0]
        raise CTBenchError(f"{folder}: case_id {dup!r} appears more than once in the manifest")
    manifest["case_id"] = manifest["case_id"].astype(str)
    manifest["patient_id"] = manifest["patient_id"].astype(str)
    check_patient_splits(manifest, manifest_path)
    return Dataset(card=card, manifest=manifest, root=folder)


def check_patient_splits(manifest: pd.DataFrame, path: Path) -> None:
    """Refuse a manifest in which a patient spans several splits: scans of one patient in train
    and test leak the patient into the evaluation (splits must be patient-level)."""
    n_splits = manifest.groupby("patient_id", sort=True)["split"].nunique()
    leaking = n_splits[n_splits > 1]
    if len(leaking):
        pid = leaking.index[0]
        present = set(manifest.loc[manifest["patient_id"] == pid, "split"].astype(str))
        splits = [s for s in SPLITS if s in present]
        more = f" ({len(leaking) - 1} more patient(s) likewise)" if len(leaking) > 1 else ""
        raise CTBenchError(
            f"{path}: patient_id {pid!r} appears in splits {', '.join(splits)}{more}; every scan of a "
            f"patient must be in one split (patient-level splits). Put all of that patient's rows in "
            f"one split, or re-split with ctbench.splits.make_splits"
        )


def _read_manifest(folder: Path) -> tuple[Path, pd.DataFrame]:
    csv, parquet = folder / MANIFEST_FILE, folder / "manifest.parquet"
    if csv.is_file():
        return csv, pd.read_csv(csv)
    if parquet.is_file():
        return parquet, pd.read_parquet(parquet)
    raise CTBenchError(f"{folder}: no {MANIFEST_FILE} or manifest.parquet found")


BUILTIN_DATASETS = {"phantom": "seeded synthetic CT phantoms (generated on first use, offline)"}


def open_dataset(name_or_path: str, seed: int = 0, progress=None) -> Dataset:
    """A built-in dataset by name (``phantom``) or a prepared dataset folder by path."""
    if name_or_path == "phantom":
        from .phantom import ensure_phantom

        return load_dataset_folder(ensure_phantom(seed=seed, progress=progress))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return load_dataset_folder(path)
    close = difflib.get_close_matches(name_or_path, list(BUILTIN_DATASETS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise CTBenchError(
        f"unknown dataset {name_or_path!r}.{hint} Use a built-in name "
        f"({', '.join(BUILTIN_DATASETS)}) or the folder of a prepared dataset"
    )
