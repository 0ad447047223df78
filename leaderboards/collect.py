"""Find, validate and group result files: the only input a leaderboard has."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from ctbench.errors import CTBenchError
from ctbench.result_files import find_result_files
from ctbench.result_schema import PREDICTIONS_FILE, RESULT_FILE, ResultFile, is_plain_file_name, read_result
from ctbench.safe_paths import inside


class BoardKey(NamedTuple):
    """What results ranked together share: another task version, split, protocol, task options
    (``""``: defaults; other options = another probe), dataset version or trial budget (None:
    nothing tuned) makes another table."""

    dataset: str
    task: str
    version: str
    split_hash: str
    protocol: str
    options_tag: str
    dataset_version: str
    trials: int | None

    def sort_key(self) -> tuple:
        """A total order (``trials`` may be None)."""
        return (*self[:7], -1 if self.trials is None else self.trials)


#: Other spellings of collection names, normalised (see :func:`normalise_name`) -> canonical.
ALIASES = {
    "imagingdatacommons": "idc", "nciimagingdatacommons": "idc",
    "thecancerimagingarchive": "tcia", "cancerimagingarchive": "tcia",
    "lung1": "nsclcradiomics",
}


@dataclass(frozen=True)
class Entry:
    """One validated result file, where it lives and the results folder it was collected from
    (``root``): published data name a result by its path relative to that folder, never by the
    absolute path of the machine that built the board."""

    path: Path
    result: ResultFile
    root: Path | None = None

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def relpath(self) -> str:
        """The result file relative to ``root`` (POSIX separators); without a root, or outside
        it, its folder's name and file name (``seed0/result.json``)."""
        if self.root is not None:
            try:
                return self.path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return f"{self.folder.name}/{self.path.name}"

    def relative(self, path: Path | str) -> str:
        """A file of this result's folder (``km.png``), relative to ``root`` like :attr:`relpath`."""
        return (Path(self.relpath).parent / Path(path).name).as_posix()

    @property
    def model_tag(self) -> str:
        """Model name and variant plus any non-default encoder setting of the run (``ct-clip+bf16``,
        ``voxelfm+hu_window=nifti``): runs of one model with different settings are separate rows,
        never pooled as seeds of one."""
        m = self.result.model
        extra = [m.precision] if m.precision not in (None, "fp32") else []
        extra += [f"{k}={v}" for k, v in sorted((m.options or {}).items())]
        return "+".join([m.tag, *extra])

    @property
    def weights_tag(self) -> str:
        """``random`` or the first 12 hex digits of the weights sha256 (as in result folders)."""
        w = self.result.model.weights
        return "random" if w.random_init else w.sha256[:12]

    @property
    def board_key(self) -> BoardKey:
        r = self.result
        return BoardKey(r.task.dataset, r.task.name, r.task.version, r.split.hash, r.protocol_version,
                        r.task.options_tag or "", r.task.dataset_version or "", r.trials_budget)

    @property
    def train_fraction(self) -> float:
        return float(self.result.config.train_fraction)

    @property
    def seed(self) -> int:
        return int(self.result.config.seed)

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """The predictions beside the result (``case_id``, ``patient_id``, task columns): one row
        per case, or per query for retrieval (a case listed twice is refused where cases are
        aligned, :func:`ctbench.leaderboards.paired.align`)."""
        path = self._predictions_path()
        if not path.is_file():
            raise CTBenchError(f"{self.path}: its predictions file {path.name} is missing; re-run this result")
        try:
            frame = pd.read_csv(path, dtype={"case_id": str, "patient_id": str})
        except (OSError, ValueError) as e:
            raise CTBenchError(f"{path}: cannot be read as CSV ({e}); re-run this result") from None
        missing = [c for c in ("case_id", "patient_id") if c not in frame.columns]
        if missing:
            raise CTBenchError(f"{path}: lacks column(s) {', '.join(missing)}; re-run this result")
        return frame

    def _predictions_path(self) -> Path:
        """``predictions_file`` beside the result; refused unless it is a plain file name that
        resolves inside the result's folder (not ``/etc/passwd``, ``../x.csv`` or a symlink away)."""
        name = self.result.predictions_file
        refusal = CTBenchError(
            f"{self.path}: field 'predictions_file' ({name!r}) must name a file in the result's own folder "
            f"(e.g. {PREDICTIONS_FILE!r}); fix that field or re-run this result"
        )
        if not is_plain_file_name(name):
            raise refusal
        try:
            inside(self.folder, name)
        except CTBenchError:
            raise refusal from None
        return self.folder / name


def collect(root: Path | str) -> list[Entry]:
    """Validated entries of every result file under ``root``; any invalid file stops with its name."""
    paths = find_result_files(root)
    base = Path(root).expanduser()
    base = base.parent if base.is_file() else base
    if not paths:
        raise CTBenchError(
            f"no {RESULT_FILE} found under {root}; run `ctbench run` or `ctbench bench` first, "
            f"or pass --results DIR"
        )
    return [Entry(p, read_result(p), base) for p in paths]


def row_labels(entries: list[Entry]) -> dict[tuple[str, str], str]:
    """Display label of every (model tag, weights tag), unique across the whole board.

    ``random`` weights read ``model (random)``; a model with several real checkpoints shows each
    as ``model@sha12``; otherwise the bare model name.
    """
    real: dict[str, set[str]] = {}
    for e in entries:
        if not e.result.model.weights.random_init:
            real.setdefault(e.model_tag, set()).add(e.weights_tag)
    labels: dict[tuple[str, str], str] = {}
    for e in entries:
        tag, wt = e.model_tag, e.weights_tag
        if e.result.model.weights.random_init:
            labels[(tag, wt)] = f"{tag} (random)"
        elif len(real[tag]) > 1:
            labels[(tag, wt)] = f"{tag}@{wt}"
        else:
            labels[(tag, wt)] = tag
    return labels


def normalise_name(name: str) -> str:
    """Comparable form of a dataset or collection name: lower case, letters and digits only,
    a few other spellings mapped (``NSCLC-Radiomics`` = ``nsclc radiomics``, ``Imaging Data
    Commons`` = ``IDC``)."""
    key = re.sub(r"[^0-9a-z]+", "", name.lower())
    return ALIASES.get(key, key)


def contamination(entry: Entry) -> list[str]:
    """The model card's pre-training datasets/collections that are the task's dataset or one of
    the collections it is drawn from (``task.dataset_collections``; files without it: the dataset
    name only). Non-empty = the model may have seen the test images."""
    task = entry.result.task
    drawn_from = {normalise_name(n) for n in (task.dataset, *task.dataset_collections)} - {""}
    return [d for d in entry.result.model.card.pretraining_datasets if normalise_name(d) in drawn_from]


def contaminated(entry: Entry) -> bool:
    """True when the model was pre-trained on the task's dataset or a collection holding it."""
    return bool(contamination(entry))
