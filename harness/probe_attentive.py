"""The attentive probe: one learned query cross-attends over a case's token set, then a linear
head reads the pooled vector (the attentive-probing protocol of recent encoder benchmarks).

With a single query, each head's attention logit is linear in the token (``q . W_k x``), so the
query and key projection fold into one learned vector per head, and the values ``W_v x`` can be
projected after pooling (``W_v sum_i a_i x_i``). This is the same function as one-query
multi-head cross-attention, computed in ``O(positions x C x heads)`` per case instead of
``O(positions x C x width)``: affordable on CPU for grids of thousands of tokens. Attention
starts near uniform (small key init), i.e. at mean pooling.

Tokens are standardised per channel with training statistics; the pooled ``width``-d vector
goes through LayerNorm and a linear head. Every sampled parameter is absolute (dimension-free):
width, heads, learning rate, weight decay, epochs. Training is mini-batched with AdamW for a
fixed number of epochs, on the run's device; cases with different grid sizes are padded and
masked. Under a seed it is deterministic on CPU (the torch RNG is forked, batches are drawn
from a seeded generator).

The loss comes from the task (binary / multi-label cross-entropy, softmax cross-entropy, mean
squared error on standardised targets, Cox partial likelihood), so one module serves every
global category.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .threads import single_threaded

WIDTHS = (16, 32, 64)
HEADS = (1, 2, 4)
BATCH = 16  # cases per step

Loss = Callable[[Any, Any], Any]  # (outputs (n, n_out), targets) -> scalar tensor


def suggest_attentive(trial: Any) -> dict:
    """The attentive probe's search space (absolute values, the same for every model)."""
    return {
        "width": trial.suggest_categorical("width", list(WIDTHS)),
        "heads": trial.suggest_categorical("heads", list(HEADS)),
        "lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        "epochs": trial.suggest_int("epochs", 10, 100, step=10),
    }


def _module(c_in: int, width: int, heads: int, n_out: int):
    import torch
    from torch import nn

    class AttentivePool(nn.Module):
        """One-query multi-head attention pooling (query and keys folded), LayerNorm, linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.keys = nn.Linear(c_in, heads, bias=False)  # per head: W_k^T q / sqrt(d)
            nn.init.normal_(self.keys.weight, std=0.02)
            self.values = nn.Linear(c_in, width)  # W_v, applied to each head's pooled tokens
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, n_out)

        def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
            logits = self.keys(x).masked_fill(pad[..., None], float("-inf"))  # (b, T, heads)
            pooled = torch.einsum("bth,btc->bhc", torch.softmax(logits, dim=1), x)  # (b, heads, C)
            w = self.values.weight.view(heads, width // heads, c_in)
            out = torch.einsum("bhc,hdc->bhd", pooled, w).reshape(len(x), width) + self.values.bias
            return self.head(self.norm(out))

    return AttentivePool()


def _padded(sets: np.ndarray, idx: np.ndarray, mean: np.ndarray, std: np.ndarray, device: Any):
    """The standardised token sets ``sets[idx]`` as one ``(b, T_max, C)`` tensor and its padding
    mask (True where a position is padding)."""
    import torch

    longest = max(len(sets[i]) for i in idx)
    x = np.zeros((len(idx), longest, len(mean)), dtype=np.float32)
    pad = np.ones((len(idx), longest), dtype=bool)
    for row, i in enumerate(idx):
        t = sets[i]
        x[row, : len(t)] = (np.asarray(t, dtype=np.float32) - mean) / std
        pad[row, : len(t)] = False
    return torch.from_numpy(x).to(device), torch.from_numpy(pad).to(device)


def _channel_stats(sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over every token of every case (case by case:
    the stacked tokens of a large training set need not fit in memory)."""
    total = count = 0
    square = 0
    for t in sets:
        t = np.asarray(t, dtype=np.float64)
        total, square, count = total + t.sum(axis=0), square + (t * t).sum(axis=0), count + len(t)
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean * mean, 0)) + 1e-6
    return mean.astype(np.float32), std.astype(np.float32)


class AttentiveProbe:
    """Fit/predict over token sets (an object array of ``(positions, C)`` arrays)."""

    def __init__(self, width: int, heads: int, lr: float, weight_decay: float, epochs: int, seed: int,
                 n_out: int, loss: Loss, device: str = "cpu") -> None:
        self.width, self.heads, self.lr, self.wd, self.epochs = int(width), int(heads), lr, weight_decay, int(epochs)
        self.seed, self.n_out, self.loss, self.device = seed, int(n_out), loss, device

    def fit(self, sets: np.ndarray, target: np.ndarray) -> "AttentiveProbe":
        """Train on ``sets`` and ``target`` (float array, the loss's layout, one row per case)."""
        import torch

        self.mean, self.std = _channel_stats(sets)
        y = torch.as_tensor(np.asarray(target, dtype=np.float32), device=self.device)
        rng = np.random.default_rng(self.seed)
        with torch.random.fork_rng(devices=[]), single_threaded():
            torch.manual_seed(self.seed)
            self.net = _module(len(self.mean), self.width, self.heads, self.n_out).to(self.device)
            opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.wd)
            self.net.train()
            for _ in range(self.epochs):
                order = rng.permutation(len(sets))
                for start in range(0, len(order), BATCH):
                    idx = order[start:start + BATCH]
                    if start and len(idx) < 2:
                        continue  # a one-case remainder: nothing to compare it with (risk sets)
                    x, pad = _padded(sets, idx, self.mean, self.std, self.device)
                    opt.zero_grad()
                    loss = self.loss(self.net(x, pad), y[torch.as_tensor(idx, device=self.device)])
                    if not torch.isfinite(loss):
                        raise RuntimeError("attentive probe: the training loss is not finite")
                    loss.backward()
                    opt.step()
        self.net.eval()
        return self

    def predict(self, sets: np.ndarray) -> np.ndarray:
        """Raw head outputs ``(n, n_out)`` as float64."""
        import torch

        out = []
        with torch.no_grad(), single_threaded():
            for start in range(0, len(sets), BATCH):
                idx = np.arange(start, min(start + BATCH, len(sets)))
                x, pad = _padded(sets, idx, self.mean, self.std, self.device)
                out.append(self.net(x, pad).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_out))


def attentive_params(params: dict) -> dict:
    """The :class:`AttentiveProbe` keywords of a sampled configuration."""
    return {k: params[k] for k in ("width", "heads", "lr", "weight_decay", "epochs")}
