"""Shared parts of the dataset recipes: the ``Recipe`` record, folder and table checks, splits.

A recipe reads a folder the user downloaded and returns a manifest; :func:`ctbench.recipes.prepare`
validates it and writes the prepared folder. Path convention of every recipe: ``image`` holds the
**absolute** path of the scan inside the source folder (the source stays where it is, the prepared
folder can live anywhere); files a recipe derives (TotalSegmentator's combined label maps) are
written into the prepared folder and referenced **relative** to it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from ..datasets import TaskSpec
from ..errors import CTBenchError
from ..splits import Strata, holdout_fold, split_with_report

Progress = Callable[[int, int], None]


@dataclass
class Context:
    """What a recipe's ``build`` gets: the source and output folders and the user's options."""

    recipe: str
    source: Path
    out: Path
    seed: int = 0
    strict: bool = False
    progress: Progress | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stratification: dict | None = None  # set by patient_splits/holdout, for prepare.json

    def error(self, message: str) -> CTBenchError:
        """A user error prefixed with the recipe's name."""
        return CTBenchError(f"{self.recipe}: {message}")

    def skip(self, ident: str, reason: str) -> None:
        """Leave a listed case out (image not downloaded, ...); with ``strict`` stop instead."""
        if self.strict:
            raise self.error(f"{ident}: {reason} (drop --strict to leave such cases out)")
        self.skipped.append((ident, reason))

    def tick(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


@dataclass(frozen=True)
class Prepared:
    """A recipe's output: the manifest, the card's description and facts for ``prepare.json``."""

    manifest: pd.DataFrame
    description: str
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A public dataset: where it comes from, its licence, layout, split rule and tasks."""

    name: str
    title: str
    version: str
    source: str
    licence: str
    layout: str
    split_rule: str
    tasks: tuple[TaskSpec, ...]
    build: Callable[[Context], Prepared]
    # Public names the images were published under, the dataset's own first, then the
    # collections that hold them (TCIA, IDC, ...): the card's ``collections``, used to flag
    # models pre-trained on any of them (leaderboard contamination).
    collections: tuple[str, ...] = ()


def snake(name: str) -> str:
    """``'Lung nodule'`` -> ``'lung_nodule'``: label names as manifest column names."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def absolute(path: Path) -> str:
    """The manifest form of an image path: absolute, symlinks kept as the user made them."""
    return os.path.abspath(path)


def require_dir(ctx: Context, path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise ctx.error(f"{what} not found: {path} is missing; {fix}")
    return path


def require_file(ctx: Context, path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise ctx.error(f"{what} not found: {path} is missing; {fix}")
    return path


def read_table(ctx: Context, path: Path, columns: Iterable[str], fix: str = "") -> pd.DataFrame:
    """A CSV (comma or semicolon separated) that must hold ``columns``; clear errors otherwise."""
    if not path.is_file():
        raise ctx.error(f"table not found: {path} is missing" + (f"; {fix}" if fix else ""))
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            head = f.readline()
        sep = ";" if head.count(";") > head.count(",") else ","
        df = pd.read_csv(path, sep=sep, encoding="utf-8-sig", low_memory=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ctx.error(f"{path} could not be read as a CSV table ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''}); re-download it") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns[:12])) + (", ..." if len(df.columns) > 12 else "")
        raise ctx.error(f"{path} lacks column(s) {', '.join(missing)} (found: {found})"
                        + (f"; {fix}" if fix else ""))
    return df


def line(index) -> int:
    """The CSV line (header = line 1) of a row read by :func:`read_table`."""
    return int(index) + 2


def shown(value) -> str:
    """``repr`` of a table value without numpy's type wrapper (``2``, not ``np.int64(2)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def binary(ctx: Context, values: pd.Series, what: str) -> pd.Series:
    """A 0/1 integer column; any other value is a malformed-table error naming it."""
    num = pd.to_numeric(values, errors="coerce")
    bad = values[num.isna() | ~num.isin([0, 1])]
    if len(bad):
        raise ctx.error(f"{what} must hold 0 or 1, found {shown(bad.iloc[0])} (line {line(bad.index[0])}); "
                        f"fix the table or re-download it")
    return num.astype(int)


def unique(ctx: Context, values: pd.Series, what: str) -> None:
    dup = values[values.duplicated()]
    if len(dup):
        raise ctx.error(f"{what}: {shown(dup.iloc[0])} appears more than once; re-download the table")


def dicom_files(folder: Path) -> list[Path]:
    """The ``.dcm`` files directly inside ``folder`` (sorted)."""
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    except OSError:
        return []


def has_dicom(folder: Path) -> bool:
    """Whether ``folder`` directly holds at least one ``.dcm`` file (stops at the first)."""
    try:
        return any(p.suffix.lower() == ".dcm" for p in folder.iterdir())
    except OSError:
        return False


def patient_splits(ctx: Context, df: pd.DataFrame, strata: Strata, by: str | None = None) -> np.ndarray:
    """Seeded, stratified, patient-level 60/20/20 train/val/test of ``df``'s rows.

    ``strata``: one value per row, or one column per variable (rare combinations fall back to
    their first columns, see :mod:`ctbench.splits`); ``by`` describes them in ``prepare.json``,
    where the strata merged for being rarer than the folds are recorded.
    """
    n = df["patient_id"].nunique()
    if n < 3:
        raise ctx.error(f"{n} usable patient(s) found; a train/val/test split needs at least 3 "
                        f"(download more of the dataset)")
    splits, report = split_with_report(df["patient_id"], strata, seed=ctx.seed, by=by)
    ctx.stratification = report.as_dict()
    return splits.to_numpy()


def holdout(ctx: Context, patient_ids: pd.Series, strata: Strata, fraction: float,
            by: str | None = None) -> np.ndarray:
    """Boolean mask: rows of a seeded, stratified ``fraction`` of the patients (patient-level).

    Strata too small to reach every fold are merged as in :func:`ctbench.splits.make_splits`;
    what was merged is recorded for ``prepare.json``.
    """
    mask, report = holdout_fold(patient_ids, strata, ctx.seed, fraction, by=by)
    ctx.stratification = report.as_dict()
    return mask


def quantile_bins(values: pd.Series, n: int = 4) -> pd.Series:
    """Quantile bin of each value (NaN -> its own stratum): strata for continuous targets."""
    ranks = values.rank(method="first")
    bins = pd.qcut(ranks, q=min(n, max(1, int(values.notna().sum()))), labels=False)
    return bins.fillna(-1).astype(int)


IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def find_image(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` + a volume suffix ctbench reads, or ``folder/stem/`` holding ``.dcm``."""
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    if has_dicom(folder / stem):
        return folder / stem
    return None


def numbers(ctx: Context, values: pd.Series, what: str) -> pd.Series:
    """Floats, blanks allowed (NaN); a non-number is a malformed-table error naming it."""
    num = pd.to_numeric(values, errors="coerce")
    bad = values[num.isna() & values.notna() & (values.astype(str).str.strip() != "")]
    if len(bad):
        raise ctx.error(f"{what} must hold numbers, found {shown(bad.iloc[0])} (line {line(bad.index[0])}); "
                        f"fix the table")
    return num.astype(float)


def categories(ctx: Context, values: pd.Series, allowed: dict[str, float], what: str) -> pd.Series:
    """Map text categories (case-insensitive, blank -> NaN) through ``allowed``; others are errors."""
    text = values.fillna("").astype(str).str.strip().str.lower()
    bad = text[(text != "") & ~text.isin(list(allowed))]
    if len(bad):
        raise ctx.error(f"{what} holds {shown(values[bad.index[0]])} (line {line(bad.index[0])}); allowed: "
                        f"{', '.join(allowed)} (or blank)")
    return text.map(allowed).astype(float)
