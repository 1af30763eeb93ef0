"""Space-generic surrogate models for the ``predictive`` strategy (pure numpy).

:class:`Encoder` turns decision dicts into fixed-width vectors using only the decisions
and their domains: one column marking a decision absent from the architecture, then a
one-hot block for a choice or one scaled column for an integer range. Columns are added
as new decisions are met, so conditional spaces need no declaration up front.

:class:`RidgeEnsemble` is a bootstrap ensemble of ridge regressions on the encoding plus
random ReLU features (an MLP whose hidden layer is drawn, not trained: each member has
its own draw and its own bootstrap sample). The ridge penalty is chosen by exact
leave-one-out error; the ensemble spread is calibrated on the out-of-bag rows so that
the standardised out-of-bag errors have unit variance. With one member and no bootstrap
it is a deterministic ridge fit whose uncertainty is its leave-one-out error (used for
the cheap objectives, which are functions of the architecture).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cellblock.search_spaces.api import SearchSpace, arch_id
from cellblock.search_spaces.domains import Categorical, Domain, IntRange, _key

LAMBDAS = np.logspace(-3, 3, 13)  # ridge penalties tried (targets and features are standardised)


class Encoder:
    """Decision dicts -> vectors: absent marker, one-hot choices, scaled integers.

    Args:
        space: The space; an architecture with a decision not met before is traced once
            to learn that decision's domain.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        # name -> (domain, first column, value -> offset)
        self.blocks: dict[str, tuple[Domain, int, dict[Any, int]]] = {}
        self.width = 0
        self.starts: list[int] = []  # first column of each block
        self.cache: dict[str, tuple[int, list[int], list[float]]] = {}  # arch_id -> row

    def _add(self, name: str, domain: Domain) -> None:
        index = {} if isinstance(domain,
                                 IntRange) else {_key(v): i for i, v in enumerate(domain.values())}
        self.blocks[name] = (domain, self.width, index)
        self.starts.append(self.width)
        self.width += 1 + (1 if isinstance(domain, IntRange) else len(index))

    def learn(self, arch: Mapping[str, Any]) -> None:
        """Add the blocks of decisions of ``arch`` not met before (traced once)."""
        if all(name in self.blocks for name in arch):
            return
        for d in self.space.trace(arch):
            if d.name not in self.blocks:
                self._add(d.name, d.domain if isinstance(d.domain, (Categorical, IntRange))
                          else Categorical(tuple(d.domain.values())))

    def _row(self, arch: Mapping[str, Any]) -> tuple[int, list[int], list[float]]:
        """(width when encoded, columns, values) of the non-zero entries of ``arch``."""
        cols, vals = [], []
        for name, (domain, col, index) in self.blocks.items():
            if name not in arch:
                cols.append(col)  # absent in this architecture
                vals.append(1.0)
            elif isinstance(domain, IntRange):
                cols.append(col + 1)
                vals.append((arch[name] - domain.low) / max(domain.high - domain.low, 1))
            else:
                cols.append(col + 1 + index[_key(arch[name])])
                vals.append(1.0)
        return self.width, cols, vals

    def encode(self, archs: Sequence[Mapping[str, Any]], width: int | None = None,
               ids: Sequence[str] | None = None) -> np.ndarray:
        """(n, width) matrix; ``width`` truncates to the columns a model was fitted on.

        Rows are cached by architecture; decisions met after a row was cached are absent
        from that architecture (it was traced then), so only their markers are added.
        """
        rows = []
        for k, a in enumerate(archs):
            aid = ids[k] if ids is not None else arch_id(a)
            row = self.cache.get(aid)
            if row is None:
                self.learn(a)
                row = self.cache[aid] = self._row(a)
            rows.append(row)
        X = np.zeros((len(archs), self.width))
        if rows:
            sizes = [len(cols) for _, cols, _ in rows]
            at_rows = np.repeat(np.arange(len(rows)), sizes)
            at_cols = np.fromiter((c for _, cols, _ in rows for c in cols), int, sum(sizes))
            X[at_rows, at_cols] = [v for _, _, vals in rows for v in vals]
        for i, (w, _, _) in enumerate(rows):
            if w < self.width:
                X[i, [c for c in self.starts if c >= w]] = 1.0
        return X if width is None else X[:, :width]

    def state_dict(self) -> list[list[Any]]:
        """Blocks in column order: ``[name, domain JSON]``."""
        return [[name, d.to_json()] for name, (d, _, _) in self.blocks.items()]

    def load_state_dict(self, state: Sequence[Sequence[Any]]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.blocks, self.width, self.starts, self.cache = {}, 0, [], {}
        for name, domain in state:
            self._add(name, Domain.from_json(domain))


def _ridge_loo(Phi: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(penalty, leave-one-out RMSE) of the best penalty of :data:`LAMBDAS` (centred data)."""
    n, p = Phi.shape
    if n > 2 * p:  # many rows: the Gram matrix's eigenvectors, O(n p^2) without an n x p SVD
        s2, V = np.linalg.eigh(Phi.T @ Phi)
        keep = s2 > s2.max() * 1e-12
        s2, V = s2[keep], V[:, keep]
        U = (Phi @ V) / np.sqrt(s2)
    else:
        U, s, _ = np.linalg.svd(Phi, full_matrices=False)
        s2 = s**2
    Uy, U2 = U.T @ y, U**2
    best = (float(LAMBDAS[0]), np.inf)
    for lam in LAMBDAS:
        shrink = s2 / (s2 + lam)
        fit = U @ (shrink * Uy)
        h = U2 @ shrink + 1.0 / len(y)  # hat diagonal, intercept included
        loo = (y - fit) / np.maximum(1.0 - h, 1e-6)
        err = float(np.sqrt(np.mean(loo**2)))
        if err < best[1]:
            best = (float(lam), err)
    return best


class RidgeEnsemble:
    """Bootstrap ensemble of ridge regressions on the encoding and random ReLU features.

    Args:
        members: Ensemble size (1: a single fit on all rows, no bootstrap).
        hidden: Random ReLU features per member (0: linear in the encoding).
    """

    def __init__(self, members: int = 8, hidden: int = 64) -> None:
        self.members = members
        self.hidden = hidden
        self.params: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]] = []
        self.y_mean, self.y_std, self.scale, self.width = 0.0, 1.0, 1.0, 0
        self.loo_rmse = 1.0

    def _features(self, X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.hstack([X, np.maximum(X @ W + b, 0.0)]) if W.shape[1] else X

    def fit(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> RidgeEnsemble:
        """Fit on rows ``X`` (n, d) and targets ``y`` (n,)."""
        n, d = X.shape
        self.width = d
        self.y_mean = float(y.mean())
        self.y_std = float(y.std()) or 1.0
        z = (y - self.y_mean) / self.y_std
        active = max(float(X.sum(axis=1).mean()), 1.0)  # non-zero entries per row
        self.params = []
        oob_sum, oob_n = np.zeros(n), np.zeros(n)
        best = None  # (loo, hidden, penalty, W, b): the linear model or the random features, by LOO
        for h in sorted({0, self.hidden}):
            W = rng.normal(0.0, 1.0 / np.sqrt(active), (d, h))
            b = rng.normal(0.0, 0.5, h)
            Phi = self._features(X, W, b)
            lam, loo = _ridge_loo(Phi - Phi.mean(0), z)
            if best is None or loo < best[0]:
                best = (loo, h, lam, W, b)
        self.loo_rmse, h, lam, W0, b0 = best
        for k in range(self.members):
            W, b = (W0, b0) if k == 0 else (rng.normal(0.0, 1.0 / np.sqrt(active), (d, h)),
                                            rng.normal(0.0, 0.5, h))
            Phi = self._features(X, W, b)
            rows = rng.integers(n, size=n) if self.members > 1 else np.arange(n)
            P, t = Phi[rows], z[rows]
            mu_P, mu_t = P.mean(0), t.mean()
            Pc = P - mu_P
            w = np.linalg.solve(Pc.T @ Pc + lam * np.eye(Pc.shape[1]), Pc.T @ (t - mu_t))
            self.params.append((W, b, w, mu_P, float(mu_t)))
            out = np.ones(n, dtype=bool)
            out[rows] = False
            if out.any():
                oob_sum[out] += (Phi[out] - mu_P) @ w + mu_t
                oob_n[out] += 1
        self._stack()
        self.scale = self.loo_rmse
        if self.members > 1:
            mean, std = self._predict_std(X)
            has = oob_n > 0
            if has.sum() >= 3:
                zz = (z[has] - oob_sum[has] / oob_n[has]) / np.maximum(std[has], 1e-9)
                self.scale = float(np.sqrt(np.clip(np.mean(zz**2), 0.25, 400.0)))
        return self

    def _stack(self) -> None:
        """The members' parameters side by side, so one product predicts them all."""
        d = self.width
        self._W = np.hstack([W for W, _, _, _, _ in self.params])  # (d, members * hidden)
        self._b = np.concatenate([b for _, b, _, _, _ in self.params])
        self._w_lin = np.stack([w[:d] for _, _, w, _, _ in self.params], axis=1)  # (d, members)
        self._w_hid = np.stack([w[d:] for _, _, w, _, _ in self.params])  # (members, hidden)
        self._const = np.array([mu_t - mu_P @ w for _, _, w, mu_P, mu_t in self.params])

    def _predict_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread over members, in standardised target units."""
        preds = X @ self._w_lin + self._const  # (n, members)
        if self._W.shape[1]:
            H = np.maximum(X @ self._W + self._b, 0.0).reshape(len(X), *self._w_hid.shape)
            preds = preds + np.einsum("nmh,mh->nm", H, self._w_hid)
        return preds.mean(1), preds.std(1)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, calibrated std) per row, in target units."""
        X = X[:, : self.width]
        mean, spread = self._predict_std(X)
        if self.members > 1:
            std = spread * self.scale
        else:
            std = np.full(len(X), self.scale)
        return self.y_mean + self.y_std * mean, np.maximum(self.y_std * std, 1e-12)
