"""ctbench: which 3D CT foundation model gives the best frozen features for a clinical task?"""

from .errors import CTBenchError
from .types import Encoder, Features

__all__ = ["CTBenchError", "Encoder", "Features", "ResultFile", "load_results", "read_result"]

#: names imported on first use, so ``import ctbench`` stays light: name -> defining module
_LAZY = {"load_results": ".load", "ResultFile": ".result_schema", "read_result": ".result_schema"}


def __getattr__(name: str):
    """``ctbench.load_results``, ``ctbench.ResultFile`` and ``ctbench.read_result``, imported lazily."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'ctbench' has no attribute {name!r}")
