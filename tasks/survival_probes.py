"""Survival probes: penalised Cox (lifelines) on PCA-reduced features, and a deep-Cox MLP
trained with the negative Cox partial likelihood (Breslow ties)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ctbench.threads import single_threaded


MAX_PCA = 32  # components at most, whatever the embedding size (the same cap for every model)


def pca_components(explained: np.ndarray, var_ratio: float, limit: int) -> int:
    """The fewest leading components whose explained-variance ratios reach ``var_ratio``
    (at least 1, at most ``limit``): a dimension-free choice of the PCA size."""
    k = int(np.searchsorted(np.cumsum(explained), var_ratio - 1e-12) + 1)
    return max(1, min(k, limit))


class PCACox:
    """Standardise -> whitened PCA keeping ``var_ratio`` of the variance -> lifelines
    ``CoxPHFitter(penalizer, l1_ratio)``. Whitening gives every component unit variance, so the
    penalty weighs each coefficient alike whatever the embedding's scale or size."""

    def __init__(self, var_ratio: float, penalizer: float, l1_ratio: float) -> None:
        self.var_ratio, self.penalizer, self.l1_ratio = var_ratio, penalizer, l1_ratio

    def fit(self, X: np.ndarray, y: np.ndarray) -> "PCACox":
        self.scaler = StandardScaler().fit(X)
        Xs = self.scaler.transform(X)
        limit = min(MAX_PCA, X.shape[1], len(X) - 1)
        self.pca = PCA(n_components=limit, whiten=True, random_state=0).fit(Xs)
        # components without variance (constant or collinear features) cannot be whitened
        limit = min(limit, int(np.sum(self.pca.explained_variance_ > 1e-12 * max(1.0, Xs.shape[1]))))
        self.k = pca_components(self.pca.explained_variance_ratio_, self.var_ratio, limit) if limit else 0
        self.cph = None
        if self.k == 0:  # features that do not vary: one risk for every case (C-index 0.5)
            return self
        df = self._frame(Xs)
        df["time"], df["event"] = y[:, 0], y[:, 1]
        self.cph = CoxPHFitter(penalizer=self.penalizer, l1_ratio=self.l1_ratio)
        self.cph.fit(df, duration_col="time", event_col="event")
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Log partial hazard (the linear predictor): higher = riskier."""
        if self.cph is None:
            return np.zeros(len(X))
        return np.asarray(self.cph.predict_log_partial_hazard(self._frame(self.scaler.transform(X))),
                          dtype=np.float64)

    def _frame(self, Xs: np.ndarray) -> pd.DataFrame:
        """The ``k`` leading whitened components of standardised features."""
        Z = self.pca.transform(Xs)[:, : self.k]
        return pd.DataFrame(Z, columns=[f"pc{i}" for i in range(self.k)])


def cox_partial_nll(risk, time, event):
    """Negative Cox partial log-likelihood per event, Breslow's handling of tied times.

    For each event i: risk_i - log sum_{j: T_j >= T_i} exp(risk_j).
    """
    import torch

    order = torch.argsort(time, descending=True)
    r, t, e = risk[order], time[order], event[order]
    lcse = torch.logcumsumexp(r, dim=0)
    # with ties, the risk set of every tied case includes all of them: use the value at the
    # last position of each tie group in the descending order
    last = torch.searchsorted(-t, -t, right=True) - 1
    denom = lcse[last]
    n_events = e.sum().clamp(min=1)
    return -((r - denom) * e).sum() / n_events


class DeepCox:
    """One-hidden-layer MLP risk model trained full-batch with Adam on the partial likelihood."""

    def __init__(self, hidden: int, lr: float, weight_decay: float, epochs: int, seed: int) -> None:
        self.hidden, self.lr, self.wd, self.epochs, self.seed = hidden, lr, weight_decay, epochs, seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> "DeepCox":
        import torch

        self.scaler = StandardScaler().fit(X)
        Xt = torch.tensor(self.scaler.transform(X), dtype=torch.float32)
        t = torch.tensor(y[:, 0], dtype=torch.float32)
        e = torch.tensor(y[:, 1], dtype=torch.float32)
        with torch.random.fork_rng(devices=[]), single_threaded():
            torch.manual_seed(self.seed)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(X.shape[1], self.hidden), torch.nn.GELU(), torch.nn.Dropout(0.1),
                torch.nn.Linear(self.hidden, 1),
            )
            opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.wd)
            for _ in range(self.epochs):
                opt.zero_grad()
                loss = cox_partial_nll(self.net(Xt).squeeze(-1), t, e)
                loss.backward()
                opt.step()
        self.net.eval()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.tensor(self.scaler.transform(X), dtype=torch.float32)
            return self.net(x).squeeze(-1).double().numpy()
