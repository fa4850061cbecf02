"""The population specification: which parameters are estimated, IIV, covariates, residual error.

It is read from a model file's ``[population]``, ``[residual]`` and ``[covariates]`` tables and
each parameter's ``prior`` entry (kept raw by :func:`il2pkpd.models.load_model` in
``Model.fit_spec`` and ``ParameterSpec.prior``), then overridden from the Python API or the CLI.

Schema (every key optional)::

    [parameters.CL]
    prior = { dist = "lognormal", loc = 1.386, scale = 1.0 }  # or { dist = "fixed", value = 4 }

    [population]
    iiv = ["CL", "V1", "Q", "V2"]   # parameters with inter-individual variability; default: every
                                    # estimated parameter with domain positive
    covariance = "block"            # "diagonal" (default) or "block" (one full block over iiv)
    blocks = [["CL", "V1"]]         # or explicit blocks; iiv parameters in no block are diagonal
    omega_prior = { dist = "halfnormal", scale = 0.5 }   # default prior of every IIV SD
    omega_priors = { CL = { dist = "halfnormal", scale = 0.3 } }   # per parameter
    lkj_concentration = 2.0         # LKJ prior on each block's correlation matrix
    parametrization = "noncentred"  # or "centred": sample the individual log parameters
                                    # phi_i ~ MVN(log TV + covariate terms, Omega) (better when
                                    # every subject is rich in data; MAP then degenerates)
    # or mixed: centre the parameters the data pin down in every subject, the others
    # non-centred given them (same model, different sampler geometry; see below):
    # parametrization = { centred = ["CL", "V1"] }   # or { noncentred = ["Q", "V2"] }
    # optionally with centring weights between 0 (non-centred) and 1 (centred):
    # parametrization = { centred = ["CL", "V1"], partial = { Q = 0.5 } }
    # (CLI and text form of the list: --parametrization centred=CL,V1)
    fix = { KA = 0.3 }              # hold parameters at values (same as a "fixed" prior)
    estimate = ["CL", "V1"]         # optional: estimate only these (others fixed at default)

    [residual.CP]                   # an output name, or its DVID as "1"
    model = "lognormal"             # additive | proportional | combined | lognormal (default
                                    # proportional)
    sigma_prior = { dist = "halfnormal", scale = 0.5 }  # additive, proportional, lognormal
    sigma_add_prior = { ... }       # combined: additive SD (output units)
    sigma_prop_prior = { ... }      # combined: proportional SD (fraction)

    [covariates.CL_WT]              # one table per effect (the key is free text)
    parameter = "CL"
    covariate = "WT"                # a covariate column of the dataset
    model = "power"                 # power | linear | exponential | categorical
    reference = 70.0                # continuous: centring value; categorical: reference level
    exponent = 0.75                 # power only: a fixed exponent ...
    prior = { dist = "normal", loc = 0.75, scale = 0.25 }   # ... or an estimated coefficient
    levels = [1, 2]                 # categorical only: the non-reference levels

Individual parameters, for subject i with covariates x_i and random effects eta_i:

- domain positive / nonnegative: ``P_i = TV * g(x_i) * exp(eta_i)`` (log-normal IIV), with
  ``g = (x/ref)^beta`` (power), ``1 + beta (x - ref)`` (linear), ``exp(beta (x - ref))``
  (exponential), ``exp(beta_l)`` for subjects at level l (categorical);
- domain real: ``P_i = TV + h(x_i) + eta_i`` with ``h = beta (x - ref)`` (linear / exponential
  is not allowed) or ``beta_l`` (categorical);
- domain unit_interval: ``logit(P_i) = logit(TV) + eta_i`` (no covariates).

IIV parametrizations (all define the same model; they differ in what NUTS samples). With
``Omega = S S^T``, ``S = diag(omega) L`` per block: non-centred samples ``z_i ~ N(0, I)``,
``eta_i = S z_i`` (good when subjects say little about their parameters: high shrinkage);
centred samples ``phi_i ~ MVN(loc_i, Omega)`` (good when they say much: low shrinkage). Mixed,
with a block ordered centred parameters C first then non-centred N (correlations keep their
names ``corr_<A>_<B>``, A before B in model order)::

    phi_iC ~ MVN(loc_iC, S_CC S_CC^T)              # sample site phi (subject, C)
    z_iN ~ N(0, I)                                  # sample site z (subject, N)
    eta_iN = S_NC S_CC^-1 (phi_iC - loc_iC) + S_NN z_iN

i.e. the non-centred parameters are non-centred conditionally on the centred ones. A partially
centred parameter k (weight w, after the centred and non-centred members of its block) has its
own site ``z_<P>`` (subject): with ``m`` and ``s`` the location plus conditional mean and the
conditional SD of ``phi_ik`` given the members before it, ``z_ik ~ N(w m, s^w)`` and
``phi_ik = m + s^(1-w) (z_ik - w m)`` (w = 0: non-centred, w = 1: centred). Choose the centred
parameters from the eta-shrinkage of a first fit (``FitResult.info["eta_shrinkage"]``; low,
below about 30%: centred; about 50% or more: non-centred; in between both work). On the public
two-compartment benchmark (120 subjects, 15 samples each, full 4x4 block) CL, V1 and V2
centred with Q non-centred gave a smallest bulk ESS of 400-480 in 4,000 draws (4 seeds), CL
and V1 centred 350-440, fully centred 140, fully non-centred about 300 (as Stan's
non-centred program); partial weights did not do better there.

Residual error per output, with prediction ``f`` and observation ``y``: additive
``y ~ N(f, s)``, proportional ``y ~ N(f, s |f|)``, combined ``y ~ N(f, sqrt(sa^2 + (sp f)^2))``,
lognormal ``log y ~ N(log f, s)``. A below-limit observation (BLQ) contributes
``P(y < LLOQ)`` (M3).

Names in the posterior: typical values as in the model file (``CL``), ``omega_CL``,
``corr_CL_V1``, ``sigma_<output>`` (combined: ``sigma_add_<output>``, ``sigma_prop_<output>``),
covariate coefficients ``beta_<PARAM>_<COV>`` (categorical: ``beta_<PARAM>_<COV>_<level>``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from il2pkpd.errors import ModelFileError, OptionError
from il2pkpd.inference.priors import Prior, parse_prior

__all__ = [
    "ParamInfo",
    "OutputInfo",
    "CovariateEffect",
    "ResidualSpec",
    "PopulationSpec",
    "build_spec",
    "model_info",
    "RESIDUAL_MODELS",
    "COVARIATE_MODELS",
]

RESIDUAL_MODELS = ("additive", "proportional", "combined", "lognormal")
COVARIATE_MODELS = ("power", "linear", "exponential", "categorical")
DEFAULT_OMEGA_PRIOR = Prior("halfnormal", (0.5,))
DEFAULT_SIGMA_PRIOR = Prior("halfnormal", (0.5,))
DEFAULT_LKJ = 2.0
_AUTO_PARAM = re.compile(r"^(F|TLAG|R|D)\d+$")


@dataclass(frozen=True)
class ParamInfo:
    """A structural parameter as the population model sees it.

    Parameters
    ----------
    name : str
        Name in the model file (``CL``).
    domain : str
        ``positive``, ``nonnegative``, ``real`` or ``unit_interval``.
    default : float
        Default value, in the parameter's unit.
    prior : object or None
        The raw ``prior`` entry of the model file.
    auto : bool
        Added automatically by the model loader (``F1``, ``TLAG1``...): fixed unless given a prior.
    """

    name: str
    domain: str
    default: float
    prior: Any = None
    auto: bool = False


@dataclass(frozen=True)
class OutputInfo:
    """A model output: position in the prediction's output index, DVID, name."""

    index: int
    dvid: int
    name: str


@dataclass(frozen=True)
class CovariateEffect:
    """One covariate effect on one parameter (see the module docstring for the formulas)."""

    parameter: str
    covariate: str
    model: str
    reference: float
    prior: Prior
    levels: tuple[float, ...] = ()

    @property
    def site_names(self) -> tuple[str, ...]:
        """Names of the coefficient(s) in the posterior."""
        base = f"beta_{self.parameter}_{self.covariate}"
        if self.model == "categorical":
            return tuple(f"{base}_{_level_text(v)}" for v in self.levels)
        return (base,)


@dataclass(frozen=True)
class ResidualSpec:
    """Residual error model of one output."""

    output: OutputInfo
    model: str
    priors: dict[str, Prior]  # site name -> prior

    @property
    def site_names(self) -> tuple[str, ...]:
        """Names of the residual SDs in the posterior."""
        return tuple(self.priors)


@dataclass(frozen=True)
class PopulationSpec:
    """The complete, validated population model (immutable).

    Attributes
    ----------
    parameters : tuple of ParamInfo
        Every structural parameter, in model order.
    priors : dict
        Parameter name -> :class:`Prior` (``fixed`` for parameters held at a value).
    iiv : tuple of str
        Parameters with inter-individual variability, in model order.
    blocks : tuple of tuple of str
        Covariance blocks partitioning ``iiv`` (singletons are diagonal elements).
    omega_priors : dict
        ``omega_<P>`` -> prior of the IIV SD.
    lkj_concentration : float
        LKJ concentration of every block of size > 1.
    covariates : tuple of CovariateEffect
    residuals : tuple of ResidualSpec
        One per model output, in output index order.
    """

    parameters: tuple[ParamInfo, ...]
    priors: dict[str, Prior]
    iiv: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    omega_priors: dict[str, Prior]
    lkj_concentration: float
    covariates: tuple[CovariateEffect, ...]
    residuals: tuple[ResidualSpec, ...]
    centred: bool = False
    extra_priors: dict[str, Prior] = field(default_factory=dict)
    centred_iiv: tuple[str, ...] = ()
    partial_iiv: tuple[tuple[str, float | tuple[float, ...]], ...] = ()

    @property
    def partial_weights(self) -> dict[str, float | tuple[float, ...]]:
        """IIV parameter -> centring weight in (0, 1) of the partially centred ones, or one
        weight in [0, 1] per subject (a tuple); empty when ``centred`` is true
        (``partial_iiv`` is then ignored)."""
        if self.centred:
            return {}
        return {p: w for p, w in self.partial_iiv if p in self.iiv}

    @property
    def centred_parameters(self) -> tuple[str, ...]:
        """IIV parameters sampled centred (as ``phi``), in ``iiv`` order: every one when
        ``centred`` is true (``centred_iiv`` is then ignored), else those in ``centred_iiv``
        (a mixed parametrization; empty: fully non-centred)."""
        if self.centred:
            return self.iiv
        return tuple(p for p in self.iiv if p in self.centred_iiv)

    def parametrization_value(self):
        """The ``parametrization`` entry that gives this spec's IIV parametrization:
        ``"centred"``, ``"noncentred"`` or ``{"centred": [...]}`` (plus ``"partial"``)."""
        kind = self.parametrization
        if kind != "mixed":
            return kind
        out: dict = {"centred": list(self.centred_parameters)}
        if self.partial_weights:
            out["partial"] = dict(self.partial_weights)
        return out

    @property
    def parametrization(self) -> str:
        """``"centred"``, ``"noncentred"`` or ``"mixed"`` (some IIV parameters centred)."""
        c = self.centred_parameters
        if self.partial_weights:
            return "mixed"
        if not self.iiv or not c:
            return "noncentred"
        return "centred" if len(c) == len(self.iiv) else "mixed"

    @property
    def estimated(self) -> tuple[str, ...]:
        """Parameters with a (non-fixed) prior, in model order."""
        return tuple(p.name for p in self.parameters if not self.priors[p.name].is_fixed)

    @property
    def differentiated(self) -> tuple[str, ...]:
        """Parameters the log density depends on through the model: estimated typical values,
        and parameters with IIV or covariate effects (even when the typical value is fixed)."""
        varying = set(self.iiv) | {c.parameter for c in self.covariates}
        return tuple(p.name for p in self.parameters
                     if not self.priors[p.name].is_fixed or p.name in varying)

    @property
    def fixed(self) -> dict[str, float]:
        """Parameters held at a value."""
        return {n: pr.args[0] for n, pr in self.priors.items() if pr.is_fixed}

    def domain(self, name: str) -> str:
        """The domain of parameter *name*."""
        return next(p.domain for p in self.parameters if p.name == name)

    @property
    def correlations(self) -> tuple[tuple[str, str], ...]:
        """Pairs (a, b) with a correlation ``corr_a_b`` in the posterior."""
        pairs = []
        for b in self.blocks:
            for i in range(len(b)):
                for j in range(i + 1, len(b)):
                    pairs.append((b[i], b[j]))
        return tuple(pairs)

    def population_names(self) -> list[str]:
        """Every population-level quantity summarised in ``summary.csv``, in order."""
        names = list(self.estimated)
        names += [f"omega_{p}" for p in self.iiv]
        names += [f"corr_{a}_{b}" for a, b in self.correlations]
        for c in self.covariates:
            if not c.prior.is_fixed:
                names += list(c.site_names)
        for r in self.residuals:
            names += [n for n in r.site_names if not r.priors[n].is_fixed]
        return names

    def describe(self) -> str:
        """A few lines for logs and the CLI."""
        lines = ["estimated: " + ", ".join(f"{n} ~ {self.priors[n].text()}"
                                           for n in self.estimated)]
        if self.fixed:
            lines.append("fixed: " + ", ".join(f"{k}={v:g}" for k, v in self.fixed.items()))
        blocks = ["[" + " ".join(b) + "]" for b in self.blocks]
        lines.append("IIV (log-normal): " + (" ".join(blocks) if blocks else "none"))
        if self.iiv:
            kind = self.parametrization
            if kind == "mixed":
                pw = self.partial_weights
                groups = [("centred", self.centred_parameters),
                          ("non-centred", [p for p in self.iiv
                                           if p not in self.centred_parameters and p not in pw]),
                          ("partially centred", [f"{p} {weight_text(w)}"
                                                 for p, w in pw.items()])]
                kind += " (" + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups if v) + ")"
            lines.append(f"IIV parametrization: {kind}")
        for c in self.covariates:
            lines.append(f"covariate: {c.parameter} ~ {c.covariate} ({c.model}, "
                         f"ref {c.reference:g}, {c.prior.text()})")
        for r in self.residuals:
            lines.append(f"residual {r.output.name}: {r.model} "
                         + ", ".join(f"{k} ~ {v.text()}" for k, v in r.priors.items()))
        return "\n".join(lines)


def _level_text(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:g}".replace(".", "p").replace("-", "m")


def model_info(model) -> tuple[list[ParamInfo], list[OutputInfo], dict]:
    """Extract parameters, outputs and the raw fit tables from an :class:`il2pkpd.models.Model`.

    Returns
    -------
    params : list of ParamInfo
    outputs : list of OutputInfo
        In output index order (the index used by ``EventArrays.obs_output``).
    fit_spec : dict
        The raw ``[population]``, ``[residual]``, ``[covariates]`` tables.
    """
    params = []
    raw_params = model.parameters
    items = raw_params.items() if isinstance(raw_params, Mapping) else (
        (p.name, p) for p in raw_params)
    for name, p in items:
        auto = bool(getattr(p, "auto", getattr(p, "implicit", False)))
        if not auto and _AUTO_PARAM.match(name) and getattr(p, "description", "") in ("", None):
            auto = True
        default = getattr(p, "default", None)
        if auto and default is None and getattr(p, "prior", None) is None:
            continue  # e.g. R1/D1: only used by RATE -1/-2 records, never estimated by default
        params.append(ParamInfo(name=name, domain=str(getattr(p, "domain", "positive")),
                                default=math.nan if default is None else float(default),
                                prior=getattr(p, "prior", None), auto=auto))
    raw_outputs = model.outputs
    out_items = raw_outputs.items() if isinstance(raw_outputs, Mapping) else (
        (o.dvid, o) for o in raw_outputs)
    outputs = [OutputInfo(index=i, dvid=int(dvid), name=str(getattr(o, "name", f"Y{dvid}")))
               for i, (dvid, o) in enumerate(out_items)]
    fit_spec = dict(getattr(model, "fit_spec", None) or {})
    return params, outputs, fit_spec


def _names_list(value, where: str, known: Sequence[str], cls) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise cls(f"{where}: expected a list of parameter names, got {value!r}.")
    out = []
    for v in value:
        if v not in known:
            raise cls(f"{where}: unknown parameter '{v}'; the model has {', '.join(known)}.")
        if v in out:
            raise cls(f"{where}: parameter '{v}' is listed twice.")
        out.append(v)
    return tuple(out)


def _merge(base: dict, override: Mapping | None) -> dict:
    out = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def build_spec(
    model,
    *,
    priors: Mapping[str, Any] | None = None,
    fix: Mapping[str, float] | None = None,
    population: Mapping[str, Any] | None = None,
    residual: Mapping[str, Any] | None = None,
    covariates: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    covariate_names: Sequence[str] | None = None,
    cli: bool = False,
) -> PopulationSpec:
    """Validate the model file's population tables, apply overrides, return a PopulationSpec.

    Parameters
    ----------
    model : il2pkpd.models.Model
        The structural model with its raw ``fit_spec`` and parameter ``prior`` entries.
    priors : mapping, optional
        Overrides: site name -> prior (text, table or :class:`Prior`). Site names are parameter
        names, ``omega_<P>``, ``sigma_<output>`` or covariate coefficient names.
    fix : mapping, optional
        Parameter name -> value held fixed (units of the parameter).
    population, residual : mapping, optional
        Tables merged over the model file's ``[population]`` / ``[residual]``. A residual entry
        may be a plain string, e.g. ``{"CP": "lognormal"}``.
    covariates : mapping or sequence of mappings, optional
        Covariate effect tables replacing the model file's ``[covariates]``.
    covariate_names : sequence of str, optional
        The dataset's covariate columns; effects on other columns are an error.
    cli : bool
        Raise :class:`~il2pkpd.errors.OptionError` for bad overrides (exit 2 in the CLI).

    Returns
    -------
    PopulationSpec
    """
    params, outputs, fit_spec = model_info(model)
    names = [p.name for p in params]
    by_name = {p.name: p for p in params}
    mname = getattr(model, "name", "model")
    ocls = OptionError if cli else ModelFileError
    unknown_tables = sorted(set(fit_spec) - {"population", "residual", "covariates"})
    if unknown_tables:
        raise ModelFileError(f"model {mname}: unknown fit table(s) {unknown_tables}; allowed: "
                             "[population], [residual], [covariates].")
    pop = _merge(dict(fit_spec.get("population") or {}), population)
    allowed_pop = {"iiv", "covariance", "blocks", "omega_prior", "omega_priors",
                   "lkj_concentration", "fix", "estimate", "parametrization"}
    bad = sorted(set(pop) - allowed_pop)
    if bad:
        raise ModelFileError(f"model {mname} [population]: unknown key(s) {bad}; allowed: "
                             f"{sorted(allowed_pop)}.")

    # --- typical values: estimated or fixed -------------------------------------------------
    pr: dict[str, Prior] = {}
    for p in params:
        where = f"model {mname} [parameters.{p.name}] prior"
        if p.prior is not None:
            prior = parse_prior(p.prior, where=where)
        elif not math.isfinite(p.default):
            raise ModelFileError(f"model {mname} [parameters.{p.name}]: no default and no "
                                 "prior; give a prior (to estimate it) or a default.")
        elif p.auto:
            prior = Prior("fixed", (p.default,))
        elif p.domain in ("positive", "nonnegative"):
            if p.default <= 0:
                prior = Prior("fixed", (p.default,))
            else:
                prior = Prior("lognormal", (math.log(p.default), 1.0))
        elif p.domain == "unit_interval":
            prior = Prior("uniform", (0.0, 1.0))
        else:
            prior = Prior("normal", (p.default, max(1.0, abs(p.default))))
        prior.check_domain(p.name, p.domain, where)
        pr[p.name] = prior
    if "estimate" in pop:
        keep = _names_list(pop["estimate"], f"model {mname} [population] estimate", names,
                           ModelFileError)
        for n in names:
            if n not in keep:
                pr[n] = Prior("fixed", (by_name[n].default,))
    for source, table, cls in (("[population] fix", pop.get("fix") or {}, ModelFileError),
                               ("--fix", fix or {}, ocls)):
        if not isinstance(table, Mapping):
            raise cls(f"{source}: expected name = value pairs, got {table!r}.")
        for n, v in table.items():
            if n not in by_name:
                raise cls(f"{source}: unknown parameter '{n}'; the model has {', '.join(names)}.")
            if isinstance(v, str):
                try:
                    v = float(v)
                except ValueError:
                    raise cls(f"{source} {n}: expected a number, got {v!r}.") from None
            prior = parse_prior(v, where=f"{source} {n}", cli=cls is OptionError)
            if not prior.is_fixed:
                raise cls(f"{source} {n}: expected a number, got {v!r}.")
            prior.check_domain(n, by_name[n].domain, source)
            pr[n] = prior

    # --- IIV --------------------------------------------------------------------------------
    where = f"model {mname} [population]"
    if "iiv" in pop:
        iiv = _names_list(pop["iiv"], f"{where} iiv", names, ModelFileError)
    else:
        iiv = tuple(p.name for p in params
                    if not pr[p.name].is_fixed and p.domain in ("positive", "nonnegative")
                    and not p.auto)
    for n in iiv:
        if pr[n].is_fixed:
            raise ocls(f"{where} iiv: parameter '{n}' is fixed; a fixed parameter cannot have "
                       "inter-individual variability (remove it from iiv or estimate it).")
    iiv = tuple(n for n in names if n in iiv)  # model order
    covariance = str(pop.get("covariance", "diagonal")).lower()
    if covariance not in ("diagonal", "block"):
        raise ModelFileError(f"{where} covariance: '{covariance}' is not allowed; use "
                             "'diagonal' or 'block'.")
    if "blocks" in pop:
        if not isinstance(pop["blocks"], list | tuple):
            raise ModelFileError(f"{where} blocks: expected a list of lists of names.")
        blocks = [_names_list(b, f"{where} blocks", list(iiv) or names, ModelFileError)
                  for b in pop["blocks"]]
        seen = [n for b in blocks for n in b]
        for n in seen:
            if n not in iiv:
                raise ModelFileError(f"{where} blocks: '{n}' is not in iiv.")
            if seen.count(n) > 1:
                raise ModelFileError(f"{where} blocks: '{n}' is in more than one block.")
        blocks = [tuple(n for n in iiv if n in b) for b in blocks]
        blocks += [(n,) for n in iiv if n not in seen]
        order = {n: i for i, n in enumerate(iiv)}
        blocks.sort(key=lambda b: order[b[0]])
    elif covariance == "block" and iiv:
        blocks = [tuple(iiv)]
    else:
        blocks = [(n,) for n in iiv]
    omega_default = parse_prior(pop.get("omega_prior", DEFAULT_OMEGA_PRIOR),
                                where=f"{where} omega_prior")
    per = pop.get("omega_priors") or {}
    if not isinstance(per, Mapping):
        raise ModelFileError(f"{where} omega_priors: expected a table name -> prior.")
    omega_priors = {}
    for n in iiv:
        omega_priors[f"omega_{n}"] = (parse_prior(per[n], where=f"{where} omega_priors.{n}")
                                      if n in per else omega_default)
    for n in per:
        if n not in iiv:
            raise ModelFileError(f"{where} omega_priors: '{n}' has no IIV (iiv = {list(iiv)}).")
    lkj = pop.get("lkj_concentration", DEFAULT_LKJ)
    if isinstance(lkj, bool) or not isinstance(lkj, int | float) or not lkj > 0:
        raise ModelFileError(f"{where} lkj_concentration: expected a number > 0, got {lkj!r}.")

    from_override = "parametrization" in (population or {})
    centred, centred_iiv, partial_iiv = _parametrization(
        pop.get("parametrization", "noncentred"), iiv, names,
        "--parametrization" if from_override and cli else f"{where} parametrization",
        ocls if from_override else ModelFileError)

    # --- covariates -------------------------------------------------------------------------
    raw_cov = covariates if covariates is not None else fit_spec.get("covariates") or {}
    cov_items = (list(raw_cov.items()) if isinstance(raw_cov, Mapping)
                 else [(str(i), c) for i, c in enumerate(raw_cov)])
    effects = []
    for key, c in cov_items:
        effects.append(_covariate_effect(key, c, by_name, pr, covariate_names, mname))
    pairs = [(e.parameter, e.covariate) for e in effects]
    for pair in pairs:
        if pairs.count(pair) > 1:
            raise ModelFileError(f"model {mname} [covariates]: two effects of {pair[1]} on "
                                 f"{pair[0]}; keep one.")

    # --- residual error ---------------------------------------------------------------------
    res_raw = dict(fit_spec.get("residual") or {})
    for k, v in (residual or {}).items():
        if isinstance(v, str):
            v = {"model": v}
        # an override may name the output or give its DVID, whichever the model file used
        o = next((o for o in outputs if str(k) in (o.name, str(o.dvid))), None)
        if o is not None:
            k = next((kk for kk in res_raw if str(kk) in (o.name, str(o.dvid))), k)
        base = res_raw.get(k, {})
        if isinstance(base, Mapping) and isinstance(v, Mapping):
            if "model" in v and v.get("model") != base.get("model"):
                base = {}  # a new error model: its priors start from the defaults
            res_raw[k] = _merge(dict(base), v)
        else:
            res_raw[k] = v
    residuals = _residuals(res_raw, outputs, mname)

    spec = PopulationSpec(
        parameters=tuple(params), priors=pr, iiv=iiv, blocks=tuple(blocks),
        omega_priors=omega_priors, lkj_concentration=float(lkj), covariates=tuple(effects),
        residuals=tuple(residuals), centred=centred, centred_iiv=centred_iiv,
        partial_iiv=partial_iiv,
    )
    return apply_prior_overrides(spec, priors or {}, cli=cli)


def _parametrization_word(text: str) -> str | None:
    w = text.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    w = w.replace("centered", "centred")
    return w if w in ("centred", "noncentred") else None


def weight_text(w) -> str:
    """A centring weight, or the range of per-subject ones, as text."""
    if isinstance(w, tuple):
        return f"per subject {min(w):g}-{max(w):g}"
    return f"{w:g}"


def _parametrization(value, iiv: tuple[str, ...], names: Sequence[str], where: str,
                     cls=ModelFileError) -> tuple[bool, tuple[str, ...], tuple]:
    """Parse ``[population] parametrization``; returns (centred, centred_iiv, partial_iiv).

    Accepted: ``"noncentred"``, ``"centred"``, or a table with ``centred`` or ``noncentred``
    listing IIV parameters (the other IIV parameters get the other form) and/or ``partial``,
    a table IIV parameter -> centring weight in [0, 1] (0 non-centred, 1 centred), or a list
    of them, one per subject (the model checks the length); or the list form as text,
    ``"centred=CL,V1"`` (the CLI's form). Errors are raised as *cls*.
    """
    allowed = ("use \"noncentred\" (default), \"centred\", or a mixed form listing IIV "
               "parameters, e.g. { centred = [\"CL\", \"V1\"] } (the other IIV parameters "
               "non-centred), { noncentred = [\"Q\", \"V2\"] }, optionally with "
               "partial = { Q = 0.5 } (centring weights between 0 and 1)")
    if isinstance(value, str) and "=" in value:
        key, _, rest = value.partition("=")
        value = {key: rest}
    if isinstance(value, str):
        word = _parametrization_word(value)
        if word is None:
            raise cls(f"{where}: '{value}' is not allowed; {allowed}.")
        return word == "centred", (), ()
    if not isinstance(value, Mapping) or not value:
        raise cls(f"{where}: expected a word or a table, got {value!r}; {allowed}.")
    words = {}
    partial_raw = None
    for key, listed in value.items():
        if str(key).strip().lower() == "partial":
            partial_raw = listed
            continue
        word = _parametrization_word(str(key))
        if word is None:
            raise cls(f"{where}: key '{key}' is not allowed; {allowed}.")
        words[word] = listed
    if len(words) > 1:
        raise cls(f"{where}: give either 'centred' or 'noncentred' (one key), not both; "
                  f"{allowed}.")

    def check_iiv(n, what):
        if n not in iiv:
            raise cls(f"{where} {what}: parameter '{n}' has no inter-individual variability "
                      f"(iiv = {list(iiv)}); list IIV parameters only.")

    partial: dict[str, float] = {}
    if partial_raw is not None:
        if not isinstance(partial_raw, Mapping):
            raise cls(f"{where} partial: expected a table parameter -> weight in [0, 1], e.g. "
                      f"{{ Q = 0.5 }}, got {partial_raw!r}.")
        for n, w in partial_raw.items():
            if n not in names:
                raise cls(f"{where} partial: unknown parameter '{n}'; the model has "
                          f"{', '.join(names)}.")
            check_iiv(n, "partial")
            ws = list(w) if isinstance(w, list | tuple) else [w]
            if not ws or any(isinstance(v, bool) or not isinstance(v, int | float)
                             or not 0 <= v <= 1 for v in ws):
                raise cls(f"{where} partial {n}: expected a centring weight between 0 "
                          f"(non-centred) and 1 (centred), or a list of them (one per "
                          f"subject), got {w!r}.")
            # a list: one weight per subject (kept partial whatever its values)
            partial[n] = tuple(float(v) for v in ws) if isinstance(w, list | tuple) else float(w)
    listed_c: set[str] = set()
    if words:
        (word, listed), = words.items()
        listed = _names_list(listed, f"{where} {word}", names, cls)
        for n in listed:
            check_iiv(n, word)
            if n in partial:
                raise cls(f"{where}: parameter '{n}' is both in {word} and in partial; "
                          "keep one.")
        rest = [n for n in iiv if n not in partial]
        listed_c = {n for n in rest if (n in listed) == (word == "centred")}
    listed_c |= {n for n, w in partial.items() if not isinstance(w, tuple) and w == 1.0}
    partial = {n: w for n, w in partial.items() if isinstance(w, tuple) or 0.0 < w < 1.0}
    centred = tuple(n for n in iiv if n in listed_c)
    if iiv and len(centred) == len(iiv):
        return True, (), ()
    return False, centred, tuple((n, partial[n]) for n in iiv if n in partial)


def _covariate_effect(key, c, by_name, pr, covariate_names, mname) -> CovariateEffect:
    where = f"model {mname} [covariates.{key}]"
    if not isinstance(c, Mapping):
        raise ModelFileError(f"{where}: expected a table with parameter, covariate, model.")
    allowed = {"parameter", "covariate", "model", "reference", "exponent", "prior", "levels"}
    bad = sorted(set(c) - allowed)
    if bad:
        raise ModelFileError(f"{where}: unknown key(s) {bad}; allowed: {sorted(allowed)}.")
    for k in ("parameter", "covariate", "model"):
        if k not in c:
            raise ModelFileError(f"{where}: missing '{k}'.")
    par, cov, kind = str(c["parameter"]), str(c["covariate"]), str(c["model"]).lower()
    if par not in by_name:
        raise ModelFileError(f"{where}: unknown parameter '{par}'; the model has "
                             f"{', '.join(by_name)}.")
    if pr[par].is_fixed:
        raise ModelFileError(f"{where}: parameter '{par}' is fixed; a covariate effect needs "
                             "an estimated typical value.")
    if kind not in COVARIATE_MODELS:
        raise ModelFileError(f"{where}: model '{kind}' is not allowed; use one of "
                             f"{', '.join(COVARIATE_MODELS)}.")
    if covariate_names is not None and cov not in covariate_names:
        raise ModelFileError(f"{where}: covariate column '{cov}' is not in the dataset "
                             f"(covariates: {', '.join(covariate_names) or 'none'}).")
    domain = by_name[par].domain
    if domain == "unit_interval" or (domain == "real" and kind in ("power", "exponential")):
        raise ModelFileError(f"{where}: a {kind} effect cannot act on '{par}' with domain "
                             f"'{domain}'; use linear or categorical on real parameters.")
    ref = c.get("reference", 0.0 if kind == "categorical" else None)
    if ref is None or isinstance(ref, bool) or not isinstance(ref, int | float):
        raise ModelFileError(f"{where}: 'reference' (a number: the covariate's centring value, "
                             "e.g. 70 for WT) is required.")
    if kind == "power" and ref <= 0:
        raise ModelFileError(f"{where}: a power effect needs reference > 0, got {ref}.")
    levels: tuple[float, ...] = ()
    if kind == "categorical":
        lv = c.get("levels")
        if not isinstance(lv, list | tuple) or not lv or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in lv):
            raise ModelFileError(f"{where}: 'levels' must list the non-reference levels, "
                                 "e.g. levels = [1].")
        levels = tuple(float(v) for v in lv)
        if float(ref) in levels:
            raise ModelFileError(f"{where}: the reference level {ref} is also in levels.")
    if "exponent" in c and "prior" in c:
        raise ModelFileError(f"{where}: give either 'exponent' (fixed) or 'prior' (estimated).")
    if "exponent" in c:
        if kind != "power":
            raise ModelFileError(f"{where}: 'exponent' is for power effects; use 'prior'.")
        prior = parse_prior(float(c["exponent"]), where=f"{where} exponent")
    elif "prior" in c:
        prior = parse_prior(c["prior"], where=f"{where} prior")
        if prior.dist in ("lognormal", "halfnormal"):
            pass  # allowed: a positive coefficient
    else:
        prior = Prior("normal", (0.0, 1.0))
    return CovariateEffect(parameter=par, covariate=cov, model=kind, reference=float(ref),
                           prior=prior, levels=levels)


def _residuals(res_raw: Mapping, outputs: list[OutputInfo], mname: str) -> list[ResidualSpec]:
    by_key = {}
    for o in outputs:
        by_key[o.name] = o
        by_key[str(o.dvid)] = o
    for k in res_raw:
        if str(k) not in by_key:
            raise ModelFileError(f"model {mname} [residual.{k}]: no output named '{k}'; outputs: "
                                 + ", ".join(f"{o.name} (DVID {o.dvid})" for o in outputs) + ".")
    out = []
    for o in outputs:
        keys = [k for k in res_raw if str(k) in (o.name, str(o.dvid))]
        if len(keys) > 1:
            raise ModelFileError(f"model {mname} [residual]: output {o.name} is given twice "
                                 f"({keys}).")
        table = res_raw[keys[0]] if keys else {}
        where = f"model {mname} [residual.{keys[0] if keys else o.name}]"
        if isinstance(table, str):
            table = {"model": table}
        if not isinstance(table, Mapping):
            raise ModelFileError(f"{where}: expected a table with 'model'.")
        allowed = {"model", "sigma_prior", "sigma_add_prior", "sigma_prop_prior"}
        bad = sorted(set(table) - allowed)
        if bad:
            raise ModelFileError(f"{where}: unknown key(s) {bad}; allowed: {sorted(allowed)}.")
        kind = str(table.get("model", "proportional")).lower()
        if kind not in RESIDUAL_MODELS:
            raise ModelFileError(f"{where}: model '{kind}' is not allowed; use one of "
                                 f"{', '.join(RESIDUAL_MODELS)}.")
        if kind == "combined":
            if "sigma_prior" in table:
                raise ModelFileError(f"{where}: a combined model takes sigma_add_prior and "
                                     "sigma_prop_prior, not sigma_prior.")
            priors = {
                f"sigma_add_{o.name}": parse_prior(table.get("sigma_add_prior",
                                                             DEFAULT_SIGMA_PRIOR),
                                                   where=f"{where} sigma_add_prior"),
                f"sigma_prop_{o.name}": parse_prior(table.get("sigma_prop_prior",
                                                              DEFAULT_SIGMA_PRIOR),
                                                    where=f"{where} sigma_prop_prior"),
            }
        else:
            if "sigma_add_prior" in table or "sigma_prop_prior" in table:
                raise ModelFileError(f"{where}: sigma_add_prior / sigma_prop_prior are for "
                                     "model = \"combined\"; use sigma_prior.")
            priors = {f"sigma_{o.name}": parse_prior(table.get("sigma_prior",
                                                               DEFAULT_SIGMA_PRIOR),
                                                     where=f"{where} sigma_prior")}
        for n, p in priors.items():
            p.check_domain(n, "positive", where)
        out.append(ResidualSpec(output=o, model=kind, priors=priors))
    return out


def apply_prior_overrides(spec: PopulationSpec, overrides: Mapping[str, Any], *,
                          cli: bool = False) -> PopulationSpec:
    """Return *spec* with priors replaced by site name (parameter, omega, sigma, beta)."""
    import dataclasses

    cls = OptionError if cli else ModelFileError
    pr = dict(spec.priors)
    omega = dict(spec.omega_priors)
    residuals = list(spec.residuals)
    covs = list(spec.covariates)
    for name, value in overrides.items():
        where = f"--prior {name}" if cli else f"priors[{name!r}]"
        prior = parse_prior(value, where=where, cli=cli)
        if name in pr:
            if prior.is_fixed and name in spec.iiv:
                raise cls(f"{where}: '{name}' has IIV and cannot be fixed; remove it from iiv.")
            prior.check_domain(name, spec.domain(name), where)
            pr[name] = prior
        elif name in omega:
            prior.check_domain(name, "positive", where)
            omega[name] = prior
        elif any(name in r.priors for r in residuals):
            prior.check_domain(name, "positive", where)
            residuals = [dataclasses.replace(r, priors={**r.priors, name: prior})
                         if name in r.priors else r for r in residuals]
        elif any(name in c.site_names for c in covs):
            covs = [dataclasses.replace(c, prior=prior) if name in c.site_names else c
                    for c in covs]
        else:
            known = (list(pr) + list(omega) + [n for r in residuals for n in r.priors]
                     + [n for c in covs for n in c.site_names])
            raise cls(f"{where}: no parameter named '{name}'; known: {', '.join(known)}.")
    return dataclasses.replace(spec, priors=pr, omega_priors=omega, residuals=tuple(residuals),
                               covariates=tuple(covs))


def parse_assignments(items: Sequence[str], option: str) -> dict[str, str]:
    """Parse CLI assignments ``NAME=VALUE`` (repeatable option) into a dict."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise OptionError(f"{option} {item!r}: expected NAME=VALUE, e.g. "
                              f"{option} CL=lognormal(1.4,0.5).")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k or not v.strip():
            raise OptionError(f"{option} {item!r}: expected NAME=VALUE.")
        if k in out:
            raise OptionError(f"{option}: '{k}' is given twice.")
        out[k] = v.strip()
    return out
