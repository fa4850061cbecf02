"""Fit results: the ArviZ DataTree, the summary table, per-subject estimates, atomic saving."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from il2pkpd._io import atomic_path, atomic_write_text, mark_complete, mark_incomplete

__all__ = ["FitResult", "summary_table", "individual_table", "diagnostics_warnings",
           "chain_warnings", "step_size_outliers", "chain_step_sizes", "SUMMARY_COLUMNS",
           "RHAT_LIMIT", "ESS_MIN", "STEP_SIZE_OUTLIER"]

SUMMARY_COLUMNS = ["parameter", "mean", "sd", "q5", "median", "q95", "ess_bulk", "ess_tail",
                   "r_hat"]
#: Thresholds for warnings (Vehtari et al. 2021: R-hat <= 1.01, bulk/tail ESS >= 100 per chain
#: overall at least 400 for four chains).
RHAT_LIMIT = 1.01
ESS_MIN = 400.0
#: A chain whose adapted step size is below this fraction of the other chains' median is named
#: in the warnings (on the Friberg benchmark: 0.019 against 0.062-0.087, 4x the leapfrog steps).
STEP_SIZE_OUTLIER = 1.0 / 3.0

#: Helper sites that never belong in the posterior groups.
_SKIP_SITES = ("solver_ok", "domain_")


def summary_table(posterior: xr.Dataset, names: list[str]) -> pd.DataFrame:
    """Posterior summary of scalar quantities.

    Parameters
    ----------
    posterior : xarray.Dataset
        Variables with dims ``(chain, draw)``.
    names : list of str
        Variables to summarise, in order.

    Returns
    -------
    pandas.DataFrame
        Columns ``parameter, mean, sd, q5, median, q95, ess_bulk, ess_tail, r_hat`` (90%
        equal-tailed interval; ESS and R-hat as in Vehtari et al. 2021, NaN with one draw).
    """
    import arviz_stats as azs

    rows = []
    for name in names:
        a = np.asarray(posterior[name].values, dtype=float)
        a = a.reshape(a.shape[0], a.shape[1])
        flat = a.ravel()
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ess_b = float(azs.ess(a, method="bulk")) if a.shape[1] >= 4 else np.nan
            ess_t = (float(azs.ess(a, method="tail", prob=(0.05, 0.95)))
                     if a.shape[1] >= 4 else np.nan)
            rhat = float(azs.rhat(a)) if a.shape[0] >= 1 and a.shape[1] >= 4 else np.nan
        q5, q50, q95 = np.quantile(flat, [0.05, 0.5, 0.95])
        rows.append({"parameter": name, "mean": flat.mean(),
                     "sd": flat.std(ddof=1) if flat.size > 1 else np.nan,
                     "q5": q5, "median": q50, "q95": q95, "ess_bulk": ess_b, "ess_tail": ess_t,
                     "r_hat": rhat})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def individual_table(posterior: xr.Dataset, ids: np.ndarray, varying: tuple[str, ...],
                     constant: dict[str, float]) -> pd.DataFrame:
    """Per-subject parameter estimates: ``ID``, then per parameter the posterior median and a
    90% interval (``<P>``, ``<P>_q5``, ``<P>_q95``); parameters equal for all subjects take
    their typical value's median."""
    out = {"ID": np.asarray(ids)}
    n = len(ids)
    for name in varying:
        a = np.asarray(posterior[f"ind_{name}"].values, dtype=float)
        a = a.reshape(-1, n)
        q5, q50, q95 = np.quantile(a, [0.05, 0.5, 0.95], axis=0)
        out[name] = q50
        out[f"{name}_q5"] = q5
        out[f"{name}_q95"] = q95
    for name, value in constant.items():
        out[name] = np.full(n, value)
    return pd.DataFrame(out)


def diagnostics_warnings(summary: pd.DataFrame, divergences: int, n_draws: int,
                         method: str) -> list[str]:
    """Plain-language warnings on divergences, R-hat and ESS (NUTS only)."""
    if method != "nuts":
        return []
    msgs = []
    if divergences > 0:
        msgs.append(f"{divergences} divergent transition(s) after warm-up "
                    f"({100 * divergences / max(n_draws, 1):.1f}% of draws): the posterior may be "
                    "biased; raise target_accept (e.g. 0.95) or reparameterise.")
    bad = summary[summary["r_hat"] > RHAT_LIMIT]
    if len(bad):
        msgs.append(f"R-hat above {RHAT_LIMIT} for {', '.join(bad['parameter'])} (max "
                    f"{bad['r_hat'].max():.3f}): chains disagree; run longer (more --samples, "
                    "or --thin k: the same draws kept from k times the iterations) or check "
                    "the model.")
    ess_min = min(ESS_MIN, 0.5 * n_draws)
    low = summary[(summary["ess_bulk"] < ess_min) | (summary["ess_tail"] < ess_min)]
    if len(low):
        msgs.append(f"low effective sample size (< {ess_min:.0f}) for "
                    f"{', '.join(low['parameter'])}: estimates and intervals are imprecise; "
                    "draw more samples (--samples, or --thin k).")
    return msgs


def step_size_outliers(step_size, n_chain: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Each chain's adapted step size and whether it lies below :data:`STEP_SIZE_OUTLIER`
    times the median of the other chains' (None when *step_size* is missing, malformed or
    not one per chain)."""
    if step_size is None:
        return None
    try:
        eps = np.ravel(np.asarray(step_size, dtype=float))
    except (TypeError, ValueError):
        return None
    if eps.size != n_chain or n_chain < 2:
        return None
    low = np.array([eps[k] < STEP_SIZE_OUTLIER * np.median(np.delete(eps, k))
                    for k in range(n_chain)])
    return eps, low


def chain_step_sizes(info: dict) -> tuple[list[float] | None, list[float] | None]:
    """Each chain's adapted step size and, with ``--shared-step-size``, the step sizes the
    chains sampled with (None otherwise), from a NUTS run's ``info`` (``fit.json``)."""
    adapted = info.get("step_size_adapted")
    shared = info["step_size"] if adapted and info.get("step_size") is not None else None
    return adapted or info.get("step_size"), shared


def chain_warnings(posterior: xr.Dataset, summary: pd.DataFrame,
                   step_size: list[float] | None = None,
                   steps_per_draw: list[float] | None = None,
                   shared_step_size: float | None = None) -> list[str]:
    """Warnings that name chains: which one differs where R-hat is high, and which one
    adapted a much smaller step size than the others (NUTS, two chains or more).

    Parameters
    ----------
    posterior : xarray.Dataset
        Draws with dims ``(chain, draw)``.
    summary : pandas.DataFrame
        From :func:`summary_table` (``parameter``, ``r_hat``).
    step_size : list of float, optional
        Each chain's adapted step size.
    steps_per_draw : list of float, optional
        Each chain's mean leapfrog steps per kept draw.
    shared_step_size : float, optional
        The step size every chain sampled with (``--shared-step-size``, the median of the
        adapted ones); *step_size* then holds each chain's adapted value, and a chain whose
        warm-up ended far below the others is still named, without the leapfrog comparison
        (every chain takes the same steps).

    Returns
    -------
    list of str
        The per-chain medians (chains numbered from 1) of the (at most three) parameters with
        the highest R-hat above :data:`RHAT_LIMIT`; and, for each chain whose step size is
        below :data:`STEP_SIZE_OUTLIER` times the median of the others', its step size and
        leapfrog steps next to theirs (with *shared_step_size*: its adapted step size and the
        shared one, no leapfrog comparison).
    """
    n_chain = int(posterior.sizes.get("chain", 1))
    if n_chain < 2:
        return []
    msgs = []
    bad = summary[summary["r_hat"] > RHAT_LIMIT].sort_values("r_hat", ascending=False)
    parts = []
    for name in bad["parameter"].head(3):
        if name in posterior:
            med = np.median(np.asarray(posterior[name]).reshape(n_chain, -1), axis=1)
            parts.append(f"{name} " + ", ".join(f"{m:.4g}" for m in med))
    if parts:
        msgs.append("per-chain medians (chains 1-" + f"{n_chain}) where R-hat is highest: "
                    + "; ".join(parts) + ". Where one chain stands apart it has spent its draws "
                    "in a region the others hardly visited (slow mixing, a tail or another "
                    "mode); compare the chains' traces and rank plots (report.html).")
    outliers = step_size_outliers(step_size, n_chain)
    if outliers is None:
        return msgs
    eps, low = outliers
    n = None if steps_per_draw is None else np.ravel(np.asarray(steps_per_draw, dtype=float))
    for k in np.flatnonzero(low):
        others = np.delete(eps, k)
        msg = (f"chain {k + 1} adapted a step size of {eps[k]:.3g} against "
               f"{others.min():.3g}-{others.max():.3g} in the others")
        if shared_step_size is not None:
            msgs.append(msg + f" (all chains sampled with their median, "
                        f"{float(shared_step_size):.3g}): its warm-up ended in a harder "
                        "region (a funnel, a tail or another mode); compare its trace with "
                        "the others' (report.html).")
            continue
        if n is not None and n.size == n_chain:
            rest = np.delete(n, k)
            msg += (f" and took {n[k]:.0f} leapfrog steps per draw ({rest.min():.0f}-"
                    f"{rest.max():.0f})")
        msgs.append(msg + ": its warm-up ended in a harder region (a funnel, a tail or "
                    "another mode), and parallel chains wait for it.")
    return msgs


@dataclass
class FitResult:
    """The outcome of :func:`il2pkpd.inference.fit`.

    Attributes
    ----------
    datatree : xarray.DataTree
        ArviZ groups ``posterior, sample_stats, log_likelihood, posterior_predictive,
        observed_data, constant_data, prior, prior_predictive`` (``sample_stats`` only for
        NUTS). Besides the sampled sites, the posterior holds the random effects ``eta_<P>``
        (subject; log scale for positive parameters, logit for unit-interval ones) and the
        per-observation population and individual predictions ``pred`` and ``ipred`` (obs,
        output units); when those were computed on a thinned subset of the draws (more than
        200 draws in all, by default) they sit in a ``predictions`` group instead, whose
        ``draw`` coordinate lists the draws used (see :mod:`il2pkpd.inference._posthoc`).
    summary : pandas.DataFrame
        Population parameters: ``parameter, mean, sd, q5, median, q95, ess_bulk, ess_tail,
        r_hat``.
    individual : pandas.DataFrame
        Per-subject estimates (``ID`` and one column per parameter, see
        :func:`individual_table`).
    method : str
        ``nuts``, ``map`` or ``laplace``.
    info : dict
        Timings, chain method, divergences, settings.
    warnings : list of str
        Diagnostic warnings (divergences, R-hat, ESS).
    """

    datatree: xr.DataTree
    summary: pd.DataFrame
    individual: pd.DataFrame
    method: str
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``posterior.nc``, ``summary.csv``, ``individual.csv``, ``fit.json`` and the
        ``_COMPLETE`` marker (last), each atomically; returns the folder."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        mark_incomplete(out)
        with atomic_path(out / "posterior.nc") as tmp:
            self.datatree.to_netcdf(tmp, engine="h5netcdf")
        with atomic_path(out / "summary.csv") as tmp:
            self.summary.to_csv(tmp, index=False, float_format="%.6g")
        with atomic_path(out / "individual.csv") as tmp:
            self.individual.to_csv(tmp, index=False, float_format="%.6g")
        atomic_write_text(out / "fit.json", json.dumps(
            {"method": self.method, "info": _jsonable(self.info), "warnings": self.warnings},
            indent=2) + "\n")
        mark_complete(out)
        return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    return str(x)


def keep_site(name: str) -> bool:
    """Whether a NumPyro site belongs in the posterior."""
    return not name.startswith(_SKIP_SITES)
