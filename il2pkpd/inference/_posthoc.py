"""Quantities computed from the draws after sampling: random effects, PRED/IPRED and the prior.

None of these are sample or deterministic sites of the NumPyro model: adding them there would
put an extra structural solve per draw inside the sampler (and a second solve in every
gradient for ODE models). They are rebuilt here, once, from the saved draws, by replaying the
population model's own building blocks (:meth:`PopulationModel.typical_values`,
:meth:`~PopulationModel.covariate_terms`, :meth:`~PopulationModel.random_effects`) under
:func:`numpyro.handlers.substitute` with each draw's values, so that they follow every
parametrization (non-centred ``z``, centred ``phi``, or both: mixed), covariance structure
(diagonal or block) and covariate model exactly as the fit did.

- ``eta_<P>`` (chain, draw, subject), every draw: the random effect of IIV parameter ``P`` on
  its IIV scale, ``eta = transform(P_i) - (transform(TV) + covariate term)`` with transform
  ``log`` (positive, nonnegative), ``logit`` (unit interval) or the identity (real).
- ``ipred`` (chain, draw, obs): the individual prediction, the structural model at the
  individual parameters ``ind_<P>`` (typical values for parameters that do not vary), output
  units, one value per used observation (``obs`` plate order).
- ``pred`` (chain, draw, obs): the population prediction, the structural model at the typical
  values with each subject's covariate terms applied and every eta zero.
  Both are NaN where the structural solve failed. They are computed on at most
  ``max_draws`` draws (evenly spaced within each chain, the same positions in every chain);
  the ``draw`` coordinate holds the positions kept.
- prior draws of every population parameter (and ``eta_<P>``, ``ind_<P>``) and prior
  predictive draws of ``DV`` (uncensored, NaN where the solve failed), from
  :class:`numpyro.infer.Predictive` on the parameter part of the model.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro import handlers

from il2pkpd.inference.likelihood import ResidualError
from il2pkpd.inference.model import PopulationModel

__all__ = ["replay", "repair_numpyro_submodules", "select_draws", "random_effect_draws",
           "prediction_draws", "prior_draws", "posthoc_datasets", "PRED_MAX_DRAWS", "PRIOR_DRAWS"]

#: Default largest number of posterior draws PRED and IPRED are computed on.
PRED_MAX_DRAWS = 200
#: Default number of prior (and prior predictive) draws.
PRIOR_DRAWS = 300
#: Rough bound on predicted values held in memory at once (per prediction kind).
_BATCH_ELEMENTS = 2_000_000


def repair_numpyro_submodules() -> list[str]:
    """Bind every imported ``numpyro.*`` submodule as an attribute of its parent package.

    ``arviz_base`` loads numpyro lazily (``lazy_loader``); when the first numpyro import
    after ``import arviz`` is ``from numpyro.infer import ...``, the submodules of
    ``numpyro.infer`` end up in ``sys.modules`` without being attributes of the package, and
    ``arviz.from_numpyro`` fails with "module 'numpyro.infer' has no attribute
    'initialization'". Called before ``arviz.from_numpyro``.

    Returns
    -------
    list of str
        The submodules that had to be bound (empty when nothing was wrong).
    """
    import sys

    fixed = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("numpyro.") or module is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is not None and getattr(parent, child, None) is None:
            setattr(parent, child, module)
            fixed.append(name)
    return fixed


def replay(pm: PopulationModel, draw: dict) -> tuple[dict, dict, jax.Array | None]:
    """Typical values, covariate terms and random effects of one draw.

    Parameters
    ----------
    pm : PopulationModel
    draw : dict
        Site name -> value for one draw (no chain or draw axis): every sample site of the
        model (typical values, ``omega_<P>``, ``L_omega_<k>``, ``z`` or ``phi``,
        ``beta_...``); other entries are ignored.

    Returns
    -------
    tv : dict
        Name -> scalar typical value (fixed parameters at their value), parameter units.
    terms : dict
        Parameter -> per-subject covariate term (log scale for positive parameters).
    eta : jax.Array or None
        (n_subjects, n_iiv) random effects in ``pm.spec.iiv`` order; None without IIV.
    """
    with handlers.substitute(data=draw):
        tv = pm.typical_values()
        terms = pm.covariate_terms()
        eta = pm.random_effects(tv, terms)
    return tv, terms, eta


def select_draws(n_draw: int, n_chain: int, max_draws: int | None) -> np.ndarray:
    """Positions of the draws kept in every chain: all of them, or evenly spaced ones from the
    first to the last (rounded).

    Parameters
    ----------
    n_draw, n_chain : int
        Draws per chain, chains.
    max_draws : int or None
        Largest total number of draws kept (over all chains); None keeps all.

    Returns
    -------
    numpy.ndarray
        Sorted unique draw positions (at least one per chain).

    Examples
    --------
    >>> select_draws(1000, 4, 200)[:3]
    array([ 0, 20, 41])
    >>> select_draws(10, 2, None).size
    10
    """
    if max_draws is None or n_draw * n_chain <= max_draws:
        return np.arange(n_draw)
    per_chain = max(1, int(max_draws) // n_chain)
    return np.unique(np.linspace(0, n_draw - 1, per_chain).round().astype(int))


def _flat(samples: dict, draws: np.ndarray | None = None) -> tuple[dict, int, int]:
    """Sample sites (not ``ind_``/deterministics) as (n_chain * n_kept, ...) arrays."""
    keep = {k: jnp.asarray(v) for k, v in samples.items()
            if not k.startswith(("ind_", "corr_", "eta_"))}
    n_chain, n_draw = next(iter(keep.values())).shape[:2] if keep else (1, 1)
    if draws is not None:
        keep = {k: v[:, draws] for k, v in keep.items()}
        n_draw = len(draws)
    return ({k: jnp.reshape(v, (n_chain * n_draw, *v.shape[2:])) for k, v in keep.items()},
            n_chain, n_draw)


def _batch_size(pm: PopulationModel, batch_size: int | None, per_draw: int) -> int:
    if batch_size is not None:
        return max(1, int(batch_size))
    return int(np.clip(_BATCH_ELEMENTS // max(per_draw, 1), 1, 256))


def _per_observation(pm: PopulationModel, params: dict) -> jax.Array:
    """Structural prediction at *params* for each used observation; NaN where it failed."""
    pred, ok = pm.predict_fn(params)
    flat = jnp.reshape(pred, (-1,))[pm.obs.subject * pred.shape[1] + pm.obs.column]
    good = jnp.asarray(ok, dtype=bool)[pm.obs.subject] & jnp.isfinite(flat)
    return jnp.where(good, flat, jnp.nan)


def random_effect_draws(pm: PopulationModel, samples: dict, *,
                        batch_size: int | None = None) -> dict[str, np.ndarray]:
    """The random effects ``eta_<P>`` of every draw.

    Parameters
    ----------
    pm : PopulationModel
    samples : dict
        Site name -> array (chain, draw, ...), constrained (as from
        ``MCMC.get_samples(group_by_chain=True)``).
    batch_size : int, optional
        Draws evaluated together (default: bounded by memory).

    Returns
    -------
    dict
        ``eta_<P>`` -> (chain, draw, subject) array on the IIV scale (log for positive
        parameters, logit for unit-interval ones, identity for real ones); empty without IIV.
    """
    if not pm.spec.iiv or not samples:
        return {}
    flat, n_chain, n_draw = _flat(samples)

    def one(draw):
        return replay(pm, draw)[2]

    bs = _batch_size(pm, batch_size, pm.n_subjects * len(pm.spec.iiv) * 4)
    eta = np.asarray(jax.jit(lambda d: jax.lax.map(one, d, batch_size=bs))(flat))
    eta = eta.reshape(n_chain, n_draw, pm.n_subjects, len(pm.spec.iiv))
    return {f"eta_{p}": eta[..., k] for k, p in enumerate(pm.spec.iiv)}


def prediction_draws(pm: PopulationModel, samples: dict, *,
                     max_draws: int | None = PRED_MAX_DRAWS,
                     batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Population (PRED) and individual (IPRED) predictions per observation and draw.

    Parameters
    ----------
    pm : PopulationModel
    samples : dict
        Site name -> array (chain, draw, ...), constrained.
    max_draws : int or None
        Largest total number of draws evaluated (evenly spaced in each chain, see
        :func:`select_draws`); None evaluates every draw.
    batch_size : int, optional
        Draws evaluated together with ``jax.vmap`` inside a ``jax.lax.map`` (default: bounded
        so that about two million predictions are held at once).

    Returns
    -------
    pred, ipred : numpy.ndarray
        (chain, n_kept, n_obs), output units; NaN where the structural solve failed.
    draws : numpy.ndarray
        The draw positions kept (per chain).
    """
    n_chain, n_draw = next(iter(samples.values())).shape[:2]
    draws = select_draws(n_draw, n_chain, max_draws)
    flat, n_chain, n_kept = _flat(samples, draws)

    def one(draw):
        tv, terms, eta = replay(pm, draw)
        ind = pm.individual_parameters(tv, eta, terms)
        pop = pm.population_parameters(tv, terms)
        return _per_observation(pm, pop), _per_observation(pm, ind)

    n_obs_max = int(np.max(pm.obs.column)) + 1 if pm.obs.column.size else 1
    bs = _batch_size(pm, batch_size, pm.n_subjects * n_obs_max)
    pred, ipred = jax.jit(lambda d: jax.lax.map(one, d, batch_size=bs))(flat)
    shape = (n_chain, n_kept, len(pm.obs.dv))
    return np.asarray(pred).reshape(shape), np.asarray(ipred).reshape(shape), draws


def _parameter_model(pm: PopulationModel):
    """The parameter part of *pm* (no structural solve, no observation site)."""

    def model():
        pm.parameters()
        pm.residual_arrays()

    return model


def prior_draws(pm: PopulationModel, n: int = PRIOR_DRAWS, *, seed: int = 0,
                predictive: bool = True, batch_size: int | None = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Draws from the prior, and prior predictive draws of the observations.

    Parameters
    ----------
    pm : PopulationModel
    n : int
        Number of draws.
    seed : int
        Random seed.
    predictive : bool
        Also simulate ``DV`` (one structural solve per draw).
    batch_size : int, optional
        Draws solved together (see :func:`prediction_draws`).

    Returns
    -------
    prior : dict
        Site name -> (1, n, ...) array: the model's sample sites and deterministics (typical
        values, ``omega_<P>``, ``corr_<P>_<Q>``, ``beta_...``, ``sigma_<output>``, ``z`` or
        ``phi``, ``ind_<P>``) and ``eta_<P>``.
    dv : numpy.ndarray or None
        (1, n, n_obs) prior predictive observations (uncensored, output units; NaN where the
        solve failed); None when *predictive* is false.
    """
    from numpyro.infer import Predictive

    from il2pkpd.inference.results import keep_site

    key_par, key_dv = jax.random.split(jax.random.PRNGKey(seed))
    raw = jax.jit(Predictive(_parameter_model(pm), num_samples=int(n)))(key_par)
    prior = {k: np.asarray(v)[None] for k, v in raw.items() if keep_site(k)}
    if not predictive:
        prior.update(random_effect_draws(pm, prior, batch_size=batch_size))
        return prior, None
    flat, _, _ = _flat(prior)

    def one(draw):
        tv, terms, eta = replay(pm, draw)
        ipred = _per_observation(pm, pm.individual_parameters(tv, eta, terms))
        with handlers.substitute(data=draw):
            sa, sp, _ = pm.residual_arrays()
        return ipred, sa, sp, eta

    n_obs_max = int(np.max(pm.obs.column)) + 1 if pm.obs.column.size else 1
    bs = _batch_size(pm, batch_size, pm.n_subjects * n_obs_max)
    ipred, sa, sp, eta = jax.jit(lambda d: jax.lax.map(one, d, batch_size=bs))(flat)
    if eta is not None:
        eta = np.asarray(eta)
        prior.update({f"eta_{p}": eta[None, :, :, k] for k, p in enumerate(pm.spec.iiv)})
    # NaN predictions (failed solves) are kept as NaN observations: no argument validation,
    # which NumPyro does by default on concrete values
    dist = ResidualError(ipred, sa, sp, jnp.asarray(_is_log(pm)), jnp.asarray(pm.obs.blq),
                         jnp.asarray(pm.obs.lloq), validate_args=False)
    dv = np.asarray(dist.sample(key_dv))
    return prior, dv.reshape(1, int(n), -1)


def _is_log(pm: PopulationModel) -> np.ndarray:
    """Per-observation flag: the output has a log-normal residual error."""
    log_outputs = [r.output.index for r in pm.spec.residuals if r.model == "lognormal"]
    return np.isin(pm.obs.output, log_outputs)


def _dataset(values: dict, pm: PopulationModel, draws: np.ndarray | None = None) -> xr.Dataset:
    """Arrays (chain, draw, ...) -> Dataset with the fit's dimension names."""
    ids = np.asarray(pm.ids)
    site_dims = pm.iiv_site_dims()
    data = {}
    iiv_coords = {}
    for name, arr in values.items():
        arr = np.asarray(arr)
        extra = arr.shape[2:]
        if name in site_dims and len(extra) == 2:
            dim, labels = site_dims[name]
            dims = ["subject", dim]
            iiv_coords[dim] = list(labels)
        elif (name.startswith(("ind_", "eta_")) or name[2:] in pm.spec.partial_weights
              and name.startswith("z_")) and len(extra) == 1:
            dims = ["subject"]
        elif name in ("pred", "ipred", "DV") and len(extra) == 1:
            dims = ["obs"]
        else:
            dims = [f"{name}_dim_{i}" for i in range(len(extra))]
        data[name] = (["chain", "draw", *dims], arr)
    ds = xr.Dataset(data)
    coords = {"chain": np.arange(ds.sizes["chain"]),
              "draw": np.arange(ds.sizes["draw"]) if draws is None else np.asarray(draws)}
    if "subject" in ds.dims:
        coords["subject"] = ids
    coords.update({d: v for d, v in iiv_coords.items() if d in ds.dims})
    if "obs" in ds.dims:
        coords["obs"] = np.arange(ds.sizes["obs"])
    return ds.assign_coords(coords)


def posthoc_datasets(pm: PopulationModel, samples: dict, *, seed: int = 0,
                     pred_max_draws: int | None = PRED_MAX_DRAWS, n_prior: int = PRIOR_DRAWS,
                     batch_size: int | None = None) -> dict[str, xr.Dataset]:
    """Everything :mod:`il2pkpd.inference._posthoc` adds to a fit's DataTree.

    Parameters
    ----------
    pm : PopulationModel
    samples : dict
        Site name -> array (chain, draw, ...), constrained.
    seed : int
        Seed of the prior draws.
    pred_max_draws : int or None
        See :func:`prediction_draws`.
    n_prior : int
        Prior draws (0: no ``prior`` and ``prior_predictive`` groups).
    batch_size : int, optional
        Draws evaluated together.

    Returns
    -------
    dict
        ``"eta"``: ``eta_<P>`` for the posterior group (every draw); ``"predictions"``:
        ``pred`` and ``ipred`` (its ``attrs["thinned"]`` says whether some draws were left
        out; when not, they belong in the posterior group); ``"prior"`` and
        ``"prior_predictive"`` (``DV``) when *n_prior* > 0. A part whose computation raises
        is left out with a ``RuntimeWarning`` (the fit's own draws must not be lost).
    """
    out: dict[str, xr.Dataset] = {}

    def eta_part():
        eta = random_effect_draws(pm, samples, batch_size=batch_size)
        if eta:
            out["eta"] = _dataset(eta, pm)
            for name in eta:
                out["eta"][name].attrs["description"] = (
                    f"random effect of {name[4:]} on its IIV scale "
                    f"({_scale(pm.spec.domain(name[4:]))}): transform(ind_{name[4:]}) - "
                    "(transform(typical value) + covariate term)")

    def prediction_part():
        pred, ipred, draws = prediction_draws(pm, samples, max_draws=pred_max_draws,
                                              batch_size=batch_size)
        n_draw = next(iter(samples.values())).shape[1]
        thinned = len(draws) < n_draw
        ds = _dataset({"pred": pred, "ipred": ipred}, pm, draws)
        note = (f"computed on {len(draws)} of {n_draw} draws per chain (evenly spaced; the "
                "draw coordinate gives the positions)" if thinned else "computed on every draw")
        ds["pred"].attrs.update(description="population prediction: typical values with the "
                                "covariate terms, all random effects zero; output units",
                                draws=note)
        ds["ipred"].attrs.update(description="individual prediction at ind_<P> (typical "
                                 "values for parameters that do not vary); output units",
                                 draws=note)
        ds.attrs["thinned"] = int(thinned)
        out["predictions"] = ds

    def prior_part():
        prior, dv = prior_draws(pm, n_prior, seed=seed + 54321, batch_size=batch_size)
        out["prior"] = _dataset(prior, pm)
        out["prior"].attrs["description"] = (
            f"{n_prior} draws from the prior (numpyro.infer.Predictive on the population "
            "model without observations)")
        out["prior_predictive"] = _dataset({"DV": dv}, pm)
        out["prior_predictive"]["DV"].attrs["description"] = (
            "observations simulated from prior draws (uncensored; NaN where the structural "
            "solve failed)")

    parts = [("random effects eta_<P>", eta_part), ("pred/ipred", prediction_part)]
    if n_prior > 0:
        parts.append(("prior draws", prior_part))
    for what, part in parts:
        try:
            part()
        except Exception as exc:  # never lose a finished fit's draws to a post-hoc step
            warnings.warn(f"{what} could not be computed after the fit and are left out of "
                          f"the DataTree ({type(exc).__name__}: {exc}); the posterior draws "
                          "are kept.", RuntimeWarning, stacklevel=2)
    return out


def _scale(domain: str) -> str:
    return {"positive": "log", "nonnegative": "log", "unit_interval": "logit"}.get(domain,
                                                                                  "identity")
