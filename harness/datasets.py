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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import CTBenchError
from .safe_paths import is_identifier, slugify
from .splits import SPLITS, split_hash

CARD_FILE = "dataset.json"
MANIFEST_FILE = "manifest.csv"
REQUIRED_COLUMNS = ("case_id", "patient_id", "image", "split")
ID_COLUMNS = ("case_id", "patient_id")  # read as text: "007" stays "007", never 7 or 7.0


def _plain_name(value: str) -> str:
    """Card and task names become result folder names: refuse anything but a plain identifier."""
    if not is_identifier(value):
        raise ValueError(
            f"{value!r} is not a plain name; it becomes a result folder name, so use lower-case "
            f"letters, digits, '.', '_' and '-' only (e.g. {slugify(value)!r})"
        )
    return value


class TaskSpec(BaseModel):
    """One task on a dataset: category, target columns, main metric and a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    category: str  # a registered task category (built-in or from a ``ctbench.tasks`` entry point)
    targets: tuple[str, ...] = Field(min_length=1)
    main_metric: str
    version: str = "1"
    kind: Literal["binary", "multiclass", "multilabel"] | None = None
    horizons: tuple[float, ...] = ()
    description: str = ""
    label_names: dict[int, str] = Field(default_factory=dict)  # segmentation: label id -> name

    @field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        return _plain_name(value)

    @field_validator("category")
    @classmethod
    def _registered(cls, value: str) -> str:
        from .registry import TASKS  # names only: no category module is imported

        if value not in TASKS:
            close = difflib.get_close_matches(value, TASKS.names(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown task category {value!r}; {hint}registered: {', '.join(TASKS.names())} "
                             f"(a package adds one through the 'ctbench.tasks' entry point)")
        return value


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

    @field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        return _plain_name(value)

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
    source: Path | None = None  # the manifest file, for messages that tell the user what to fix

    @property
    def manifest_file(self) -> str:
        """The manifest's path as messages name it (``manifest.csv`` when not loaded from disk)."""
        if self.source is not None:
            return str(self.source)
        return str(self.root / MANIFEST_FILE) if self.root is not None else MANIFEST_FILE

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
    card = _read_card(folder / CARD_FILE)
    manifest_path, manifest = _read_manifest(folder)
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise CTBenchError(f"{manifest_path}: manifest lacks required column(s) {', '.join(missing)}; its "
                           f"header must name {', '.join(REQUIRED_COLUMNS)} (plus the task columns)")
    if manifest.empty:
        raise CTBenchError(f"{manifest_path}: the manifest has a header but no case; add one row per scan")
    check_ids(manifest, manifest_path)
    bad = sorted(set(manifest["split"].astype(str)) - set(SPLITS))
    if bad:
        raise CTBenchError(f"{manifest_path}: unknown split value(s) {bad}; use {', '.join(SPLITS)}")
    manifest["case_id"] = manifest["case_id"].astype(str)
    manifest["patient_id"] = manifest["patient_id"].astype(str)
    if manifest["case_id"].duplicated().any():
        dup = manifest.loc[manifest["case_id"].duplicated(), "case_id"].iloc[0]
        raise CTBenchError(f"{folder}: case_id {dup!r} appears more than once in the manifest")
    check_patient_splits(manifest, manifest_path)
    return Dataset(card=card, manifest=manifest, root=folder, source=manifest_path)


def _read_card(path: Path) -> DatasetCard:
    """Parse ``dataset.json``; any problem (missing, not UTF-8, not JSON, invalid field) is one
    CTBenchError naming the file, the field and what to do."""
    if not path.is_file():
        raise CTBenchError(f"{path.parent} is not a ctbench dataset: {CARD_FILE} is missing")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CTBenchError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                           f"save the dataset card as UTF-8 JSON") from None
    try:
        return DatasetCard.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        msg = first["msg"].removeprefix("Value error, ")
        if not where:  # not JSON at all
            raise CTBenchError(f"{path}: not valid JSON ({msg}); fix the dataset card's syntax") from None
        raise CTBenchError(f"{path}: invalid dataset card field {where!r}: {msg}") from None


def check_ids(manifest: pd.DataFrame, path: Path) -> None:
    """Refuse empty ``case_id``/``patient_id`` cells (pandas would name such a case "nan") and
    case ids that cannot be file names: per-case outputs such as predicted masks are written as
    ``<case_id>.nii.gz``, so a case id must not contain ``/`` or ``\\`` nor be ``.`` or ``..``.
    Rows are numbered from 1 after the header."""
    for col in ID_COLUMNS:
        values = manifest[col]
        empty = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
        if empty.any():
            i = int(empty.nonzero()[0][0])
            more = f" ({int(empty.sum()) - 1} more row(s) likewise)" if empty.sum() > 1 else ""
            raise CTBenchError(f"{path}: row {i + 1} (image {manifest['image'].iloc[i]!r}) has an empty "
                               f"{col}{more}; every row needs a {col}: fill it in or remove the row")
    for i, case in enumerate(manifest["case_id"].astype(str)):
        if not safe_case_id(case):
            fixed = slugify(case) if case.strip(".") == "" else case.replace("/", "_").replace("\\", "_")
            raise CTBenchError(f"{path}: row {i + 1}: case_id {case!r} cannot be a file name (per-case files "
                               f"such as predicted masks are named after it); rename the case without '/' "
                               f"or '\\', not '.' or '..' (e.g. {fixed!r})")


def safe_case_id(case: str) -> bool:
    """Whether ``case`` can name a file inside a folder: no separators, NUL or '.'/'..'."""
    return case.strip() != "" and case not in (".", "..") and not any(c in case for c in "/\\\0")


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
    """The manifest (CSV first, else Parquet) as a frame, id columns as text; a file pandas
    cannot decode is one CTBenchError naming it and the fix."""
    csv, parquet = folder / MANIFEST_FILE, folder / "manifest.parquet"
    if csv.is_file():
        try:
            return csv, pd.read_csv(csv, dtype={c: str for c in ID_COLUMNS})
        except UnicodeDecodeError as e:
            raise CTBenchError(f"{csv}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                               f"save the manifest as UTF-8 CSV (e.g. Excel's 'CSV UTF-8', or "
                               f"iconv -f latin1 -t utf-8)") from None
        except pd.errors.EmptyDataError:
            raise CTBenchError(f"{csv}: the manifest is empty; it needs a header row ("
                               f"{', '.join(REQUIRED_COLUMNS)}, task columns) and one row per scan") from None
        except (pd.errors.ParserError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CTBenchError(f"{csv}: not a readable CSV ({first}); check its quoting and that every "
                               f"row has as many fields as the header") from None
    if parquet.is_file():
        try:
            frame = pd.read_parquet(parquet)
        except ImportError:
            raise CTBenchError(f"{parquet}: reading Parquet needs pyarrow; pip install pyarrow, or "
                               f"provide {MANIFEST_FILE}") from None
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CTBenchError(f"{parquet}: not a readable Parquet file ({first}); re-write it "
                               f"(e.g. DataFrame.to_parquet) or provide {MANIFEST_FILE}") from None
        for col in (c for c in ID_COLUMNS if c in frame.columns):
            frame[col] = frame[col].where(frame[col].isna(), frame[col].astype(str))
        return parquet, frame
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
