"""ctbench: which 3D CT foundation model gives the best frozen features for a clinical task?"""

from .errors import CTBenchError
from .types import Encoder, Features

__all__ = ["CTBenchError", "Encoder", "Features", "load_results"]


def __getattr__(name: str):
    """``ctbench.load_results`` is imported lazily so ``import ctbench`` stays light."""
    if name == "load_results":
        from .load import load_results

        return load_results
    raise AttributeError(f"module 'ctbench' has no attribute {name!r}")
