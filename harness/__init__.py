"""ctbench: which 3D CT foundation model gives the best frozen features for a clinical task?"""

from .errors import CTBenchError
from .types import Encoder, Features

__all__ = ["CTBenchError", "Encoder", "Features"]
