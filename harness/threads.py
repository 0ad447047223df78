"""Thread control for small probe training.

Small full-batch probes (torch, scikit-learn, lifelines) gain nothing from intra-op threads, and on a busy machine OpenMP
spin-waiting makes them tens of times slower; probes therefore train single-threaded.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one torch intra-op thread and one BLAS/OpenMP thread, restoring the
    previous settings."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)
