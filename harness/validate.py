"""``ctbench datasets validate DIR``: check a prepared dataset folder without running a model.

Every problem a run would hit later (a card field, a manifest column, a target value, an image
that cannot be read, a mask off its image's grid, a patient in two splits) is found in one pass
and reported together, one row per check, instead of one run failing at a time. Loading uses
the same code as a run (:func:`ctbench.datasets.load_dataset_folder`, the task classes'
``validate_targets``, :func:`ctbench.readers.read_volume`), so a folder that validates clean
loads clean. File checks (images, masks, lesion centres) live in :mod:`ctbench.validate_files`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .datasets import (
    CARD_FILE, ID_COLUMNS, REQUIRED_COLUMNS, Dataset, DatasetCard, TaskSpec, _read_card, _read_manifest,
    load_dataset_folder,
)
from .errors import CTBenchError
from .splits import SPLITS

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    """One thing to fix: the check that found it, the case it concerns (if any) and the message."""

    check: str
    message: str
    case: str | None = None


@dataclass(frozen=True)
class Check:
    """One row of the summary: a check's name, whether it passed and its counts."""

    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    """What validation found: one :class:`Check` per check, every problem, and warnings (cases
    that load but do not look like CT; they do not fail validation)."""

    folder: str
    quick: bool
    dataset: str | None = None
    checks: list[Check] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, detail: str, problems: list[Problem] | None = None) -> None:
        """Record check ``name``: it fails when it found any problem."""
        problems = problems or []
        self.checks.append(Check(name, not problems, detail))
        self.problems.extend(problems)

    def as_dict(self) -> dict:
        """The report as JSON-ready data (``ctbench datasets validate --json``)."""
        return {"folder": self.folder, "dataset": self.dataset, "quick": self.quick, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks], "problems": [asdict(p) for p in self.problems],
                "warnings": [asdict(w) for w in self.warnings]}


def validate_folder(folder: str | Path, quick: bool = False, progress: Progress | None = None) -> Report:
    """Validate the dataset folder ``folder``; ``quick`` reads image headers instead of images.

    A folder that does not exist is a user error (CTBenchError); everything else is reported.
    """
    from .validate_files import check_centres, check_images, check_masks

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CTBenchError(f"{folder} is not a folder; give the folder holding {CARD_FILE} and manifest.csv")
    report = Report(folder=str(folder), quick=quick)
    dataset = load(folder, report)
    if dataset is None:
        return report
    report.dataset = dataset.card.name
    check_splits(dataset, report)
    tasks = check_tasks(dataset, report)
    grids = check_images(dataset, report, quick, progress)
    check_masks(dataset, report, quick, grids)
    check_centres(dataset, report, grids, tasks)
    return report


def load(folder: Path, report: Report) -> Dataset | None:
    """The card and manifest through the loader a run uses; when that refuses the manifest, a
    lenient reading that lets the other checks go on (None when nothing more can be checked)."""
    try:
        card = _read_card(folder / CARD_FILE)
    except CTBenchError as e:
        report.add("card", f"{CARD_FILE} could not be loaded", [Problem("card", str(e))])
        return None
    report.add("card", f"{card.name} version {card.version}: {len(card.tasks)} task(s)")
    try:
        dataset = load_dataset_folder(folder)
    except CTBenchError as e:
        dataset = _lenient(folder, card)
        more = "other checks ran on it as read" if dataset is not None else "no further check possible"
        report.add("manifest", f"refused by the loader; {more}", [Problem("manifest", str(e))])
        return dataset
    m = dataset.manifest
    report.add("manifest", f"{Path(dataset.manifest_file).name}: {len(m)} case(s), "
                           f"{m['patient_id'].nunique()} patient(s)")
    return dataset


def _lenient(folder: Path, card: DatasetCard) -> Dataset | None:
    """The manifest as read, ids as text, when it has the required columns and rows."""
    try:
        path, manifest = _read_manifest(folder)
    except CTBenchError:
        return None
    if manifest.empty or any(c not in manifest.columns for c in REQUIRED_COLUMNS):
        return None
    for col in ID_COLUMNS:
        manifest[col] = manifest[col].astype(str)
    return Dataset(card=card, manifest=manifest, root=folder, source=path)


def check_splits(dataset: Dataset, report: Report) -> None:
    """Cases and patients per split; every patient whose scans span several splits (the loader
    names only the first) is a problem."""
    m = dataset.manifest
    split = m["split"].astype(str)
    counts = [f"{s} {int((split == s).sum())} case(s) / {m.loc[split == s, 'patient_id'].nunique()} patient(s)"
              for s in SPLITS]
    problems = []
    for pid, rows in m.groupby("patient_id", sort=True):
        present = set(rows["split"].astype(str))
        if len(present) > 1:
            where = ", ".join(f"{case} ({s})" for case, s in zip(rows["case_id"], rows["split"]))
            problems.append(Problem("splits", f"patient_id {pid!r} has scans in splits "
                                    f"{', '.join(s for s in SPLITS if s in present)}: {where}; every scan of a "
                                    f"patient must be in one split (patient-level splits): move them into one "
                                    f"split, or re-split with ctbench.splits.make_splits"))
    report.add("splits", "; ".join(counts), problems)


def check_tasks(dataset: Dataset, report: Report) -> dict[str, object]:
    """Build every task of the card as a run would (required columns, target values per
    category, main metric), each in its own row; returns the tasks that could be built."""
    from .registry import TASKS
    from .task import EvalTask

    built: dict[str, object] = {}
    m = dataset.manifest
    for spec in dataset.card.tasks:
        name = f"task {spec.name}"
        missing = [c for c in spec.targets if c not in m.columns]
        if missing:
            report.add(name, f"{spec.category}: target column(s) missing", [Problem(name, (
                f"task {spec.name!r} ({spec.category}) needs column(s) {', '.join(missing)}, which "
                f"{dataset.manifest_file} lacks; add them to the manifest or fix the task's targets in "
                f"{dataset.root / CARD_FILE}"))])
            continue
        try:
            task = TASKS.get(spec.category)(spec, dataset)
            usable = np.asarray(task.usable(m), dtype=bool)
        except CTBenchError as e:
            report.add(name, f"{spec.category}: refused", [Problem(name, str(e))])
            continue
        built[spec.name] = task
        if isinstance(task, EvalTask):  # scored on every case, whatever its split
            report.add(name, f"{spec.category}: {int(usable.sum())} usable case(s)",
                       [] if usable.any() else [_no_usable(spec, dataset, "any split")])
            continue
        split = m["split"].astype(str).to_numpy()
        per = {s: int((usable & (split == s)).sum()) for s in SPLITS}
        problems = [_no_usable(spec, dataset, f"the {s} split") for s, n in per.items() if n == 0]
        report.add(name, f"{spec.category}: usable " + " / ".join(f"{s} {n}" for s, n in per.items()), problems)
    return built


def _no_usable(spec: TaskSpec, dataset: Dataset, where: str) -> Problem:
    why = ("" if where == "any split" else
           "; a probe is tuned on train, selected on val and scored on test, so every split needs some")
    return Problem(f"task {spec.name}", (
        f"task {spec.name!r}: no case in {where} has a target (all of {', '.join(spec.targets)} "
        f"filled in){why}. Fill in targets in {dataset.manifest_file}"))
