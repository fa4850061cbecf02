"""Posterior diagnostics computed from a saved DataTree: convergence, shrinkage, LOO.

Thresholds (stated in the report): R-hat <= 1.01, bulk and tail ESS >= 400, no divergent
transitions, E-BFMI >= 0.3 in every chain, no transition at the maximum tree depth.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from il2pkpd.report.fitdir import SAMPLE_DIMS, FitData, draws
from il2pkpd.report.shrinkage import eta_shrinkage_value

__all__ = [
    "RHAT_MAX", "ESS_MIN", "EBFMI_MIN", "population_vars", "convergence_table",
    "sampler_checks", "chain_table", "parameter_table", "shrinkage_table", "loo_summary",
    "data_summary",
]

RHAT_MAX = 1.01
ESS_MIN = 400.0
EBFMI_MIN = 0.3
PARETO_K_MAX = 0.7
PREDICTION_VARS = {"pred", "ipred", "PRED", "IPRED"}
NOT_COVARIATES = {"ID", "TIME", "DVID", "MDV", "BLQ", "LLOQ", "obs_mask", "OUTPUT", "CMT", "ROW",
                  "subject_ID", "EVID", "AMT"}


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "warn")


def population_vars(posterior: xr.Dataset) -> list[str]:
    """Posterior variables with no dimension other than chain and draw (population level)."""
    return [
        name for name, da in posterior.data_vars.items()
        if set(da.dims) <= set(SAMPLE_DIMS) and name not in PREDICTION_VARS
    ]


def _grouped_vars(posterior: xr.Dataset) -> list[str]:
    """Random effects and other per-subject variables (not per-observation predictions)."""
    return [
        name for name, da in posterior.data_vars.items()
        if not set(da.dims) <= set(SAMPLE_DIMS) and name not in PREDICTION_VARS
        and "obs" not in da.dims
    ]


def convergence_table(fit: FitData) -> pd.DataFrame:
    """R-hat, bulk and tail ESS per population parameter, and the worst over each vector.

    Returns
    -------
    pandas.DataFrame
        Columns ``parameter, r_hat, ess_bulk, ess_tail, status`` (pass/warn against
        :data:`RHAT_MAX` and :data:`ESS_MIN`; ``n/a`` where R-hat is undefined, e.g. the single
        chain of draws of a FOCE-I, Laplace or SVI fit). Vector variables (``eta_CL`` over
        subjects) get one row named ``eta_CL (worst of n)``.
    """
    post = fit.datatree["posterior"].to_dataset()
    rows = []
    names = population_vars(post) + _grouped_vars(post)
    if not names:
        return pd.DataFrame(columns=["parameter", "r_hat", "ess_bulk", "ess_tail", "status"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = az.rhat(post[names])
        bulk = az.ess(post[names], method="bulk")
        tail = az.ess(post[names], method="tail")
    for name in names:
        r = np.asarray(rhat[name].values, dtype=float).reshape(-1)
        b = np.asarray(bulk[name].values, dtype=float).reshape(-1)
        t = np.asarray(tail[name].values, dtype=float).reshape(-1)
        # elements fixed in every draw (e.g. the unit diagonal of a Cholesky factor) say nothing
        x = draws(post[name]).reshape(-1, r.size)
        varies = np.ptp(x, axis=0) > 0
        if not varies.any():
            continue
        r, b, t = r[varies], b[varies], t[varies]
        label = name if r.size == 1 else f"{name} (worst of {r.size})"
        with warnings.catch_warnings():   # one chain (FOCE-I, Laplace, SVI draws): no R-hat
            warnings.simplefilter("ignore", RuntimeWarning)
            r_w, b_w, t_w = np.nanmax(r), np.nanmin(b), np.nanmin(t)
        ok = bool(r_w <= RHAT_MAX and b_w >= ESS_MIN and t_w >= ESS_MIN)
        # no R-hat (one chain of independent draws from an approximation): nothing to judge
        status = _status(ok) if np.isfinite(r_w) else "n/a"
        rows.append({"parameter": label, "r_hat": r_w, "ess_bulk": b_w, "ess_tail": t_w,
                     "status": status})
    return pd.DataFrame(rows)


def sampler_checks(fit: FitData, max_tree_depth: int = 10) -> pd.DataFrame:
    """Divergences, E-BFMI and tree depth saturation, each with its threshold and status.

    Returns
    -------
    pandas.DataFrame
        Columns ``check, value, threshold, status`` (status ``n/a`` when the sample stats do not
        hold the quantity).
    """
    rows = []
    ss = (fit.datatree["sample_stats"].to_dataset()
          if "sample_stats" in fit.datatree.children else xr.Dataset())
    if "diverging" in ss:
        n_div = int(np.asarray(ss["diverging"].values).sum())
        total = int(ss["diverging"].size)
        rows.append({"check": "divergent transitions", "value": f"{n_div} of {total}",
                     "threshold": "0", "status": _status(n_div == 0)})
    else:
        rows.append({"check": "divergent transitions", "value": "not recorded",
                     "threshold": "0", "status": "n/a"})
    if "energy" in ss:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            e = az.bfmi(fit.datatree)
        vals = np.asarray(e["energy"].values, dtype=float).reshape(-1)
        rows.append({"check": "E-BFMI (lowest chain)", "value": f"{np.nanmin(vals):.3f}",
                     "threshold": f">= {EBFMI_MIN}", "status": _status(bool(
                         np.nanmin(vals) >= EBFMI_MIN))})
    else:
        rows.append({"check": "E-BFMI (lowest chain)", "value": "energy not recorded",
                     "threshold": f">= {EBFMI_MIN}", "status": "n/a"})
    sat = _at_max_depth(ss, max_tree_depth)
    if sat is None:
        rows.append({"check": "tree depth saturation", "value": "tree depth not recorded",
                     "threshold": "0 transitions", "status": "n/a"})
    else:
        rows.append({"check": "tree depth saturation",
                     "value": f"{int(sat.sum())} of {sat.size} at depth {max_tree_depth}",
                     "threshold": "0 transitions", "status": _status(int(sat.sum()) == 0)})
    return pd.DataFrame(rows)


def _at_max_depth(ss: xr.Dataset, max_tree_depth: int) -> np.ndarray | None:
    """Transitions that hit the maximum tree depth, (chain, draw) booleans (None: unknown)."""
    if "reached_max_tree_depth" in ss:
        return np.asarray(ss["reached_max_tree_depth"].values).astype(bool)
    if "tree_depth" in ss:
        return np.asarray(ss["tree_depth"].values) >= max_tree_depth
    if "n_steps" in ss:
        return np.asarray(ss["n_steps"].values) >= 2**max_tree_depth - 1
    return None


def chain_table(fit: FitData, max_tree_depth: int = 10) -> pd.DataFrame | None:
    """The sampler's behaviour chain by chain (NUTS with two chains or more).

    Parameters
    ----------
    fit : FitData
    max_tree_depth : int
        The run's maximum tree depth (as :func:`sampler_checks`).

    Returns
    -------
    pandas.DataFrame or None
        One row per chain (numbered from 1): ``step size`` (the adapted one, from
        ``fit.json``; with ``--shared-step-size`` also ``sampled with``, the shared median),
        ``leapfrog steps per draw`` (mean), ``divergences``, ``E-BFMI``, ``at max tree
        depth`` and ``status``: ``warn`` for a chain with divergences, E-BFMI
        below :data:`EBFMI_MIN` (or undefined), transitions at *max_tree_depth* or a step
        size flagged by :func:`il2pkpd.inference.results.step_size_outliers` (such a chain
        found a harder region, and parallel chains wait for it). None without sample stats or
        with one chain.
    """
    from il2pkpd.inference.results import chain_step_sizes, step_size_outliers

    if "sample_stats" not in fit.datatree.children:
        return None
    ss = fit.datatree["sample_stats"].to_dataset()
    n_chain = int(ss.sizes.get("chain", 1))
    if n_chain < 2:
        return None
    info = fit.meta.get("info") if isinstance(fit.meta.get("info"), dict) else {}
    adapted, shared = chain_step_sizes(info)    # flag by the adapted ones, not the shared
    outliers = step_size_outliers(adapted, n_chain)
    shared = None if shared is None else np.ravel(shared)
    sat_all = _at_max_depth(ss, max_tree_depth)
    bfmi = None
    if "energy" in ss:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            bfmi = np.asarray(az.bfmi(fit.datatree)["energy"].values, dtype=float).reshape(-1)
    rows = []
    for c in range(n_chain):
        row: dict = {"chain": c + 1}
        warn = False
        if outliers is not None:
            row["step size"] = f"{outliers[0][c]:.3g}"
            warn |= bool(outliers[1][c])
            if shared is not None and shared.size == n_chain:
                row["sampled with"] = f"{shared[c]:.3g}"
        if "n_steps" in ss:
            row["leapfrog steps per draw"] = f"{float(ss['n_steps'].values[c].mean()):.1f}"
        if "diverging" in ss:
            n_div = int(np.asarray(ss["diverging"].values[c]).sum())
            row["divergences"] = n_div
            warn |= n_div > 0
        if bfmi is not None and bfmi.size == n_chain:
            row["E-BFMI"] = f"{bfmi[c]:.3f}"
            warn |= not bool(bfmi[c] >= EBFMI_MIN)       # NaN (energy constant): warn
        if sat_all is not None:
            sat = int(sat_all[c].sum())
            row["at max tree depth"] = sat
            warn |= sat > 0
        row["status"] = _status(not warn)
        rows.append(row)
    return pd.DataFrame(rows)


def parameter_table(fit: FitData) -> pd.DataFrame:
    """Population parameters: unit, mean, sd, 90 % credible interval (5 %, 95 %), median.

    Taken from the DataTree (``arviz.summary`` with 90 % equal-tailed intervals); the unit
    comes from the model file for typical values (blank otherwise: ``omega``/``corr`` are on
    the log or correlation scale and carry none).
    """
    post = fit.datatree["posterior"].to_dataset()
    names = population_vars(post)
    params = (fit.model or {}).get("parameters") or {}
    rows = []
    for name in names:
        x = draws(post[name]).reshape(-1).astype(float)
        unit = ""
        if isinstance(params.get(name), dict):
            unit = str(params[name].get("unit", ""))
        q5, q50, q95 = np.quantile(x, [0.05, 0.5, 0.95])
        sd = x.std(ddof=1) if x.size > 1 else np.nan
        rows.append({"parameter": name, "unit": unit, "mean": x.mean(), "sd": sd,
                     "q5": q5, "median": q50, "q95": q95})
    return pd.DataFrame(rows, columns=["parameter", "unit", "mean", "sd", "q5", "median", "q95"])


def _eta_draws(post: xr.Dataset) -> dict[str, xr.DataArray]:
    """Random-effect draws by parameter, each with dims (chain, draw, subject)."""
    out: dict[str, xr.DataArray] = {}
    for name, da in post.data_vars.items():
        if name.startswith("eta_") and "subject" in da.dims and da.ndim == 3:
            out[name[len("eta_"):]] = da
    for var, scaled in (("eta", False), ("z", True)):
        da = post.get(var)
        if out or da is None or "subject" not in da.dims or da.ndim != 4:
            continue
        if scaled and any(n.startswith("corr_") for n in post.data_vars):
            continue  # correlated blocks: eta is not omega * z
        iiv = next(d for d in da.dims if d not in (*SAMPLE_DIMS, "subject"))
        for k, par in enumerate(da[iiv].values):
            par = str(par)
            piece = da.isel({iiv: k}, drop=True)
            if scaled:
                if f"omega_{par}" not in post:
                    continue
                piece = piece * post[f"omega_{par}"]
            out[par] = piece
    return out


def shrinkage_table(fit: FitData) -> pd.DataFrame:
    """Eta shrinkage per random effect: ``1 - sd_subjects(posterior mean of eta_i) / omega``.

    ``omega`` is the posterior mean of ``omega_<P>``. The random effects are ``eta_<P>``, or
    ``eta`` / ``omega_<P> * z`` over ``(subject, iiv)`` (see :mod:`il2pkpd.report.fitdir`).
    Values near 1 mean the data say little about the individual parameter (individual plots
    then reflect the prior).

    Returns
    -------
    pandas.DataFrame
        Columns ``random_effect, omega, sd_eta, shrinkage``.
    """
    post = fit.datatree["posterior"].to_dataset()
    rows = []
    for par, da in _eta_draws(post).items():
        om_name = f"omega_{par}"
        if om_name not in post:
            continue
        sample = [d for d in SAMPLE_DIMS if d in da.dims]
        eta = da.transpose(*sample, ...).values            # sample axes first, subjects last
        omega, sd, shrink = eta_shrinkage_value(eta, post[om_name].values)
        rows.append({"random_effect": f"eta_{par}", "omega": omega, "sd_eta": sd,
                     "shrinkage": shrink})
    return pd.DataFrame(rows, columns=["random_effect", "omega", "sd_eta", "shrinkage"])


def loo_summary(fit: FitData):
    """PSIS-LOO (``arviz.loo``) on the saved log likelihood.

    Observations whose log likelihood is the same in every draw (for instance BLQ records far
    below the limit, whose censored likelihood is 1) have uniform importance weights: their
    leave-one-out contribution is exactly that constant, and Pareto smoothing is undefined for
    them, so they are added exactly and left out of ``arviz.loo`` (their Pareto k is NaN).

    Returns
    -------
    (summary, result) : (pandas.DataFrame, arviz.ELPDData) or (None, None)
        The summary has rows ``elpd_loo`` (with its standard error), ``p_loo`` and the number
        of observations whose Pareto k exceeds ArviZ's reliability threshold (``summary.attrs``:
        ``good_k``, ``n_bad``, ``n_const``, ``pareto_k`` per observation). *result* is the
        ``arviz.loo`` result on the non-constant observations (None when every observation
        is constant). ``(None, None)`` when there is no log likelihood.
    """
    if not fit.has_group("log_likelihood"):
        return None, None
    ll_ds = fit.datatree["log_likelihood"].to_dataset()
    var_name = "DV" if "DV" in ll_ds.data_vars else next(iter(ll_ds.data_vars))
    da = ll_ds[var_name]
    other = [d for d in da.dims if d not in SAMPLE_DIMS]
    if len(other) != 1:
        da = da.stack(__obs__=other)
        da = da.drop_vars([c for c in da.coords if c not in SAMPLE_DIMS]).rename(
            {"__obs__": "obs"})
        obs_dim = "obs"
    else:
        obs_dim = other[0]
    vals = draws(da).reshape(-1, da.sizes[obs_dim])
    const = np.ptp(vals, axis=0) <= 1e-12 * np.maximum(1.0, np.abs(vals).max(axis=0))
    if const.all():
        table = pd.DataFrame([
            {"quantity": "elpd_loo", "estimate": float(vals[0].sum()), "se": np.nan},
            {"quantity": "observations with constant log likelihood (exact)",
             "estimate": int(const.size), "se": np.nan}])
        table.attrs.update(good_k=PARETO_K_MAX, n_bad=0, n_const=int(const.size),
                           pareto_k=np.full(const.size, np.nan))
        return table, None
    sub = xr.DataTree.from_dict({
        "posterior": fit.datatree["posterior"].to_dataset(),
        "log_likelihood": da.isel({obs_dim: np.flatnonzero(~const)}).to_dataset(name=var_name),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = az.loo(sub, var_name=var_name, pointwise=True)
    k_sub = np.asarray(getattr(res.pareto_k, "values", res.pareto_k), dtype=float).reshape(-1)
    k = np.full(const.size, np.nan)
    k[~const] = k_sub
    elpd_i = np.empty(const.size)
    elpd_i[const] = vals[0, const]
    elpd_i[~const] = np.asarray(getattr(res.elpd_i, "values", res.elpd_i), float).reshape(-1)
    elpd = float(elpd_i.sum())
    se = float(np.sqrt(elpd_i.size * np.var(elpd_i))) if const.any() else float(res.se)
    good_k = float(getattr(res, "good_k", PARETO_K_MAX) or PARETO_K_MAX)
    n_bad = int(np.sum(k_sub > good_k))
    table = pd.DataFrame([
        {"quantity": "elpd_loo", "estimate": elpd, "se": se},
        {"quantity": "p_loo", "estimate": float(res.p), "se": np.nan},
        {"quantity": f"observations with Pareto k > {good_k:.2f}", "estimate": n_bad,
         "se": np.nan},
        {"quantity": "observations with constant log likelihood (exact)",
         "estimate": int(const.sum()), "se": np.nan},
    ])
    table.attrs.update(good_k=good_k, n_bad=n_bad, n_const=int(const.sum()), pareto_k=k)
    return table, res


def data_summary(fit: FitData) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """Counts: subjects and observations per output with the BLQ fraction; doses; covariates.

    Returns
    -------
    (outputs, doses, covariates)
        *outputs*: ``output, DVID, subjects, observations, BLQ, BLQ fraction``; *doses* (from
        the dataset, None without one): ``route, CMT, doses, subjects``; *covariates*: one row
        per covariate with min, median and max over subjects (None when there are none).
    """
    obs = fit.obs
    rows = []
    for (dvid, name), grp in obs.groupby(["DVID", "OUTPUT"], sort=True):
        rows.append({"output": name, "DVID": int(dvid), "subjects": grp["ID"].nunique(),
                     "observations": len(grp), "BLQ": int(grp["BLQ"].sum()),
                     "BLQ fraction": float(grp["BLQ"].mean())})
    outputs = pd.DataFrame(rows)

    doses = None
    covs = None
    df = fit.dataset
    if df is not None and {"EVID", "AMT"} <= set(df.columns):
        d = df[df["EVID"].isin([1, 4])]
        rate = d["RATE"] if "RATE" in d.columns else pd.Series(0.0, index=d.index)
        route = np.where(rate.fillna(0) != 0, "infusion", "bolus / first-order")
        cmt = d["CMT"] if "CMT" in d.columns else pd.Series(1, index=d.index)
        comp = ((fit.model or {}).get("compartments") or {})
        names = [f"{c} ({comp.get(str(int(c)), '?')})" if comp else str(c) for c in cmt]
        dd = pd.DataFrame({"route": route, "CMT": names, "ID": d["ID"].to_numpy()})
        doses = (dd.groupby(["route", "CMT"]).agg(doses=("ID", "size"), subjects=("ID", "nunique"))
                 .reset_index())
        known = {"ID", "TIME", "AMT", "RATE", "II", "ADDL", "SS", "EVID", "CMT", "MDV", "DV",
                 "DVID", "BLQ", "LLOQ", "LINE"}
        cov_cols = [c for c in df.columns if c not in known
                    and pd.api.types.is_numeric_dtype(df[c])]
        if cov_cols:
            first = df.groupby("ID")[cov_cols].first()
            covs = pd.DataFrame({"covariate": cov_cols,
                                 "min": [first[c].min() for c in cov_cols],
                                 "median": [first[c].median() for c in cov_cols],
                                 "max": [first[c].max() for c in cov_cols]})
    if covs is None and "constant_data" in fit.datatree.children:
        const = fit.datatree["constant_data"].to_dataset()
        n_sub = obs["ID"].nunique()
        cov_rows = []
        for name, da in const.data_vars.items():
            if name in NOT_COVARIATES:
                continue
            vals = np.asarray(da.values).reshape(-1)
            if vals.size == n_sub and np.issubdtype(vals.dtype, np.number):
                label = name[len("cov_"):] if name.startswith("cov_") else name
                cov_rows.append({"covariate": label, "min": np.nanmin(vals),
                                 "median": np.nanmedian(vals), "max": np.nanmax(vals)})
        covs = pd.DataFrame(cov_rows) if cov_rows else None
    return outputs, doses, covs
