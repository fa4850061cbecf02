"""`build_report`: from a fit directory to ``report.html`` and ``figures/*.png``."""

from __future__ import annotations

import re
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from il2pkpd._io import atomic_write_bytes, atomic_write_text
from il2pkpd.report import diagnostics as dg
from il2pkpd.report import plots
from il2pkpd.report.fitdir import FitData, load_fit_dir
from il2pkpd.report.html import Section, render_page
from il2pkpd.report.npde import npde
from il2pkpd.report.vpc import vpc_table

__all__ = ["build_report", "SECTION_IDS"]

SECTION_IDS = (
    "data", "convergence", "parameters", "prior-posterior", "shrinkage", "gof", "individual",
    "vpc", "loo", "notes",
)
MAX_DIAG_VARS = 12


class _Figures:
    """Collects figures: writes each to ``figures/<name>.png`` and embeds it in a section."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.names: list[str] = []

    def add(self, section: Section, name: str, fig, caption: str) -> None:
        png = plots.to_png(fig)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "figure"
        stem = safe
        k = 2
        while stem in self.names:
            stem = f"{safe}_{k}"
            k += 1
        self.names.append(stem)
        atomic_write_bytes(self.folder / f"{stem}.png", png)
        section.image(png, caption, alt=caption)


def build_report(fit_dir: str | Path, *, n_bins: int = 8, subjects_per_page: int = 12,
                 max_tree_depth: int = 10) -> Path:
    """Write ``fit_dir/report.html`` (self-contained) and ``fit_dir/figures/*.png``.

    PNG files left in ``figures/`` by an earlier build and not made again are removed.

    Parameters
    ----------
    fit_dir : str or pathlib.Path
        A fit directory (see :mod:`il2pkpd.report.fitdir` for the names read).
    n_bins : int, default 8
        Time bins of the visual predictive checks (at quantiles of the observation times).
    subjects_per_page : int, default 12
        Subjects per individual-fit figure.
    max_tree_depth : int, default 10
        NUTS maximum tree depth used by the fit (for the saturation check) when the sample
        stats do not say; ``fit.json`` key ``max_tree_depth`` overrides it.

    Returns
    -------
    pathlib.Path
        The report file.
    """
    fit = load_fit_dir(fit_dir)
    fit_dir = Path(fit_dir)
    figs = _Figures(fit_dir / "figures")
    med = _medians(fit)
    builders: list[tuple[str, str, Callable[[Section], None]]] = [
        ("data", "Data summary", lambda s: _data_section(s, fit)),
        ("convergence", "Convergence",
         lambda s: _convergence_section(s, fit, figs, max_tree_depth)),
        ("parameters", "Parameters", lambda s: _parameter_section(s, fit)),
        ("prior-posterior", "Prior against posterior", lambda s: _prior_section(s, fit, figs)),
        ("shrinkage", "Shrinkage", lambda s: _shrinkage_section(s, fit)),
        ("gof", "Goodness of fit", lambda s: _gof_section(s, fit, figs, med)),
        ("individual", "Individual fits",
         lambda s: _individual_section(s, fit, figs, med, subjects_per_page)),
        ("vpc", "Visual predictive checks", lambda s: _vpc_section(s, fit, figs, med, n_bins)),
        ("loo", "PSIS-LOO", lambda s: _loo_section(s, fit, figs)),
    ]
    sections = []
    for sid, title, make in builders:
        section = Section(sid, title)
        try:
            make(section)
        except Exception as exc:  # a broken piece must not hide the rest of the report
            section.missing(f"This section could not be built: {type(exc).__name__}: {exc}")
            section.text("".join(traceback.format_exception_only(exc)).strip())
        sections.append(section)
    notes = Section("notes", "Notes on the fit directory")
    if fit.notes:
        for note in fit.notes:
            notes.text(note)
    else:
        notes.text("Every expected piece of the fit directory was found.")
    sections.append(notes)

    model_name = ((fit.model or {}).get("model") or {}).get("name", "")
    title = "il2pkpd posterior report" + (f": {model_name}" if model_name else "")
    subtitle = f"fit directory {fit_dir.resolve()}"
    page = render_page(title, subtitle, sections)
    out = fit_dir / "report.html"
    atomic_write_text(out, page)
    for old in figs.folder.glob("*.png"):  # figures of an earlier build that is now replaced
        if old.stem not in figs.names:
            old.unlink(missing_ok=True)
    return out


def _medians(fit: FitData) -> pd.DataFrame:
    """Per-observation table with posterior medians of PRED, IPRED and NPDE."""
    tab = fit.obs.copy()
    with warnings.catch_warnings():  # a failed solve gives NaN in every draw: NaN median
        warnings.simplefilter("ignore", RuntimeWarning)
        for col, arr in (("PRED", fit.pred), ("IPRED", fit.ipred), ("EPRED", fit.ppc)):
            tab[col] = np.nanmedian(arr, axis=0) if arr is not None else np.nan
    tab["NPDE"] = np.nan
    tab["DECORRELATED"] = False
    if fit.ppc is not None:
        for _, idx in tab.groupby("OUTPUT", sort=False).indices.items():
            res = npde(tab["ID"].to_numpy()[idx], tab["DV"].to_numpy(float)[idx],
                       fit.ppc[:, idx], censored=tab["BLQ"].to_numpy()[idx])
            tab.loc[tab.index[idx], "NPDE"] = res["npde"].to_numpy()
            tab.loc[tab.index[idx], "DECORRELATED"] = res["decorrelated"].to_numpy()
    return tab


def _data_section(s: Section, fit: FitData) -> None:
    outputs, doses, covs = dg.data_summary(fit)
    ids = list(pd.unique(fit.obs["ID"]))
    s.text(f"{len(ids)} subjects, {len(fit.obs)} observations used.")
    shown = ", ".join(str(i) for i in ids[:60]) + (" ..." if len(ids) > 60 else "")
    s.text(f"Subject IDs: {shown}")
    s.table(outputs, "Observations per output (BLQ: below the limit of quantification)")
    if doses is None:
        s.missing("Doses by route: the fit directory names no dataset (fit.json 'data' or "
                  "data.csv), so doses cannot be summarised.")
    else:
        s.table(doses, "Dose records by route and compartment")
    if covs is None:
        s.text("No covariates recorded.")
    else:
        s.table(covs, "Covariates (per subject: baseline value)")
    if fit.model_path is not None:
        s.text(f"Model file: {fit.model_path}")


def _diag_vars(fit: FitData) -> list[str]:
    post = fit.datatree["posterior"].to_dataset()
    return dg.population_vars(post)[:MAX_DIAG_VARS]


def _convergence_section(s: Section, fit: FitData, figs: _Figures, depth: int) -> None:
    post = fit.datatree["posterior"]
    n_draws = int(post.sizes.get("chain", 1) * post.sizes.get("draw", 1))
    method = str(fit.meta.get("method", "nuts"))
    if method != "nuts":
        s.missing(f"The fit used method '{method}', not MCMC: R-hat, ESS and the sampler "
                  "checks below do not measure convergence for it.")
    if n_draws < 4:
        s.missing(f"{n_draws} posterior draw(s): convergence diagnostics need MCMC draws.")
        return
    s.text(f"Thresholds: R-hat <= {dg.RHAT_MAX}, bulk and tail ESS >= {dg.ESS_MIN:g}, no "
           f"divergent transitions, E-BFMI >= {dg.EBFMI_MIN} in every chain, no transition at "
           "the maximum tree depth.")
    conv = dg.convergence_table(fit)
    n_warn = int((conv["status"] == "warn").sum()) if len(conv) else 0
    s.text(f"{n_warn} of {len(conv)} parameters flagged." if len(conv) else
           "No posterior variable to check.")
    s.table(conv, "R-hat and effective sample sizes")
    meta_depth = fit.meta.get("max_tree_depth", depth)
    # a pair is (warm-up, sampling) depths: the draws had the sampling one
    meta_depth = int(meta_depth[-1] if isinstance(meta_depth, (list, tuple)) else meta_depth)
    s.table(dg.sampler_checks(fit, meta_depth), "Sampler diagnostics")
    chains = dg.chain_table(fit, meta_depth)
    if chains is not None:
        s.table(chains, "Per chain: adapted step size (with --shared-step-size also the "
                "shared one every chain sampled with), mean leapfrog steps per draw, "
                "divergences, E-BFMI, transitions at the maximum tree depth (warn also for an "
                "adapted step size below a third of the other chains' median: that chain's "
                "warm-up ended in a harder region; without a shared step size, parallel chains "
                "wait for it)")
    names = _diag_vars(fit)
    if n_draws < 4:
        return
    if names:
        figs.add(s, "rank", plots.rank_plot(fit.datatree, names),
                 "Rank plots (fractional ECDF differences per chain; should stay inside the "
                 "envelope)")
        figs.add(s, "trace", plots.trace_plot(fit.datatree, names),
                 "Trace and marginal density per chain")


def _parameter_section(s: Section, fit: FitData) -> None:
    tab = dg.parameter_table(fit)
    if fit.model is None:
        s.missing("Units are blank: the fit directory does not name a readable model file.")
    tab = tab.rename(columns={"q5": "5% (90% CrI)", "q95": "95% (90% CrI)"})
    s.table(tab, "Population parameters: posterior mean, sd, median and 90% equal-tailed "
            "credible interval. omega: SD of the log-scale random effect; sigma: residual error.")
    if fit.summary is None:
        s.text("summary.csv is not in the fit directory (the table above is computed from "
               "posterior.nc).")


def _prior_section(s: Section, fit: FitData, figs: _Figures) -> None:
    if not fit.has_group("prior"):
        s.missing("The DataTree has no prior group, so priors cannot be drawn against "
                  "posteriors (sample the prior with numpyro.infer.Predictive and pass "
                  "prior= to arviz.from_numpyro).")
        return
    prior = fit.datatree["prior"].data_vars
    names = [n for n in _diag_vars(fit) if n in prior]
    if not names:
        s.missing("The prior group holds none of the population parameters.")
        return
    figs.add(s, "prior_posterior", plots.prior_posterior_plot(fit.datatree, names),
             "Prior (blue) and posterior (orange) marginal densities; each x axis spans the "
             "posterior's central 99% widened 1.5 times its width on each side (the prior "
             "may extend further)")


def _shrinkage_section(s: Section, fit: FitData) -> None:
    tab = dg.shrinkage_table(fit)
    if not len(tab):
        s.missing("No random effects found (posterior eta_<P> over 'subject', eta or z over "
                  "(subject, iiv), each with a matching omega_<P>).")
        return
    s.text("Eta shrinkage = 1 - SD over subjects of the posterior mean eta / omega (posterior "
           "mean). Above about 0.3, individual estimates and IPRED-based plots lean on the "
           "population prior.")
    s.table(tab, "Shrinkage of the random effects")


def _gof_section(s: Section, fit: FitData, figs: _Figures, med: pd.DataFrame) -> None:
    if fit.pred is None and fit.ipred is None and fit.ppc is None:
        s.missing("Neither predictions (pred/ipred) nor a posterior predictive DV are in the "
                  "fit: no goodness-of-fit plots.")
        return
    if fit.pred is None:
        s.missing("No population prediction (pred) in the fit: the observed-against-PRED panel "
                  "shows EPRED, the posterior predictive median, instead.")
    if fit.ipred is None:
        s.missing("No individual prediction (ipred) in the fit: no observed-against-IPRED "
                  "panel and no IPRED line in the individual fits.")
    if fit.pred is not None or fit.ipred is not None:
        s.text("PRED: typical values with each subject's covariates, random effects zero; "
               "IPRED: individual parameters; both posterior medians per observation"
               + (f" over {fit.pred_draws} draws." if fit.pred_draws else "."))
    if fit.ppc is None:
        s.missing("No posterior predictive DV: NPDE cannot be computed.")
    else:
        n_dec = int(med["DECORRELATED"].sum())
        s.text("NPDE from the posterior predictive draws (decorrelated with the Cholesky factor "
               f"of each subject's simulated covariance: {n_dec} of "
               f"{int(np.isfinite(med['NPDE']).sum())} values; the others are npd). BLQ "
               "observations are left out. Dashed lines: 5th and 95th percentiles of N(0, 1).")
    for k, (output, tab) in enumerate(med.groupby("OUTPUT", sort=False)):
        figs.add(s, f"gof_{k + 1}_{output}",
                 plots.gof_figure(output, fit.output_unit(output), fit.time_unit, tab),
                 f"{output}: observed against {'PRED' if fit.pred is not None else 'EPRED'} "
                 "and IPRED (posterior medians; line of identity), NPDE against time and "
                 "prediction")


def _individual_section(s: Section, fit: FitData, figs: _Figures, med: pd.DataFrame,
                        per_page: int) -> None:
    if fit.ppc is None:
        s.missing("No posterior predictive DV: the bands are not drawn.")
    for k, (output, tab) in enumerate(med.groupby("OUTPUT", sort=False)):
        band = None
        if fit.ppc is not None:
            band = np.nanquantile(fit.ppc[:, tab.index.to_numpy()], [0.05, 0.5, 0.95], axis=0)
        pages = plots.individual_pages(output, fit.output_unit(output), fit.time_unit, tab,
                                       band, per_page)
        ids = list(pd.unique(tab["ID"]))
        for p, fig in enumerate(pages):
            page_ids = ids[p * per_page:(p + 1) * per_page]
            figs.add(s, f"individual_{k + 1}_{output}_page{p + 1}", fig,
                     f"{output}, page {p + 1} of {len(pages)}: subjects "
                     f"{', '.join(str(i) for i in page_ids)}")


def _vpc_section(s: Section, fit: FitData, figs: _Figures, med: pd.DataFrame,
                 n_bins: int) -> None:
    if fit.ppc is None:
        s.missing("No posterior predictive DV in the fit: the VPC needs simulated replicates.")
        return
    corrected = fit.pred is not None
    if not corrected:
        s.missing("No population prediction (pred) in the fit: the VPC is not prediction "
                  "corrected.")
    s.text(f"Time bins at quantiles of the observation times (up to {n_bins} per output). "
           "Replicates: the posterior predictive draws. Percentiles falling among BLQ values "
           "are not shown.")
    for k, (output, tab) in enumerate(med.groupby("OUTPUT", sort=False)):
        idx = tab.index.to_numpy()
        pred = tab["PRED"].to_numpy(float) if corrected else None
        table = vpc_table(tab["TIME"].to_numpy(float), tab["DV"].to_numpy(float), pred,
                          fit.ppc[:, idx], n_bins=n_bins, blq=tab["BLQ"].to_numpy(),
                          lloq=tab["LLOQ"].to_numpy(float))
        pos = tab.loc[~tab["BLQ"], "DV"].to_numpy(float)
        log_scale = bool(pos.size and np.all(pos > 0) and pos.max() / pos.min() > 20)
        figs.add(s, f"vpc_{k + 1}_{output}",
                 plots.vpc_figure(output, fit.output_unit(output), fit.time_unit, table,
                                  corrected, log_scale),
                 f"{'Prediction-corrected ' if corrected else ''}VPC of {output}"
                 + (" with the fraction below LLOQ per bin" if np.isfinite(
                     table["obs_blq"]).any() else ""))
        cols = ["t_lo", "t_hi", "n", "obs_p50", "sim_p50_lo", "sim_p50_hi", "obs_blq",
                "sim_blq_lo", "sim_blq_hi"]
        s.table(table[cols], f"{output}: VPC bins")


def _loo_section(s: Section, fit: FitData, figs: _Figures) -> None:
    post = fit.datatree["posterior"]
    n_draws = int(post.sizes.get("chain", 1) * post.sizes.get("draw", 1))
    if n_draws < 10:
        s.missing(f"{n_draws} posterior draw(s): PSIS-LOO needs posterior draws (NUTS, SVI or "
                  "Laplace), not a point estimate.")
        return
    table, res = dg.loo_summary(fit)
    if table is None:
        s.missing("The DataTree has no log_likelihood group: PSIS-LOO cannot be computed "
                  "(pass log_likelihood=True to arviz.from_numpyro).")
        return
    good_k = table.attrs["good_k"]
    n_bad = table.attrs["n_bad"]
    k = table.attrs["pareto_k"]
    s.table(table, "PSIS-LOO (arviz.loo) on the observation log likelihood")
    if n_bad:
        s.missing(f"Warning: {n_bad} of {k.size} observations have Pareto k > {good_k:.2f}; "
                  "the PSIS-LOO estimate is unreliable for them (consider K-fold CV or moment "
                  "matching).")
    else:
        s.text(f"All Pareto k <= {good_k:.2f}: the PSIS-LOO estimate is reliable.")
    if res is None:
        return
    figs.add(s, "pareto_k", plots.khat_plot(res, good_k),
             "Pareto k per observation (dashed: reliability threshold)")
