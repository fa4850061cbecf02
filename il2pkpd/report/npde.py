"""Normalised prediction distribution errors (NPDE) from simulated (posterior predictive) data.

For one subject with observations ``y`` (n,) and K simulated replicates ``ysim`` (K, n) of the
same design (Brendel et al., Pharm Res 2006; Comets et al., Comput Methods Programs Biomed 2008):

1. ``E = mean(ysim)``, ``V = cov(ysim)`` (sample covariance over the K replicates);
2. decorrelate with the Cholesky factor ``V = L L^T``: ``yd = L^{-1} (y - E)`` and
   ``ysimd_k = L^{-1} (ysim_k - E)``;
3. ``pde_j`` = fraction of the K decorrelated simulations strictly below the decorrelated
   observation ``yd_j``; values 0 and 1 are replaced by ``1/K`` and ``1 - 1/K`` so that the
   normal quantile stays finite;
4. ``npde_j = Phi^{-1}(pde_j)``, with ``Phi`` the standard normal distribution function.

Without decorrelation (or when ``V`` is singular, e.g. fewer replicates than observations) the
same steps on the raw values give the prediction discrepancies ``pd`` and their normal
quantiles (``npd``). Censored (BLQ) observations are left out of their subject's vector.
Under a correct model the NPDE are independent standard normal.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

__all__ = ["pde_subject", "npde"]

_PHI_INV = np.vectorize(NormalDist().inv_cdf, otypes=[float])


def pde_subject(
    y: np.ndarray, ysim: np.ndarray, *, decorrelate: bool = True
) -> tuple[np.ndarray, bool]:
    """Prediction distribution errors of one subject.

    Parameters
    ----------
    y : numpy.ndarray, shape (n,)
        Observed values (same unit as *ysim*).
    ysim : numpy.ndarray, shape (K, n)
        K simulated replicates of the subject's observations.
    decorrelate : bool, default True
        Decorrelate with the Cholesky factor of the simulated covariance (pde); without it the
        result is the prediction discrepancy (pd).

    Returns
    -------
    pde : numpy.ndarray, shape (n,)
        Values in ``[1/K, 1 - 1/K]`` (NaN when K < 2).
    decorrelated : bool
        Whether decorrelation was applied: False when not asked for, or when the covariance was
        not positive definite (then *pde* holds the prediction discrepancies).

    Examples
    --------
    >>> import numpy as np
    >>> ysim = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> pde_subject(np.array([1.5]), ysim)
    (array([0.5]), True)
    """
    y = np.asarray(y, dtype=float)
    ysim = np.asarray(ysim, dtype=float)
    k = ysim.shape[0]
    done = False
    if k < 2:
        return np.full(y.shape, np.nan), done
    if decorrelate and y.size > 0 and k > y.size:
        mean = ysim.mean(axis=0)
        cov = np.atleast_2d(np.cov(ysim, rowvar=False))
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            chol = None
        diag = np.abs(np.diag(chol)) if chol is not None else np.zeros(1)
        if (chol is not None and np.all(np.isfinite(chol))
                and diag.min() > 1e-8 * max(diag.max(), np.finfo(float).tiny)):
            y = np.linalg.solve(chol, y - mean)
            ysim = np.linalg.solve(chol, (ysim - mean).T).T
            done = True
    pde = (ysim < y[None, :]).mean(axis=0)
    pde = np.clip(pde, 1.0 / k, 1.0 - 1.0 / k)
    return pde, done


def npde(
    ids: np.ndarray,
    y: np.ndarray,
    ysim: np.ndarray,
    *,
    censored: np.ndarray | None = None,
    decorrelate: bool = True,
) -> pd.DataFrame:
    """NPDE for every observation, subject by subject.

    Parameters
    ----------
    ids : numpy.ndarray, shape (n_obs,)
        Subject of each observation.
    y : numpy.ndarray, shape (n_obs,)
        Observed values.
    ysim : numpy.ndarray, shape (K, n_obs)
        Simulated replicates (for a Bayesian fit: posterior predictive draws).
    censored : numpy.ndarray of bool, shape (n_obs,), optional
        Observations left out (BLQ); their results are NaN.
    decorrelate : bool, default True

    Returns
    -------
    pandas.DataFrame
        Columns ``pde``, ``npde`` and ``decorrelated`` (bool), one row per observation in input
        order.

    Examples
    --------
    >>> import numpy as np
    >>> out = npde(np.array([1, 1]), np.array([1.5, 0.5]),
    ...            np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]),
    ...            decorrelate=False)
    >>> out["pde"].tolist()
    [0.5, 0.25]
    """
    ids = np.asarray(ids)
    y = np.asarray(y, dtype=float)
    ysim = np.asarray(ysim, dtype=float)
    n = y.size
    cens = np.zeros(n, dtype=bool) if censored is None else np.asarray(censored, dtype=bool)
    pde = np.full(n, np.nan)
    dec = np.zeros(n, dtype=bool)
    for sid in pd.unique(ids):
        idx = np.flatnonzero((ids == sid) & ~cens)
        if idx.size == 0:
            continue
        sims = ysim[:, idx]
        ok = np.all(np.isfinite(sims), axis=1)
        vals, done = pde_subject(y[idx], sims[ok], decorrelate=decorrelate)
        pde[idx] = vals
        dec[idx] = done
    out = np.full(n, np.nan)
    finite = np.isfinite(pde)
    out[finite] = _PHI_INV(pde[finite])
    return pd.DataFrame({"pde": pde, "npde": out, "decorrelated": dec})
