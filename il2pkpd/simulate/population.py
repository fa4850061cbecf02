"""Virtual populations: individual parameters and covariates for simulation.

Two sources of individuals:

- :func:`default_population`: the model file's default (typical) values with log-normal
  between-subject variability (``omega`` 0.3 on the log scale by default) on the parameters
  that have inter-individual variability in the model's population specification (the
  ``[population] iiv`` list, by default every estimated positive parameter), and the covariate
  effects of its ``[covariates]`` tables at their fixed exponent or prior median;
- :func:`posterior_population`: posterior draws of a fit (``posterior.nc``: typical values
  named as in the model file, ``omega_<P>``, ``corr_<P>_<Q>``, ``beta_<P>_<COV>``). Each
  virtual patient is attached to one draw (round robin over ``n_draws`` draws), and gets
  random effects from that draw's between-subject covariance, so the spread across patients
  carries both parameter uncertainty and variability between patients.

Individual values follow the inference stage's parameterisation (``il2pkpd.inference.spec``):
``P = TV * g(x) * exp(eta)`` for positive parameters, ``P = TV + h(x) + eta`` for real ones and
``logit(P) = logit(TV) + eta`` for fractions.

Covariates come from :func:`sample_covariates`: resampled jointly (whole subjects, with
replacement) from a dataset, or drawn from a stated adult distribution (:data:`ADULT`).
Everything is reproducible from the seed.

Examples
--------
>>> from il2pkpd.models import load_model
>>> pop = default_population(load_model("il2_pkpd"), 4, seed=1)
>>> pop.n, sorted(pop.covariates.columns)
(4, ['AGE', 'BSA', 'HT', 'ID', 'SEX', 'WT'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from il2pkpd.errors import InputError, OptionError

__all__ = [
    "ADULT",
    "DEFAULT_OMEGA",
    "Population",
    "sample_covariates",
    "default_population",
    "posterior_population",
    "read_posterior",
    "posterior_covariates",
    "PosteriorError",
]

#: Default between-subject SD (log scale) for simulations without a fitted posterior.
DEFAULT_OMEGA = 0.3

#: A stated adult covariate distribution (illustrative, not from a specific trial): SEX
#: 0 male / 1 female with probability 0.5; height (cm) normal, mean 176 (male) / 163 (female),
#: SD 7; weight (kg) log-normal, median 84 (male) / 70 (female), log-SD 0.18, truncated to
#: 40-160 kg; AGE uniform 18-75 years; BSA (m2) by Mosteller from WT and HT.
ADULT = {
    "p_female": 0.5,
    "ht_mean": (176.0, 163.0), "ht_sd": 7.0,
    "wt_median": (84.0, 70.0), "wt_logsd": 0.18, "wt_range": (40.0, 160.0),
    "age_range": (18.0, 75.0),
}


class PosteriorError(InputError):
    """A posterior (fit directory) that cannot be used for simulation."""


@dataclass(frozen=True)
class Population:
    """Virtual patients: one parameter value and one covariate row each.

    Attributes
    ----------
    params : Mapping[str, numpy.ndarray]
        Parameter name -> values ``(n,)`` in the model's units.
    covariates : pandas.DataFrame
        ``n`` rows: ``ID`` and covariate columns (``WT`` kg, ``HT`` cm, ``BSA`` m2, ``AGE``
        years, ``SEX`` 0/1, or the columns of the resampled dataset).
    draw : numpy.ndarray of int, shape (n,)
        The posterior draw each patient belongs to (all 0 without a posterior).
    n_draws : int
        Number of distinct posterior draws (1 without a posterior).
    source : str
        A description (for reports).
    """

    params: Mapping[str, np.ndarray]
    covariates: pd.DataFrame
    draw: np.ndarray
    n_draws: int
    source: str

    @property
    def n(self) -> int:
        """Number of virtual patients."""
        return len(self.covariates)


# --------------------------------------------------------------------------------------------
# Covariates


def _subject_covariates(source: Any) -> pd.DataFrame:
    """One row of covariates per subject of a Dataset, DataFrame or CSV path."""
    from il2pkpd.data import Dataset, read_dataset

    if isinstance(source, str | Path):
        source = read_dataset(source)
    if isinstance(source, Dataset):
        cols = list(source.covariates)
        df = source.df
    else:
        df = pd.DataFrame(source)
        cols = [c for c in df.columns if c not in ("ID",)]
    if not cols:
        raise OptionError("the covariate source has no covariate columns (e.g. WT, BSA, AGE, "
                          "SEX); give a dataset with covariates or use the default population")
    if "ID" in df.columns:
        first = df.groupby("ID", sort=False)[cols].first().reset_index(drop=True)
    else:
        first = df[cols].reset_index(drop=True)
    first = first.astype(float)
    if first.isna().any().any():
        bad = [c for c in cols if first[c].isna().any()]
        raise OptionError(f"covariate column(s) {bad} have missing values for some subjects; "
                          "fill them or drop the column before resampling")
    return first


def sample_covariates(n: int, rng: np.random.Generator, source: Any = None) -> pd.DataFrame:
    """Covariates of *n* virtual patients.

    Parameters
    ----------
    n : int
        Number of patients.
    rng : numpy.random.Generator
        Random source (pass ``np.random.default_rng(seed)``).
    source : Dataset, DataFrame, path or None
        Resample whole subjects (with replacement) from this dataset; ``None`` draws from
        :data:`ADULT`. ``BSA`` is added by Mosteller when the source has ``WT`` and ``HT``
        but no ``BSA``.

    Returns
    -------
    pandas.DataFrame
        ``ID`` (1..n) then the covariate columns (float).
    """
    if source is None:
        a = ADULT
        female = rng.random(n) < a["p_female"]
        ht = (np.where(female, a["ht_mean"][1], a["ht_mean"][0])
              + a["ht_sd"] * rng.standard_normal(n))
        med = np.where(female, a["wt_median"][1], a["wt_median"][0])
        wt = np.clip(med * np.exp(a["wt_logsd"] * rng.standard_normal(n)), *a["wt_range"])
        age = rng.uniform(*a["age_range"], size=n)
        out = pd.DataFrame({"WT": wt, "HT": ht, "BSA": np.sqrt(wt * ht / 3600.0),
                            "AGE": age, "SEX": female.astype(float)})
    else:
        subjects = _subject_covariates(source)
        idx = rng.integers(0, len(subjects), size=n)
        out = subjects.iloc[idx].reset_index(drop=True)
        if "BSA" not in out and "WT" in out and "HT" in out:
            out["BSA"] = np.sqrt(out["WT"] * out["HT"] / 3600.0)
    out.insert(0, "ID", np.arange(1, n + 1, dtype=np.int64))
    return out


# --------------------------------------------------------------------------------------------
# Individual parameters


@dataclass(frozen=True)
class _Effect:
    parameter: str
    covariate: str
    model: str
    reference: float
    coefficient: float
    levels: tuple[float, ...] = ()


@dataclass(frozen=True)
class _SimSpec:
    iiv: tuple[str, ...]
    covariates: tuple[_Effect, ...]


def _spec(model) -> _SimSpec:
    """IIV parameters and covariate effects of the model's population specification.

    Uses :func:`il2pkpd.inference.spec.build_spec` (the fitting stage's reading of the model
    file). When that refuses the model (for instance automatic ``R<n>``/``D<n>`` parameters
    without defaults), the same default rule is applied here: IIV on every positive or
    non-negative declared parameter with a positive default, or the ``[population] iiv`` list.
    """
    from il2pkpd.errors import ModelFileError

    try:
        from il2pkpd.inference.spec import build_spec

        spec = build_spec(model)
    except (ImportError, ModelFileError):
        spec = None
    if spec is not None:
        effects = tuple(_Effect(e.parameter, e.covariate, e.model, float(e.reference),
                                float(e.prior.median()), tuple(e.levels))
                        for e in spec.covariates)
        return _SimSpec(tuple(spec.iiv), effects)
    pop = dict((getattr(model, "fit_spec", {}) or {}).get("population") or {})
    fixed = set((pop.get("fix") or {}).keys())
    if "estimate" in pop:
        fixed |= {p.name for p in model.parameters if p.name not in pop["estimate"]}
    if "iiv" in pop:
        iiv = tuple(n for n in model.parameter_names if n in pop["iiv"])
    else:
        iiv = tuple(p.name for p in model.parameters
                    if not p.auto and p.domain in ("positive", "nonnegative")
                    and p.default is not None and p.default > 0 and p.name not in fixed
                    and not (isinstance(p.prior, Mapping) and p.prior.get("dist") == "fixed"))
    effects = []
    for key, c in ((getattr(model, "fit_spec", {}) or {}).get("covariates") or {}).items():
        try:
            if "exponent" in c:
                coef = float(c["exponent"])
            elif "prior" in c:
                from il2pkpd.inference.priors import parse_prior

                coef = float(parse_prior(c["prior"], where=f"[covariates.{key}]").median())
            else:
                coef = 0.0
            effects.append(_Effect(str(c["parameter"]), str(c["covariate"]),
                                   str(c["model"]).lower(), float(c.get("reference", 0.0)),
                                   coef, tuple(float(v) for v in c.get("levels", ()))))
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"model {model.name} [covariates.{key}]: needs parameter, "
                                 "covariate, model and reference") from None
    return _SimSpec(iiv, tuple(effects))


def _effect_factor(effect, beta, x):
    """Multiplicative (positive) or additive (real) covariate term for values *x*."""
    kind = effect.model
    if kind == "power":
        return (x / effect.reference) ** beta
    if kind == "linear":
        return 1.0 + beta * (x - effect.reference)
    if kind == "exponential":
        return np.exp(beta * (x - effect.reference))
    raise ValueError(kind)


def _individual(domain, tv, eta, cov_terms):
    """Combine typical value, random effect and covariate terms as the inference stage does."""
    if domain in ("positive", "nonnegative"):
        return tv * cov_terms["mult"] * np.exp(eta)
    if domain == "unit_interval":
        tv = np.clip(tv, 1e-12, 1 - 1e-12)
        return 1.0 / (1.0 + np.exp(-(np.log(tv / (1 - tv)) + eta)))
    return tv + cov_terms["add"] + eta


def _covariate_terms(spec, name, domain, covariates, betas):
    """Covariate multipliers (positive domain) or addends (real domain) for parameter *name*."""
    n = len(covariates)
    mult = np.ones(n)
    add = np.zeros(n)
    for eff in spec.covariates:
        if eff.parameter != name:
            continue
        if eff.covariate not in covariates:
            raise OptionError(
                f"the model's covariate effect of {eff.covariate} on {name} needs covariate "
                f"column {eff.covariate}; the virtual population has "
                f"{[c for c in covariates.columns if c != 'ID']}")
        x = covariates[eff.covariate].to_numpy(float)
        if eff.model == "categorical":
            for level in eff.levels:
                b = betas(f"beta_{name}_{eff.covariate}_{_level(level)}", eff)
                hit = np.isclose(x, level)
                if domain in ("positive", "nonnegative"):
                    mult = mult * np.where(hit, np.exp(b), 1.0)
                else:
                    add = add + np.where(hit, b, 0.0)
            continue
        b = betas(f"beta_{name}_{eff.covariate}", eff)
        if domain in ("positive", "nonnegative"):
            mult = mult * _effect_factor(eff, b, x)
        else:
            add = add + b * (x - eff.reference)
    return {"mult": mult, "add": add}


def _level(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v).replace(".", "p")


def default_population(model, n: int, *, seed: int = 0, omega: float | Mapping = DEFAULT_OMEGA,
                       covariates: Any = None, params: Mapping[str, float] | None = None,
                       iiv: tuple[str, ...] | None = None) -> Population:
    """Virtual patients around the model's default parameter values.

    Parameters
    ----------
    model : il2pkpd.models.Model
    n : int
        Number of patients.
    seed : int
        Random seed (patients and covariates are reproducible from it).
    omega : float or mapping
        Between-subject SD on the log (or logit / additive) scale, one for all IIV parameters or
        per parameter name (names absent from the mapping get :data:`DEFAULT_OMEGA`).
    covariates : Dataset, DataFrame, path or None
        Covariate source for :func:`sample_covariates`.
    params : mapping, optional
        Typical values replacing the model defaults.
    iiv : tuple of str, optional
        Parameters with variability (default: the model's population specification).

    Returns
    -------
    Population
    """
    if n < 1:
        raise OptionError(f"the number of virtual patients must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    cov = sample_covariates(n, rng, covariates)
    spec = _spec(model)
    iiv = tuple(spec.iiv) if iiv is None else tuple(iiv)
    typical = model.defaults()
    for k, v in (params or {}).items():
        if k not in typical and k not in model.parameter_names:
            raise OptionError(f"unknown parameter {k!r}; the model has "
                              f"{', '.join(model.parameter_names)}")
        typical[k] = float(v)
    omegas = {}
    for name in iiv:
        omegas[name] = float(omega.get(name, DEFAULT_OMEGA) if isinstance(omega, Mapping)
                             else omega)
        if not (math.isfinite(omegas[name]) and omegas[name] >= 0):
            raise OptionError(f"omega for {name} must be a finite number >= 0")

    def betas(site, eff):
        return eff.coefficient

    out = {}
    eta_all = rng.standard_normal((n, len(iiv)))
    for p in model.parameters:
        if p.name not in typical:
            continue
        eta = eta_all[:, iiv.index(p.name)] * omegas[p.name] if p.name in iiv else np.zeros(n)
        terms = _covariate_terms(spec, p.name, p.domain, cov, betas)
        out[p.name] = _individual(p.domain, typical[p.name], eta, terms)
    sd_text = "per parameter" if isinstance(omega, Mapping) else f"{omega:g}"
    desc = (f"model defaults with between-subject SD {sd_text} "
            f"on {', '.join(iiv) or 'no parameter'}")
    return Population(params=out, covariates=cov, draw=np.zeros(n, dtype=np.int64), n_draws=1,
                      source=desc)


# --------------------------------------------------------------------------------------------
# Posterior


def read_posterior(path) -> pd.DataFrame:
    """Scalar posterior variables of a fit as a table, one row per draw (chains stacked).

    Parameters
    ----------
    path : path
        A fit directory holding ``posterior.nc``, or the ``posterior.nc`` file itself.

    Returns
    -------
    pandas.DataFrame
        One column per scalar population variable (``CL``, ``omega_CL``, ``corr_CL_V1``, ...).
    """
    import xarray as xr

    p = Path(path)
    nc = p / "posterior.nc" if p.is_dir() else p
    if not nc.is_file():
        raise PosteriorError(f"no posterior found at {nc}: give a fit directory written by "
                             "'il2pkpd fit' (it holds posterior.nc)")
    try:
        tree = xr.open_datatree(nc, engine="h5netcdf")
        post = tree["posterior"].to_dataset().load()
        tree.close()
    except (OSError, KeyError, ValueError) as err:
        raise PosteriorError(f"{nc}: cannot read a 'posterior' group ({err})") from None
    cols = {}
    for name, var in post.data_vars.items():
        if set(var.dims) <= {"chain", "draw"} and var.ndim >= 1:
            cols[name] = np.asarray(var.values, dtype=float).reshape(-1)
    if not cols:
        raise PosteriorError(f"{nc}: the posterior holds no scalar population variables")
    return pd.DataFrame(cols)


def posterior_population(model, posterior, n: int, *, seed: int = 0, n_draws: int = 100,
                         covariates: Any = None) -> Population:
    """Virtual patients from posterior draws and the fitted between-subject variability.

    Parameters
    ----------
    model : il2pkpd.models.Model
        The model that was fitted.
    posterior : path or pandas.DataFrame
        A fit directory / ``posterior.nc``, or a table from :func:`read_posterior`.
    n : int
        Number of patients.
    seed : int
        Random seed.
    n_draws : int
        Posterior draws used (spread evenly over the stored draws); patient ``i`` belongs to
        draw ``i mod n_draws``.
    covariates : Dataset, DataFrame, path or None
        Covariate source (default: the fitted dataset when the fit directory names it, else
        :data:`ADULT`).

    Returns
    -------
    Population
    """
    if n < 1:
        raise OptionError(f"the number of virtual patients must be >= 1, got {n}")
    table = posterior if isinstance(posterior, pd.DataFrame) else read_posterior(posterior)
    if covariates is None and not isinstance(posterior, pd.DataFrame):
        covariates = _fitted_dataset(Path(posterior))
    rng = np.random.default_rng(seed)
    cov = sample_covariates(n, rng, covariates)
    spec = _spec(model)
    total = len(table)
    k = max(1, min(int(n_draws), total, n))
    rows = np.unique(np.linspace(0, total - 1, k).round().astype(int))
    k = len(rows)
    draws = table.iloc[rows].reset_index(drop=True)
    draw = np.arange(n) % k
    iiv = [p.name for p in model.parameters if f"omega_{p.name}" in draws]
    typical = model.defaults()
    # between-subject covariance per draw, then eta = L z
    m = len(iiv)
    if m:
        sd = draws[[f"omega_{q}" for q in iiv]].to_numpy(float)          # (k, m)
        corr = np.broadcast_to(np.eye(m), (k, m, m)).copy()
        for i, a in enumerate(iiv):
            for j, b in enumerate(iiv):
                for name in (f"corr_{a}_{b}", f"corr_{b}_{a}"):
                    if i != j and name in draws:
                        corr[:, i, j] = draws[name].to_numpy(float)
        cov_mat = sd[:, :, None] * corr * sd[:, None, :]
        try:
            chol = np.linalg.cholesky(cov_mat + 1e-12 * np.eye(m))
        except np.linalg.LinAlgError:
            raise PosteriorError("a posterior draw has a between-subject covariance that is not "
                                 "positive definite (check the corr_* variables)") from None
        z = rng.standard_normal((n, m))
        eta = np.einsum("nij,nj->ni", chol[draw], z)
    else:
        eta = np.zeros((n, 0))

    def betas(site, eff):
        if site in draws:
            return draws[site].to_numpy(float)[draw]
        return eff.coefficient

    out = {}
    for p in model.parameters:
        if p.name in draws:
            tv = draws[p.name].to_numpy(float)[draw]
        elif p.name in typical:
            tv = np.full(n, typical[p.name])
        elif p.auto:
            continue        # R<n>/D<n> without a default: only for RATE -1/-2 records
        else:
            raise PosteriorError(f"parameter {p.name} is neither in the posterior nor has a "
                                 "default in the model file")
        e = eta[:, iiv.index(p.name)] if p.name in iiv else np.zeros(n)
        terms = _covariate_terms(spec, p.name, p.domain, cov, betas)
        out[p.name] = _individual(p.domain, tv, e, terms)
    src = str(posterior) if not isinstance(posterior, pd.DataFrame) else "<posterior table>"
    return Population(params=out, covariates=cov, draw=draw.astype(np.int64), n_draws=k,
                      source=f"posterior {src}: {k} draws, IIV on {', '.join(iiv) or 'none'}")


def posterior_covariates(path) -> pd.DataFrame | None:
    """Per-subject covariates stored with a fit (``constant_data`` ``cov_<name>``), or None."""
    import xarray as xr

    p = Path(path)
    nc = p / "posterior.nc" if p.is_dir() else p
    try:
        tree = xr.open_datatree(nc, engine="h5netcdf")
        if "constant_data" not in tree.children:
            tree.close()
            return None
        const = tree["constant_data"].to_dataset().load()
        tree.close()
    except (OSError, KeyError, ValueError):
        return None
    cols = {name[4:]: np.asarray(v.values, dtype=float) for name, v in const.data_vars.items()
            if name.startswith("cov_") and v.ndim == 1}
    if not cols or len({len(v) for v in cols.values()}) != 1:
        return None
    return pd.DataFrame(cols)


def _fitted_dataset(path: Path):
    """Covariates of the fitted subjects: stored in posterior.nc, or the dataset the fit
    directory names (``fit.json`` ``data_path``/``data``, top level or under ``info``), or a
    ``data.csv`` beside it; None when none is found."""
    import json

    stored = posterior_covariates(path)
    if stored is not None:
        return stored
    fit_dir = path if path.is_dir() else path.parent
    meta = fit_dir / "fit.json"
    candidates = []
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            info = {}
        for holder in (info, info.get("info") or {}):
            for key in ("data_path", "data"):
                data = holder.get(key) if isinstance(holder, dict) else None
                if isinstance(data, str) and data:
                    q = Path(data)
                    candidates += [q if q.is_absolute() else fit_dir / q, q]
    candidates.append(fit_dir / "data.csv")
    for c in candidates:
        if c.is_file():
            return c
    return None
