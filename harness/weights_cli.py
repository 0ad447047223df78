"""``ctbench weights``: fetch official weights and cut large archives down to the encoder.

- ``ctbench weights pull NAME``: download the card's file from the hub into
  ``$CTBENCH_HOME/weights/NAME/`` at the card's pinned revision, else the locked one, else the
  hub's ``main``, and record the resolved revision (commit sha) and sha256 in
  ``$CTBENCH_HOME/weights/lock.json`` (``ctbench.weights``, ``ctbench.weights_lock``); later runs
  refuse a file that no longer matches. ``--update`` moves the lock to the hub's current file.
- ``ctbench weights extract radfm FILE [--out PATH]``: keep only the vision-encoder tensors of
  the ~50 GB RadFM checkpoint in a small safetensors file. Tensors are memory-mapped and copied
  one at a time, so memory stays at the size of the encoder, not of the archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .atomic import atomic_path
from .errors import CTBenchError
from .paths import home

__all__ = ["app", "Extractor", "EXTRACTORS", "pull_weights", "extract_encoder"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Download and prepare model weights.")
console = Console()


@dataclass(frozen=True)
class Extractor:
    """Which keys of a big archive form the image encoder, and where the small file goes."""

    prefix: str
    filename: str  # default output name when the model's card names none
    source: str  # what the user is expected to pass, for messages


EXTRACTORS: dict[str, Extractor] = {
    "radfm": Extractor(
        prefix="embedding_layer.vision_encoder.",
        filename="radfm_vision.safetensors",
        source="RadFM pytorch_model.bin from the hub repo chaoyi-wu/RadFM",
    ),
}


def pull_weights(name: str, force: bool = False, update: bool = False):
    """Download (or re-check the cached copy of) model ``name``'s weights; returns a WeightsRef.
    ``force`` downloads again (the locked revision); ``update`` also forgets the lock entry, so
    the hub's current file (or the card's pin) is taken and locked."""
    from .registry import MODELS
    from .weights import cached_weights_path, download_weights, resolve_weights
    from .weights_lock import forget

    card = MODELS.get(name).card
    if name in EXTRACTORS:
        ex = EXTRACTORS[name]
        raise CTBenchError(
            f"{name}'s hub repository holds a large archive, not its encoder file: download the "
            f"{ex.source}, then run `ctbench weights extract {name} FILE`"
        )
    if not (card.weights.hub_repo and card.weights.filename):
        raise CTBenchError(
            f"model {name!r} names no hub file on its card; download its checkpoint yourself and "
            f"pass --weights PATH"
        )
    cached = cached_weights_path(card)
    if update:
        forget(name)
    if (force or update) and cached is not None and cached.is_file():
        cached.unlink()
    if cached is not None and cached.is_file():
        return resolve_weights(card, "auto")  # verifies the sha256 against the card
    return download_weights(card)


@app.command()
def pull(
    name: str = typer.Argument(..., help="registered model name (see `ctbench models`)"),
    force: bool = typer.Option(False, "--force", help="download again (the locked revision) even if a copy is cached"),
    update: bool = typer.Option(False, "--update", help="forget the lock: take the hub's current file and lock it"),
) -> None:
    """Download a model's official weights, lock their revision and sha256, and check them."""
    from .registry import MODELS
    from .weights_lock import lock_path

    ref = pull_weights(name, force, update)
    card = MODELS.get(name).card
    console.print(f"{name}: {ref.path}", soft_wrap=True)
    console.print(f"sha256 {ref.sha256}")
    console.print(f"revision {ref.revision or 'unknown (the hub named no commit)'}")
    console.print(f"locked in {lock_path()}", soft_wrap=True)
    if card.weights.revision is None:
        console.print("[yellow]the card pins no hub revision: the first pull locked the hub's file of that day; "
                      "later runs on this machine use and check exactly that file[/]")


def _open_mmap(path: Path, mmap: bool) -> dict:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as e:
        if mmap and "mmap" in str(e).lower():
            raise CTBenchError(
                f"{path}: this checkpoint uses torch's legacy format, which cannot be memory-mapped;"
                f" rerun with --no-mmap (needs RAM for the whole file)"
            ) from None
        raise CTBenchError(f"{path}: cannot be read as a tensor-only checkpoint ({e})") from None
    except Exception as e:  # unpickling refused, truncated file, not a torch file
        raise CTBenchError(
            f"{path}: cannot be read as a tensor-only checkpoint ({type(e).__name__}); ctbench "
            f"never unpickles arbitrary objects"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise CTBenchError(f"{path}: expected a state_dict, got {type(obj).__name__}")
    return obj


def _default_target(model: str, ex: Extractor) -> Path:
    """Where ``--weights auto`` of the registered adapter looks (its card's file in the cache)."""
    from .registry import MODELS
    from .weights import cached_weights_path

    try:
        cached = cached_weights_path(MODELS.get(model).card)
    except CTBenchError:  # adapter not registered (or not importable): the conventional place
        cached = None
    return cached or home() / "weights" / model / ex.filename


def extract_encoder(model: str, source: Path, out: Optional[Path] = None, mmap: bool = True) -> tuple[Path, int]:
    """Write the encoder tensors of ``source`` (keys unchanged) to a safetensors file; returns
    (path, number of tensors)."""
    import torch
    from safetensors.torch import save_file

    if model not in EXTRACTORS:
        raise CTBenchError(f"no extractor for {model!r}; known: {', '.join(EXTRACTORS)}")
    ex = EXTRACTORS[model]
    source = Path(source).expanduser()
    if not source.is_file():
        raise CTBenchError(f"{source} does not exist; pass the {ex.source}")
    state = _open_mmap(source, mmap)
    keep = {}
    for k, v in state.items():
        if k.startswith(ex.prefix) and isinstance(v, torch.Tensor):
            keep[k] = v.detach().contiguous().clone()  # copy out of the memory map, one tensor
    del state
    if not keep:
        raise CTBenchError(
            f"{source}: no tensors under {ex.prefix!r}; is this the {ex.source}?"
        )
    target = Path(out).expanduser() if out else _default_target(model, ex)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        save_file(keep, str(tmp), metadata={"source": source.name, "prefix": ex.prefix})
    return target, len(keep)


@app.command()
def extract(
    model: str = typer.Argument(..., help="which model's archive: radfm"),
    file: Path = typer.Argument(..., help="the downloaded checkpoint, e.g. RadFM's pytorch_model.bin"),
    out: Optional[Path] = typer.Option(None, "--out", help="output file (default in $CTBENCH_HOME/weights/MODEL/)"),
    mmap: bool = typer.Option(True, "--mmap/--no-mmap", help="memory-map the archive (keeps RAM small)"),
) -> None:
    """Keep only the image-encoder tensors of a large checkpoint, as a small safetensors file."""
    path, n = extract_encoder(model, file, out, mmap)
    console.print(f"{n} encoder tensors written to {path}", soft_wrap=True)
    console.print(f"use it with: --weights {path}", soft_wrap=True)
