"""Figures of the report: ArviZ plots for MCMC diagnostics, matplotlib for the
pharmacometric ones. Every function returns matplotlib figures; :func:`to_png` renders them
with the Agg canvas. The pharmacometric figures are plain ``matplotlib.figure.Figure`` objects
(no pyplot state, no change of the user's backend); ArviZ's figures are closed once rendered.
"""

from __future__ import annotations

import io
import warnings

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "to_png", "rank_plot", "prior_posterior_plot", "khat_plot", "gof_figure",
    "individual_pages", "vpc_figure",
]

DPI = 80
OBS_COLOR = "#1f3b73"
SIM_COLOR = "#e07b39"


def to_png(fig) -> bytes:
    """Render *fig* as PNG bytes and close it."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float], **kwargs):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _figure_of(pc):
    fig = pc.get_viz("figure")
    if not hasattr(fig, "savefig"):  # pragma: no cover - other backends
        raise TypeError("expected a matplotlib figure from ArviZ")
    return fig


def rank_plot(datatree, var_names: list[str]):
    """Rank (fractional ECDF) plots per chain, ``arviz.plot_rank``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _figure_of(az.plot_rank(datatree, var_names=var_names, backend="matplotlib"))


def trace_plot(datatree, var_names: list[str]):
    """Trace and marginal density per chain, ``arviz.plot_trace_dist``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _figure_of(az.plot_trace_dist(datatree, var_names=var_names,
                                             backend="matplotlib"))


def posterior_window(posterior: np.ndarray, widen: float = 1.5) -> tuple[float, float]:
    """The x range of a prior-against-posterior panel: the posterior's central 99 % widened by
    *widen* times its width on each side (a vague prior would otherwise squash the posterior
    into a spike).

    Examples
    --------
    >>> posterior_window(np.linspace(0.0, 1.0, 1001), widen=1.0)
    (-0.985, 1.985)
    """
    x = np.asarray(posterior, dtype=float).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (0.0, 1.0)
    lo, hi = np.quantile(x, [0.005, 0.995])
    span = hi - lo if hi > lo else max(abs(lo), 1.0) * 0.1
    return (round(float(lo - widen * span), 12), round(float(hi + widen * span), 12))


def prior_posterior_plot(datatree, var_names: list[str]):
    """Prior against posterior marginals, ``arviz.plot_prior_posterior``, each panel's x axis
    limited to :func:`posterior_window` of its posterior and to the range of the draws."""
    n_rows = -(-len(var_names) // 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = _figure_of(az.plot_prior_posterior(
            datatree, var_names=var_names, backend="matplotlib",
            figure_kwargs={"figsize": (12, 3.0 * n_rows + 0.6)}))
    post, prior = datatree["posterior"], datatree["prior"]
    for ax in fig.axes:
        name = ax.get_title()
        if name in var_names:
            lo, hi = posterior_window(post[name].values)
            both = np.concatenate([np.ravel(post[name].values), np.ravel(prior[name].values)])
            both = both[np.isfinite(both)]
            if both.size:  # stay inside the values drawn (the parameter's support)
                lo, hi = max(lo, float(both.min())), min(hi, float(both.max()))
            if hi > lo:
                ax.set_xlim(lo, hi)
    return fig


def khat_plot(loo_result, threshold: float):
    """Pareto k per observation, ``arviz.plot_khat``, with the threshold drawn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = _figure_of(az.plot_khat(loo_result, backend="matplotlib"))
    for ax in fig.axes:
        ax.axhline(threshold, color="#b00020", lw=1, ls="--")
        ax.set_xlabel("observation")
    return fig


def _log_ok(*arrays: np.ndarray) -> bool:
    vals = np.concatenate([np.asarray(a, dtype=float).reshape(-1) for a in arrays])
    vals = vals[np.isfinite(vals)]
    return vals.size > 0 and bool(np.all(vals > 0)) and vals.max() / vals.min() > 20


def gof_figure(output: str, unit: str, time_unit: str, tab: pd.DataFrame):
    """Goodness of fit for one output, 2 x 2 panels.

    Parameters
    ----------
    output, unit, time_unit : str
        Labels.
    tab : pandas.DataFrame
        Columns ``TIME, DV, BLQ, PRED, IPRED`` (posterior medians; PRED/IPRED may be NaN),
        optionally ``EPRED`` (posterior predictive median, used where PRED is missing) and
        ``NPDE`` (may be NaN) for one output.
    """
    unc = tab[~tab["BLQ"]]
    fig, axes = _subplots(2, 2, (9, 8))
    ulab = f" ({unit})" if unit else ""
    tlab = f" ({time_unit})" if time_unit else ""
    pcol, plabel = "PRED", "population prediction (PRED)"
    if not np.isfinite(unc["PRED"].to_numpy(float)).any() and "EPRED" in unc:
        pcol, plabel = "EPRED", "posterior predictive median (EPRED)"
    for ax, col, label in ((axes[0, 0], pcol, plabel),
                           (axes[0, 1], "IPRED", "individual prediction (IPRED)")):
        x, y = unc[col].to_numpy(float), unc["DV"].to_numpy(float)
        if np.isfinite(x).any():
            ax.scatter(x, y, s=14, color=OBS_COLOR, alpha=0.7)
            both = np.concatenate([x, y])
            both = both[np.isfinite(both)]
            lo, hi = both.min(), both.max()
            ax.plot([lo, hi], [lo, hi], color="k", lw=1)
            if _log_ok(x, y):
                ax.set_xscale("log")
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, f"{col} not in the fit", ha="center", transform=ax.transAxes)
        ax.set_xlabel(label + ulab)
        ax.set_ylabel("observed" + ulab)
    for ax, col, label in ((axes[1, 0], "TIME", "time" + tlab),
                           (axes[1, 1], pcol, pcol + ulab)):
        x, y = unc[col].to_numpy(float), unc["NPDE"].to_numpy(float)
        if np.isfinite(y).any() and np.isfinite(x).any():
            ax.scatter(x, y, s=14, color=OBS_COLOR, alpha=0.7)
            for h, ls in ((0, "-"), (-1.645, "--"), (1.645, "--")):
                ax.axhline(h, color="k", lw=1, ls=ls)
            if col != "TIME" and _log_ok(x):
                ax.set_xscale("log")
        else:
            ax.text(0.5, 0.5, "NPDE not available", ha="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("NPDE")
    n_blq = int(tab["BLQ"].sum())
    fig.suptitle(f"{output}: goodness of fit" + (f" ({n_blq} BLQ not shown)" if n_blq else ""))
    fig.tight_layout()
    return fig


def individual_pages(output: str, unit: str, time_unit: str, tab: pd.DataFrame,
                     ppc_band: np.ndarray | None, per_page: int = 12) -> list:
    """Observations, IPRED and the 90 % posterior predictive band per subject, paged.

    Parameters
    ----------
    tab : pandas.DataFrame
        Columns ``ID, TIME, DV, BLQ, LLOQ, IPRED`` for one output.
    ppc_band : numpy.ndarray, shape (3, n) or None
        5th, 50th and 95th percentiles of the posterior predictive DV per row of *tab*.
    per_page : int, default 12
        Subjects per figure.
    """
    ids = list(pd.unique(tab["ID"]))
    figs = []
    ncol = 4
    for start in range(0, len(ids), per_page):
        page = ids[start:start + per_page]
        nrow = int(np.ceil(len(page) / ncol))
        fig, axes = _subplots(nrow, ncol, (11, 2.6 * nrow), squeeze=False)
        for ax in axes.flat[len(page):]:
            ax.set_visible(False)
        for ax, sid in zip(axes.flat, page, strict=False):
            m = (tab["ID"] == sid).to_numpy()
            sub = tab[m]
            order = np.argsort(sub["TIME"].to_numpy(float), kind="stable")
            t = sub["TIME"].to_numpy(float)[order]
            if ppc_band is not None:
                band = ppc_band[:, m][:, order]
                ax.fill_between(t, band[0], band[2], color=SIM_COLOR, alpha=0.3, lw=0,
                                label="90% PPI")
                ax.plot(t, band[1], color=SIM_COLOR, lw=1)
            if np.isfinite(sub["IPRED"]).any():
                ax.plot(t, sub["IPRED"].to_numpy(float)[order], color="k", lw=1, label="IPRED")
            unc = sub[~sub["BLQ"]]
            ax.scatter(unc["TIME"], unc["DV"], s=12, color=OBS_COLOR, zorder=3)
            cen = sub[sub["BLQ"]]
            if len(cen):
                ax.scatter(cen["TIME"], cen["LLOQ"], s=16, marker="x", color="#b00020",
                           zorder=3)
            ax.set_title(f"ID {sid}", fontsize=9)
            ax.tick_params(labelsize=7)
        fig.suptitle(f"{output}{f' ({unit})' if unit else ''} against time"
                     f"{f' ({time_unit})' if time_unit else ''}: observed (dots; x = BLQ at "
                     "LLOQ), median IPRED (line), 90% posterior predictive interval (band)",
                     fontsize=9)
        fig.tight_layout()
        figs.append(fig)
    return figs


def vpc_figure(output: str, unit: str, time_unit: str, table: pd.DataFrame,
               corrected: bool, log_scale: bool):
    """pcVPC panel and BLQ-fraction panel from :func:`il2pkpd.report.vpc.vpc_table`."""
    has_blq = bool(np.isfinite(table["obs_blq"]).any())
    nrow = 2 if has_blq else 1
    fig, axes = _subplots(nrow, 1, (8, 4.5 + 2.5 * (nrow - 1)), squeeze=False,
                          gridspec_kw={"height_ratios": [2, 1][:nrow]})
    ax = axes[0, 0]
    t = table["t_mid"].to_numpy(float)
    for key, ls in (("p5", "--"), ("p50", "-"), ("p95", "--")):
        ax.fill_between(t, table[f"sim_{key}_lo"], table[f"sim_{key}_hi"], color=SIM_COLOR,
                        alpha=0.35 if key == "p50" else 0.2, lw=0)
        ax.plot(t, table[f"obs_{key}"], color=OBS_COLOR, ls=ls, marker="o", ms=3)
    if log_scale:
        ax.set_yscale("log")
    lab = ("prediction-corrected " if corrected else "") + output
    ax.set_ylabel(lab + (f" ({unit})" if unit else ""))
    ax.set_title(f"{'pc' if corrected else ''}VPC {output}: observed 5/50/95th percentiles "
                 "(lines), 90% intervals of simulated percentiles (bands)", fontsize=9)
    for edge in np.unique(np.r_[table["t_lo"], table["t_hi"]]):
        ax.axvline(edge, color="0.85", lw=0.8, zorder=0)
    if has_blq:
        bx = axes[1, 0]
        bx.fill_between(t, table["sim_blq_lo"], table["sim_blq_hi"], color=SIM_COLOR,
                        alpha=0.3, lw=0)
        bx.plot(t, table["sim_blq_med"], color=SIM_COLOR, lw=1)
        bx.plot(t, table["obs_blq"], color=OBS_COLOR, marker="o", ms=3)
        bx.set_ylim(-0.02, 1.02)
        bx.set_ylabel("fraction BLQ")
    axes[-1, 0].set_xlabel("time" + (f" ({time_unit})" if time_unit else ""))
    fig.tight_layout()
    return fig
