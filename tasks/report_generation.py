"""Report generation from frozen features: a perceiver resampler + small text decoder (open_clip
tokenizer and blocks), or optionally a frozen local Hugging Face causal LM with the trained
resampler + projector as its prefix. Scored with clinical finding F1 (main metric
``finding_f1`` = micro F1, uncertain mentions positive), macro F1, precision, recall, BLEU-4 and
ROUGE-L (:mod:`ctbench.tasks.text_metrics`). Finding metrics score the labels the dataset
annotates (manifest columns named like an extractor label, e.g. the phantom's four findings or
CT-RATE's 18 abnormalities), else all 20 extractor labels.

Protocol notes:

- Inputs: the token grid, adaptive-average-pooled to ``POOL``^3 cells, plus the embedding; a
  model without a grid is read from its embedding alone. Both are standardised with training
  statistics.
- Search space (the same for every model, the engine gives the same number of trials):
  learning rate, width, depth (resampler and decoder layers) and epochs; everything else fixed.
- Decoding: greedy by default, beam search with ``beam > 1``; the same for validation and test.
- Seeds: the probe is a trained network, so it is stochastic (:meth:`ReportGenerationTask.is_stochastic`)
  and the engine refits it with several seeds like every other trained head. Strings cannot be
  averaged: one model is fitted per seed and each case keeps the consensus report (the
  candidate with the highest mean ROUGE-L to the other seeds' reports).
- Options (constructor, i.e. ``ctbench run --llm/--beam/--device``, else environment):
  ``llm`` / ``CTBENCH_REPORT_LLM`` = folder of a local Hugging Face causal LM (needs
  ``transformers``); ``beam`` / ``CTBENCH_REPORT_BEAM``; ``device`` / ``CTBENCH_REPORT_DEVICE``
  (``auto``: CUDA when visible; checked by :func:`ctbench.devices.resolve_device`). ``llm`` and
  ``beam`` change the probe, so they are part of :meth:`ReportGenerationTask.options` (and of the
  run's study name and result folder when they differ from :data:`OPTION_DEFAULTS`); the device
  is not.
- Read-back: predictions.csv holds per-case finding vectors, ROUGE-L and BLEU counts, from which
  the leaderboards re-score saved results (:mod:`ctbench.tasks.report_scores`).
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ctbench.atomic import atomic_write_text
from ctbench.bootstrap import MetricFn
from ctbench.devices import check_device_name, resolve_device
from ctbench.errors import CTBenchError
from ctbench.registry import register_task
from ctbench.task import Metric, ProbeTask, TaskOption
from ctbench.types import Features

from . import report_scores as rs
from . import text_metrics as tm
from .findings import LABELS, UNCERTAIN_AS_POSITIVE, dataset_labels, finding_vector
from .report_targets import check_report_text, report_mask, report_texts
from .report_decoder import (
    ClipVocab, LLMHead, PerceiverResampler, ReportModel, TextDecoder, TrainConfig, check_llm_path,
    generate, load_llm, train,
)

POOL = 4  # grid cells per axis after pooling (POOL**3 context tokens)
MAX_TOKENS = 192  # bos + report + eos, in tokens; longer reports are cut for training
N_QUERIES = 16
ENV_LLM, ENV_BEAM, ENV_DEVICE = "CTBENCH_REPORT_LLM", "CTBENCH_REPORT_BEAM", "CTBENCH_REPORT_DEVICE"
REPORTS_FILE, SCORES_FILE = "reports.jsonl", "finding_scores.json"
OPTION_DEFAULTS: dict[str, object] = {"llm": None, "beam": 1}  # options() of a run given no option


def pool_features(f: Features, cells: int = POOL) -> Features:
    """``f`` with its grid average-pooled to ``cells``^3 (token_affine rescaled to match)."""
    if f.tokens is None:
        return f
    grid = torch.from_numpy(np.asarray(f.tokens, dtype=np.float32))[None]
    pooled = torch.nn.functional.adaptive_avg_pool3d(grid, cells)[0].numpy()
    scale = np.array(f.tokens.shape[1:], dtype=np.float64) / cells
    step = np.diag([*scale, 1.0])
    step[:3, 3] = (scale - 1) / 2  # centre of each pooled cell, in old token indices
    return Features(f.embedding, pooled, f.token_affine @ step)


def _arrays(X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings ``(N, E)`` and, when every case has one, pooled grids ``(N, L, C)``."""
    feats = list(X)
    emb = np.stack([f.embedding for f in feats]).astype(np.float32)
    if any(f.tokens is None for f in feats):
        return emb, None
    grids = [np.asarray(f.tokens, np.float32).reshape(f.tokens.shape[0], -1).T for f in feats]
    if len({g.shape for g in grids}) > 1:
        raise CTBenchError("token grids differ in shape across cases; report generation pools "
                           "them to a fixed size in inputs(), so pass its output")
    return emb, np.stack(grids)


def _standardise(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = tuple(range(train.ndim - 1))
    mu, sd = train.mean(axes), train.std(axes) + 1e-6
    return (train - mu) / sd, (other - mu) / sd


def _consensus(candidates: list[list[str]]) -> list[str]:
    """Per case, the candidate report closest (mean ROUGE-L) to the other candidates."""
    out = []
    for texts in zip(*candidates):
        agree = [sum(tm.rouge_l([t], [o]) for k, o in enumerate(texts) if k != j)
                 for j, t in enumerate(texts)]
        out.append(texts[int(np.argmax(agree))])
    return out


@register_task("report-generation")
class ReportGenerationTask(ProbeTask):
    """Free-text reports from frozen features (one target column holding the report text)."""

    category = "report-generation"
    uses_tokens = True
    options = (
        TaskOption("llm", str, None, "folder of a local Hugging Face causal LM to decode with (needs "
                   "transformers; default: none, the small trained decoder)", env=ENV_LLM),
        TaskOption("beam", int, 1, "beam width of decoding (1 = greedy)", env=ENV_BEAM),
    )
    takes_device = True
    _device_source = "--device"  # where the device setting came from (for messages)
    probe_modules = ("ctbench.tasks.report_decoder", "ctbench.tasks.findings", "ctbench.tasks.text_metrics")

    def __init__(self, spec, dataset, llm: str | None = None, beam: int | None = None,
                 device: str | None = None) -> None:
        super().__init__(spec, dataset)
        if len(spec.targets) != 1:
            raise CTBenchError(f"task {spec.name!r}: report generation takes one target column "
                               f"(the report text), got {', '.join(spec.targets)}")
        llm = llm or os.environ.get(ENV_LLM) or None
        self.llm = str(Path(llm).expanduser().resolve()) if llm else None  # one spelling per folder
        try:
            self.beam = int(beam if beam is not None else os.environ.get(ENV_BEAM) or 1)
        except ValueError:
            raise CTBenchError(f"{ENV_BEAM} must be a whole number >= 1") from None
        if self.beam < 1:
            raise CTBenchError(f"beam width must be >= 1, got {self.beam}")
        # where the device setting came from, for error messages: the run's flag or the environment
        self._device_source = "--device" if device else ENV_DEVICE
        self.device = check_device_name(device or os.environ.get(ENV_DEVICE) or "auto", self._device_source)
        self._lm = None
        if self.llm:
            check_llm_path(self.llm)

    @property
    def labels(self) -> tuple[str, ...]:
        """The finding labels scored on this dataset (those its manifest annotates, else all)."""
        return dataset_labels(self.dataset.manifest.columns)

    def probe_settings(self) -> dict:
        """Task settings that change the probe (record them with the result and study)."""
        return {"labels": list(self.labels), "llm": self.llm, "beam": self.beam, "pool": POOL,
                "max_tokens": MAX_TOKENS, "queries": N_QUERIES,
                "uncertain_as_positive": UNCERTAIN_AS_POSITIVE}

    def default_probe_settings(self) -> dict:
        """:meth:`probe_settings` as they would be with no option given (flag or environment)."""
        return {**self.probe_settings(), **OPTION_DEFAULTS}

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        """Report strings ("" where there is none: such cases are not usable)."""
        return report_texts(rows[self.spec.targets[0]])

    def validate_targets(self, rows: pd.DataFrame) -> None:
        """Targets are report text: a number or other non-text value is refused (empty cells
        leave the case out; :mod:`ctbench.tasks.report_targets`)."""
        for col in self.spec.targets[:1]:  # more than one target column is refused in __init__
            check_report_text(self.dataset, rows, col)

    def usable(self, rows: pd.DataFrame) -> np.ndarray:
        """Cases with report text: a missing or blank report is "no target" (left out, counted)."""
        return report_mask(rows[self.spec.targets[0]])

    def inputs(self, feats: list[Features]) -> np.ndarray:
        out = np.empty(len(feats), dtype=object)
        out[:] = [pool_features(f) for f in feats]
        return out

    def is_stochastic(self, params: dict) -> bool:
        """Always: the seed draws the resampler's and decoder's initial weights and batch order."""
        return True

    def suggest(self, trial, seed: int) -> dict:
        return {
            "probe": "perceiver-llm-prefix" if self.llm else "perceiver-decoder",
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "width": trial.suggest_categorical("width", [64, 128]),
            "depth": trial.suggest_int("depth", 1, 2),
            "epochs": trial.suggest_int("epochs", 20, 60, step=10),
        }

    def _device(self) -> torch.device:
        """Where the probe trains and decodes: :attr:`device` through
        :func:`ctbench.devices.resolve_device` (``auto``: CUDA when visible, else CPU; CUDA
        without a GPU is a one-line error naming the flag or environment variable)."""
        return torch.device(resolve_device(self.device, self._device_source))

    def _build(self, params: dict, emb_dim: int, token_dim: int | None, y_train: np.ndarray):
        width, depth = int(params["width"]), int(params["depth"])
        resampler = PerceiverResampler(emb_dim, token_dim, POOL**3, width, depth, N_QUERIES)
        if self.llm:
            if self._lm is None:
                self._lm = load_llm(self.llm)
            lm, codec = self._lm
            head = LLMHead(lm, width)
        else:
            codec = ClipVocab(y_train)
            head = TextDecoder(codec.size, width, depth, MAX_TOKENS)
        return ReportModel(resampler, head), codec

    def fit_predict(self, params, X_train, y_train, X_eval, seeds) -> np.ndarray:
        emb_tr, grid_tr = _arrays(X_train)
        emb_ev, grid_ev = _arrays(X_eval)
        if grid_tr is None or grid_ev is None:
            grid_tr = grid_ev = None
        emb_tr, emb_ev = _standardise(emb_tr, emb_ev)
        if grid_tr is not None:
            grid_tr, grid_ev = _standardise(grid_tr, grid_ev)
        dev = self._device()

        def t(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).float().to(dev)

        cfg = TrainConfig(lr=float(params["lr"]), epochs=int(params["epochs"]))
        candidates = []
        for seed in seeds:
            torch.manual_seed(seed)
            model, codec = self._build(params, emb_tr.shape[1],
                                       None if grid_tr is None else grid_tr.shape[2], y_train)
            model.to(dev)
            seqs = [codec.encode(r, MAX_TOKENS) for r in y_train]
            train(model, t(emb_tr), t(grid_tr), seqs, codec.pad, cfg, seed)
            max_len = min(MAX_TOKENS, max(len(s) for s in seqs) + 16)
            candidates.append(generate(model, t(emb_ev), t(grid_ev), codec, max_len, self.beam))
        reports = candidates[0] if len(candidates) == 1 else _consensus(candidates)
        out = np.empty(len(reports), dtype=object)
        out[:] = reports
        return out

    def metric_table(self) -> dict[str, Metric]:
        labels = self.labels
        fns: dict[str, MetricFn] = {
            "finding_f1": partial(tm.finding_f1_micro, labels=labels),
            "finding_f1_macro": partial(tm.finding_f1_macro, labels=labels),
            "finding_precision": partial(tm.finding_precision, labels=labels),
            "finding_recall": partial(tm.finding_recall, labels=labels),
            "bleu4": tm.bleu4,
            "rouge_l": tm.rouge_l,
        }
        return {name: Metric(name, fn, "maximize", "reports") for name, fn in fns.items()}

    def prediction_columns(self, y, pred) -> dict[str, np.ndarray]:
        name = self.spec.targets[0]
        return {f"y_{name}": y, f"p_{name}": pred,
                "y_findings": np.array([_names(r, self.labels) for r in y], dtype=object),
                "p_findings": np.array([_names(r, self.labels) for r in pred], dtype=object),
                **rs.per_case_columns(y, pred)}

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Finding vectors of both reports and their per-case ROUGE-L and BLEU statistics, in
        the layout of :mod:`ctbench.tasks.report_scores` (no report is read again)."""
        return rs.read_layout(frame, self.spec.name)

    def rescoring_metrics(self) -> dict[str, MetricFn]:
        """The task's metrics on the read-back layout (:func:`ctbench.tasks.report_scores.layout_metrics`)."""
        return rs.layout_metrics()

    def write_artifacts(self, folder: Path, y: np.ndarray, pred: np.ndarray) -> list[str]:
        """``reports.jsonl`` (one line per test case, in predictions.csv order) and
        ``finding_scores.json`` (per-label counts and scores)."""
        folder = Path(folder)
        lines = [json.dumps({"row": i, "reference": str(r), "generated": str(p),
                             "findings_reference": _names(r, LABELS, sep=None),
                             "findings_generated": _names(p, LABELS, sep=None)})
                 for i, (r, p) in enumerate(zip(y, pred))]
        atomic_write_text(folder / REPORTS_FILE, "\n".join(lines) + "\n")
        scores = {"uncertain_as_positive": UNCERTAIN_AS_POSITIVE, "options": self.probe_settings(),
                  "scored": tm.per_label_scores(y, pred, self.labels),
                  "all_labels": tm.per_label_scores(y, pred)}
        atomic_write_text(folder / SCORES_FILE, json.dumps(scores, indent=2))
        return [REPORTS_FILE, SCORES_FILE]


def _names(text: str, labels: tuple[str, ...], sep: str | None = "; ") -> str | list[str]:
    """The ``labels`` a report states as present, joined by ``sep`` (a list when ``None``)."""
    found = [label for label, v in zip(labels, finding_vector(str(text), labels)) if v]
    return found if sep is None else sep.join(found)
