"""Up-front checks of a ``--llm`` folder (a local Hugging Face causal LM for report generation).

Run when the task is built, before any feature is extracted, so a wrong folder costs seconds,
not an extraction: the folder must exist, hold a readable ``config.json`` whose ``model_type``
``transformers`` knows as a causal LM, and hold weights. Each problem is one
:class:`~ctbench.errors.CTBenchError` naming the folder, what is missing and the fix.
Loading errors that only show when the weights are read are wrapped the same way by
:func:`ctbench.tasks.report_decoder.load_llm`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ctbench.errors import CTBenchError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_LAYOUT = "pass the folder of a local Hugging Face causal LM (the save_pretrained layout)"
INSTALL = "--llm needs the 'transformers' package: pip install 'ctbench[llm]' (or pip install transformers)"


def _read_config(folder: Path, path: str) -> dict:
    try:
        doc = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CTBenchError(f"--llm {path}: cannot read {folder / 'config.json'} ({type(e).__name__}: {e}); "
                           "re-save the model into that folder with save_pretrained") from None
    if not isinstance(doc, dict):
        raise CTBenchError(f"--llm {path}: {folder / 'config.json'} is not a JSON object; {_LAYOUT}")
    return doc


def _check_model_type(doc: dict, folder: Path, path: str) -> None:
    """``model_type`` must name a causal LM architecture ``transformers`` ships (no remote code)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = doc.get("model_type")
    if not isinstance(kind, str) or not kind:
        raise CTBenchError(f"--llm {path}: {folder / 'config.json'} has no 'model_type'; {_LAYOUT}")
    if kind not in CONFIG_MAPPING_NAMES:
        raise CTBenchError(f"--llm {path}: model_type {kind!r} is unknown to the installed transformers "
                           "(ctbench runs no remote code); upgrade transformers or pick another model")
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CTBenchError(f"--llm {path}: model_type {kind!r} is not a causal (text-generating) language "
                           "model; pass a decoder LM such as GPT-2, Llama or Qwen")


def check_llm_folder(path: str) -> Path:
    """The folder of a local causal LM, or one clear error saying what is wrong and the fix."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise CTBenchError(f"--llm {path}: the folder {what}, so there is no config.json; {_LAYOUT}")
    if not (folder / "config.json").is_file():
        raise CTBenchError(f"--llm {path}: no config.json there; {_LAYOUT}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise CTBenchError(INSTALL) from None
    _check_model_type(_read_config(folder, path), folder, path)
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise CTBenchError(f"--llm {path}: no weights there (none of {', '.join(WEIGHT_FILES)}); save the "
                           "model with save_pretrained into that folder")
    return folder
