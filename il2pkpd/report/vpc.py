"""Prediction-corrected visual predictive check (pcVPC) statistics.

Following Bergstrand et al. (AAPS J 2011): observations are grouped into time bins; each
observed and simulated value ``y`` of an observation with population prediction ``PRED`` is
prediction corrected as ``y * median_bin(PRED) / PRED`` (proportional correction, the usual one
for concentrations). Per bin the report compares the observed 5th, 50th and 95th percentiles
with the distribution, over the simulated replicates, of the same percentiles (median and a
90 % interval), and the observed fraction below the limit of quantification with its simulated
distribution.

Censoring: an observation flagged BLQ and a simulated value below its ``LLOQ`` count as below
every finite value (``-inf``). A percentile that falls among the censored values is reported as
NaN (it is not known) instead of a number. Percentiles use linear interpolation between order
statistics (numpy's default, R's type 7).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["time_bin_edges", "assign_bins", "vpc_table"]


def time_bin_edges(time: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges: one bin per distinct time when there are at most *n_bins* of them (nominal
    sampling times), otherwise edges at equally spaced quantiles of the observation times.

    Parameters
    ----------
    time : numpy.ndarray
        Observation times (time unit of the data).
    n_bins : int
        Number of bins asked for; fewer come back when times repeat.

    Returns
    -------
    numpy.ndarray
        Increasing edges; bin ``b`` holds ``edges[b] <= t < edges[b+1]`` (the last bin is
        closed).

    Examples
    --------
    >>> time_bin_edges(np.array([1.0, 2, 3, 4, 5, 6]), 3).round(3).tolist()
    [1.0, 2.667, 4.333, 6.0]
    >>> time_bin_edges(np.array([1.0, 1, 2, 4, 4]), 8).tolist()
    [1.0, 1.5, 3.0, 4.0]
    """
    time = np.asarray(time, dtype=float)
    time = time[np.isfinite(time)]
    if time.size == 0:
        return np.array([0.0, 1.0])
    uniq = np.unique(time)
    if 1 < uniq.size <= n_bins:
        return np.r_[uniq[0], (uniq[1:] + uniq[:-1]) / 2.0, uniq[-1]]
    edges = np.unique(np.quantile(time, np.linspace(0.0, 1.0, max(int(n_bins), 1) + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    return edges


def assign_bins(time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the bin of each time (see :func:`time_bin_edges`); -1 outside the edges.

    Examples
    --------
    >>> assign_bins(np.array([1.0, 2.7, 6.0, 7.0]), np.array([1.0, 2.667, 4.333, 6.0])).tolist()
    [0, 1, 2, -1]
    """
    time = np.asarray(time, dtype=float)
    inner = np.asarray(edges, dtype=float)[1:-1]
    idx = np.searchsorted(inner, time, side="right")
    out = np.where((time >= edges[0]) & (time <= edges[-1]), idx, -1)
    return out.astype(int)


def _censored_quantiles(values: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Quantiles along the last axis; censored entries are -inf; unknown results are NaN."""
    with np.errstate(invalid="ignore"):
        out = np.quantile(values, qs, axis=-1)
    out = np.moveaxis(np.asarray(out, dtype=float), 0, -1)
    return np.where(np.isfinite(out), out, np.nan)


def vpc_table(
    time: np.ndarray,
    dv: np.ndarray,
    pred: np.ndarray | None,
    sims: np.ndarray,
    *,
    edges: np.ndarray | None = None,
    n_bins: int = 8,
    blq: np.ndarray | None = None,
    lloq: np.ndarray | None = None,
    quantiles: tuple[float, ...] = (0.05, 0.5, 0.95),
    interval: float = 0.90,
) -> pd.DataFrame:
    """Binned statistics of a (prediction-corrected) VPC.

    Parameters
    ----------
    time : numpy.ndarray, shape (n,)
        Observation times.
    dv : numpy.ndarray, shape (n,)
        Observed values (ignored where *blq*).
    pred : numpy.ndarray, shape (n,) or None
        Population predictions (for a Bayesian fit: the posterior median of PRED per
        observation). None gives an uncorrected VPC.
    sims : numpy.ndarray, shape (R, n)
        R simulated replicates of the observations (posterior predictive draws).
    edges : numpy.ndarray, optional
        Bin edges; by default :func:`time_bin_edges` with *n_bins*.
    n_bins : int, default 8
    blq : numpy.ndarray of bool, shape (n,), optional
        Observations below the limit of quantification.
    lloq : numpy.ndarray, shape (n,), optional
        Lower limit of quantification per observation (NaN: none); simulated values below it
        count as BLQ.
    quantiles : tuple of float, default (0.05, 0.5, 0.95)
        Percentiles of the data compared.
    interval : float, default 0.90
        Probability of the simulation interval around each simulated percentile.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``bin, t_lo, t_hi, t_mid`` (median time), ``n``; for each
        quantile ``q`` (as percent ``p``, e.g. ``p5``): ``obs_p5``, ``sim_p5_lo``,
        ``sim_p5_med``, ``sim_p5_hi``; and ``obs_blq``, ``sim_blq_lo``, ``sim_blq_med``,
        ``sim_blq_hi`` (fractions below LLOQ).

    Examples
    --------
    >>> t = np.array([1.0, 1.0, 2.0, 2.0])
    >>> sims = np.array([[1.0, 3.0, 2.0, 4.0], [2.0, 4.0, 3.0, 5.0]])
    >>> tab = vpc_table(t, np.array([1.0, 2.0, 3.0, 4.0]), None, sims, edges=np.array([1, 1.5, 2]),
    ...                 quantiles=(0.5,))
    >>> tab[["obs_p50", "sim_p50_med"]].values.tolist()
    [[1.5, 2.5], [3.5, 3.5]]
    """
    time = np.asarray(time, dtype=float)
    dv = np.asarray(dv, dtype=float)
    sims = np.atleast_2d(np.asarray(sims, dtype=float))
    n = time.size
    blq = np.zeros(n, dtype=bool) if blq is None else np.asarray(blq, dtype=bool)
    lloq = np.full(n, np.nan) if lloq is None else np.asarray(lloq, dtype=float)
    has_lloq = bool(np.any(np.isfinite(lloq)) or np.any(blq))
    if edges is None:
        edges = time_bin_edges(time, n_bins)
    edges = np.asarray(edges, dtype=float)
    bins = assign_bins(time, edges)

    obs_c = np.where(blq, -np.inf, dv)
    with np.errstate(invalid="ignore"):
        sim_blq = np.isfinite(lloq)[None, :] & (sims < lloq[None, :])
    sim_c = np.where(sim_blq, -np.inf, sims)

    qs = np.asarray(quantiles, dtype=float)
    tail = (1.0 - interval) / 2.0
    rows = []
    for b in range(edges.size - 1):
        idx = np.flatnonzero(bins == b)
        if idx.size == 0:
            continue
        ob = obs_c[idx]
        sb = sim_c[:, idx]
        if pred is not None:
            p = np.asarray(pred, dtype=float)[idx]
            # a PRED of 0 (e.g. a pre-dose sample of a drug without baseline) cannot be
            # corrected: such observations keep their value
            usable = np.isfinite(p) & (p > 0)
            ref = np.median(p[usable]) if usable.any() else 1.0
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(usable, ref / np.where(usable, p, 1.0), 1.0)
                ob = ob * factor
                sb = sb * factor[None, :]
        row = {
            "bin": b, "t_lo": edges[b], "t_hi": edges[b + 1],
            "t_mid": float(np.median(time[idx])), "n": int(idx.size),
        }
        obs_q = _censored_quantiles(ob, qs)
        sim_q = _censored_quantiles(sb, qs)  # (R, nq), NaN where censored
        for j, q in enumerate(qs):
            key = f"p{100 * q:g}"
            row[f"obs_{key}"] = obs_q[j]
            col = sim_q[:, j]
            # replicates whose percentile is censored sit below every finite value
            col = np.where(np.isnan(col), -np.inf, col)
            lo, med, hi = _censored_quantiles(col, np.array([tail, 0.5, 1.0 - tail]))
            row[f"sim_{key}_lo"], row[f"sim_{key}_med"], row[f"sim_{key}_hi"] = lo, med, hi
        if has_lloq:
            frac = sim_blq[:, idx].mean(axis=1)
            row["obs_blq"] = float(blq[idx].mean())
            lo, med, hi = np.quantile(frac, [tail, 0.5, 1.0 - tail])
            row["sim_blq_lo"], row["sim_blq_med"], row["sim_blq_hi"] = lo, med, hi
        else:
            row["obs_blq"] = row["sim_blq_lo"] = row["sim_blq_med"] = row["sim_blq_hi"] = np.nan
        rows.append(row)
    return pd.DataFrame(rows)
