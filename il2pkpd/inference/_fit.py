"""`fit`: from a model and a dataset to a :class:`~il2pkpd.inference.results.FitResult`."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from il2pkpd.errors import OptionError
from il2pkpd.inference.model import PopulationModel, build_population_model
from il2pkpd.inference.results import (
    FitResult,
    chain_step_sizes,
    chain_warnings,
    diagnostics_warnings,
    individual_table,
    keep_site,
    summary_table,
)
from il2pkpd.inference.samplers import (
    progress_mode,
    reparametrized,
    run_laplace,
    run_map,
    run_nuts,
    run_svi,
    tree_depths,
)
from il2pkpd.inference.spec import PopulationSpec, build_spec

__all__ = ["fit", "fit_population_model", "prepare", "METHODS", "to_datatree", "shard_events",
           "eta_shrinkage", "suggest_parametrization"]

METHODS = ("nuts", "map", "focei", "laplace", "svi")


def shard_events(events, devices=None):
    """Place every per-subject array of *events* on a subject-sharded layout over *devices*.

    Arrays whose first axis has length n_subjects are split over a 1-D mesh with axis
    ``subject``; the rest are replicated. XLA then partitions the prediction and the
    likelihood by subject. n_subjects must be a multiple of the number of devices.

    Returns
    -------
    A copy of *events* (same type) with sharded arrays.
    """
    import dataclasses

    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(devices or jax.devices())
    n_subj = int(np.shape(events.obs_mask)[0])
    if n_subj % len(devices):
        raise OptionError(f"cannot shard {n_subj} subjects evenly over {len(devices)} devices; "
                          "use a number of devices that divides the number of subjects.")
    mesh = Mesh(np.array(devices), ("subject",))

    def place(x):
        if isinstance(x, np.ndarray | jax.Array) and np.ndim(x) >= 1 and np.shape(x)[0] == n_subj \
                and np.asarray(x).dtype.kind in "biuf":
            spec = PartitionSpec("subject", *([None] * (np.ndim(x) - 1)))
            return jax.device_put(jnp.asarray(x), NamedSharding(mesh, spec))
        return x

    if dataclasses.is_dataclass(events):
        changes = {f.name: place(getattr(events, f.name)) for f in dataclasses.fields(events)}
        return dataclasses.replace(events, **changes)
    return jax.tree.map(place, events)


RODAS_FIT_RTOL = 1e-4


def _fit_predict_fn(model, events, spec: PopulationSpec, solver_options: Mapping | None):
    """The prediction function of a fit.

    The canonical IL-2 model (states as :data:`il2pkpd.solve.il2.STATES`, structured linear
    solve) gets the batched Rodas4 path (``method="rodas"``, relative tolerance
    ``RODAS_FIT_RTOL``: solver errors near 1e-4 are far below any residual error) whenever its
    events allow it; other models the engine's default (closed form, or diffrax, whose reverse
    mode was faster than Rodas4's forward Jacobians on the non-stiff Friberg model: 48 vs 250 ms
    per gradient). An explicit ``solver_options["method"]`` wins. On the Rodas4 path only the
    parameters the fit differentiates get Jacobian columns.
    """
    from il2pkpd.engine import make_predict_fn
    from il2pkpd.solve.il2 import STATES

    options = dict(solver_options or {})
    structured = (model.structure == "ode" and model.path is not None
                  and tuple(model.states) == STATES)
    if "method" not in options and structured:
        try:
            trial = {"rtol": RODAS_FIT_RTOL, **options, "method": "rodas",
                     "diff_params": spec.differentiated}
            return make_predict_fn(model, events, **trial)
        except OptionError:
            pass                      # SS doses, resets, ...: the diffrax path handles them
    if options.get("method") == "rodas" and "diff_params" not in options:
        options["diff_params"] = spec.differentiated
    return make_predict_fn(model, events, **options)


def prepare(model, data, *, priors: Mapping[str, Any] | None = None,
            fix: Mapping[str, float] | None = None, population: Mapping | None = None,
            residual: Mapping | None = None, covariates=None, solver_options: Mapping | None = None,
            shard: bool = False, cli: bool = False):
    """Load model and data and build the population model (no inference).

    Returns
    -------
    pm : PopulationModel
    model : il2pkpd.models.Model
    dataset : il2pkpd.data.Dataset
    events : il2pkpd.engine.EventArrays
    """
    from il2pkpd.data import read_dataset
    from il2pkpd.engine import build_events
    from il2pkpd.models import load_model

    if isinstance(model, str) or hasattr(model, "__fspath__"):
        model = load_model(model)
    if isinstance(data, str) or hasattr(data, "__fspath__") or not hasattr(data, "df"):
        data = read_dataset(data, model=model)
    spec = build_spec(model, priors=priors, fix=fix, population=population, residual=residual,
                      covariates=covariates, covariate_names=list(data.covariates), cli=cli)
    events = build_events(data, model)
    if shard and jax.device_count() > 1:
        events = shard_events(events)
    predict_fn = _fit_predict_fn(model, events, spec, solver_options)
    lines = data.df["LINE"].to_numpy() if "LINE" in data.df else None
    pm = build_population_model(spec, events, predict_fn,
                                line_of=(lambda r: lines[int(r)]) if lines is not None else None)
    return pm, model, data, events


def _constant_data(pm: PopulationModel) -> xr.Dataset:
    o = pm.obs
    ids = np.asarray(pm.ids)
    data = {"ID": ("obs", ids[o.subject]), "BLQ": ("obs", o.blq.astype(np.int8)),
            "LLOQ": ("obs", o.lloq), "OUTPUT": ("obs", o.output)}
    for name, arr in (("TIME", o.time), ("DVID", o.dvid), ("CMT", o.cmt), ("ROW", o.row)):
        if arr is not None:
            data[name] = ("obs", np.asarray(arr))
    data["subject_ID"] = ("subject", ids)
    for name, x in pm.covariates.items():
        data[f"cov_{name}"] = ("subject", np.asarray(x))
    return xr.Dataset(data, coords={"obs": np.arange(len(o.dv)), "subject": ids})


def to_datatree(pm: PopulationModel, samples: dict, *, mcmc=None, seed: int = 0,
                posterior_predictive: bool = True, attrs: dict | None = None,
                pred_max_draws: int | None = 200, n_prior: int = 300) -> xr.DataTree:
    """Assemble the ArviZ DataTree.

    Besides the sampled sites, the posterior gets ``eta_<P>`` (subject) and the per-observation
    ``pred`` and ``ipred`` (obs), and the tree gets ``prior`` and ``prior_predictive`` groups,
    all computed after sampling (:mod:`il2pkpd.inference._posthoc`). When ``pred``/``ipred``
    are computed on fewer draws than the posterior holds, they go to a ``predictions`` group
    (their ``draw`` coordinate names the draws kept).

    Parameters
    ----------
    pm : PopulationModel
    samples : dict
        Site name -> array (chain, draw, ...), constrained (deterministic sites included).
    mcmc : numpyro.infer.MCMC, optional
        When given, :func:`arviz.from_numpyro` builds the tree (with ``sample_stats``).
    seed : int
        Seed of the posterior predictive draws.
    posterior_predictive : bool
        Simulate ``DV`` for every draw.
    attrs : dict, optional
        Added to the root's attributes.
    pred_max_draws : int or None
        Most draws ``pred``/``ipred`` are computed on (None: all).
    n_prior : int
        Prior draws (0: no prior groups).
    """
    import arviz as az
    from numpyro.infer import Predictive, log_likelihood

    from il2pkpd.inference._posthoc import posthoc_datasets, repair_numpyro_submodules

    obs = pm.observed
    site_dims = pm.iiv_site_dims()  # z / phi -> (IIV dimension, its parameter names)
    samples = {k: v for k, v in samples.items() if keep_site(k)}
    n_chain, n_draw = next(iter(samples.values())).shape[:2]
    flat = {k: jnp.reshape(v, (n_chain * n_draw, *v.shape[2:])) for k, v in samples.items()}
    ppc = None
    if posterior_predictive:
        pred = Predictive(pm, posterior_samples=flat, return_sites=["DV"], batch_ndims=1)
        ppc = np.asarray(pred(jax.random.PRNGKey(seed + 12345))["DV"]).reshape(
            n_chain, n_draw, -1)
    if mcmc is not None:
        repair_numpyro_submodules()  # arviz's lazy numpyro import can lose them
        # arviz-base compares the tree depths with the kernel's max_tree_depth, which
        # NumPyro allows to be a pair (warm-up, sampling) and arviz does not: the sampling
        # depth is shown to it for the conversion
        kernel = mcmc.sampler
        depth = getattr(kernel, "_max_tree_depth", None)
        try:
            if isinstance(depth, tuple):
                kernel._max_tree_depth = depth[-1]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dt = az.from_numpyro(mcmc, log_likelihood=True,
                                     posterior_predictive=None if ppc is None else {"DV": ppc})
        finally:
            if isinstance(depth, tuple):
                kernel._max_tree_depth = depth
    else:
        ll = np.asarray(log_likelihood(pm, flat, obs=obs, batch_ndims=1)["DV"]).reshape(
            n_chain, n_draw, -1)
        dims = {"DV": ["obs"], **{k: ["subject", d] for k, (d, _) in site_dims.items()}}
        for k in samples:
            if k.startswith("ind_"):
                dims[k] = ["subject"]
        for p in pm.spec.partial_weights:  # partially centred coordinates z_<P>
            dims[f"z_{p}"] = ["subject"]
        groups = {"posterior": {k: np.asarray(v) for k, v in samples.items()},
                  "log_likelihood": {"DV": ll},
                  "observed_data": {"DV": np.asarray(obs)}}
        if ppc is not None:
            groups["posterior_predictive"] = {"DV": ppc}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dt = az.from_dict(groups, dims=dims)
    # label subjects by ID and IIV by parameter; add constant data
    ids = np.asarray(pm.ids)
    for group in list(dt.children):
        ds = dt[group].to_dataset()
        drop = [v for v in ds.data_vars if not keep_site(str(v))]
        changed = bool(drop)
        if drop:
            ds = ds.drop_vars(drop)
            ds = ds.drop_dims([d for d in ds.dims if d not in ("chain", "draw")
                               and not any(d in ds[v].dims for v in ds.data_vars)])
        if "subject" in ds.dims:
            ds = ds.assign_coords(subject=ids)
            changed = True
        for site, (dim, labels) in site_dims.items():
            if site not in ds.data_vars:
                continue
            d = next((d for d in ds[site].dims if d not in ("chain", "draw", "subject")), None)
            if d is not None and ds.sizes[d] == len(labels):
                if d != dim:
                    ds = ds.rename({d: dim})
                ds = ds.assign_coords({dim: list(labels)})
                changed = True
        if "obs" in ds.dims and "obs" not in ds.coords:
            ds = ds.assign_coords(obs=np.arange(ds.sizes["obs"]))
            changed = True
        if changed:
            dt[group] = xr.DataTree(ds)
    extra = posthoc_datasets(pm, samples, seed=seed, pred_max_draws=pred_max_draws,
                             n_prior=n_prior)
    if "predictions" in extra and not extra["predictions"].attrs.pop("thinned"):
        # computed on every draw: pred/ipred belong in the posterior
        extra["eta"] = xr.merge([extra.pop("predictions"), extra.get("eta", xr.Dataset())])
    if "eta" in extra:
        dt["posterior"] = xr.DataTree(xr.merge([dt["posterior"].to_dataset(), extra.pop("eta")],
                                               combine_attrs="override"))
    for name, ds in extra.items():  # predictions (thinned), prior, prior_predictive
        dt[name] = xr.DataTree(ds)
    dt["constant_data"] = xr.DataTree(_constant_data(pm))
    dt.attrs.update({k: (v if isinstance(v, str | int | float) else str(v))
                     for k, v in (attrs or {}).items()})
    return dt


#: Eta-shrinkage below which :func:`suggest_parametrization` centres a parameter.
SHRINKAGE_CENTRED = 0.3


def eta_shrinkage(post: xr.Dataset, spec: PopulationSpec) -> dict[str, float]:
    """Eta-shrinkage of each IIV parameter, ``1 - sd_i(posterior mean of eta_i) / omega``.

    Parameters
    ----------
    post : xarray.Dataset
        Posterior with ``eta_<P>`` (chain, draw, subject) and ``omega_<P>``.
    spec : PopulationSpec

    Returns
    -------
    dict
        Parameter -> shrinkage (fraction; near 0: the data determine each subject's value,
        near 1: they say little), for the IIV parameters whose draws are present.
    """
    from il2pkpd.report.shrinkage import eta_shrinkage_value

    out = {}
    for p in spec.iiv:
        if f"eta_{p}" not in post or f"omega_{p}" not in post:
            continue
        _, _, shrink = eta_shrinkage_value(post[f"eta_{p}"].values, post[f"omega_{p}"].values)
        if np.isfinite(shrink):
            out[p] = shrink
    return out


def suggest_parametrization(shrinkage: Mapping[str, float], spec: PopulationSpec):
    """The ``parametrization`` value suggested by eta-shrinkage: IIV parameters with shrinkage
    below :data:`SHRINKAGE_CENTRED` centred, the others non-centred.

    Returns
    -------
    str or dict
        ``"centred"``, ``"noncentred"`` or ``{"centred": [...]}`` (model order).
    """
    centred = [p for p in spec.iiv if shrinkage.get(p, 1.0) < SHRINKAGE_CENTRED]
    if len(centred) == len(spec.iiv):
        return "centred"
    return {"centred": centred} if centred else "noncentred"


def suggest_partial(shrinkage: Mapping[str, float], spec: PopulationSpec) -> dict[str, float]:
    """Partial-centring weights ``(1 - s)^2`` (rounded to 0.01) from eta-shrinkage s, in
    model order: the ``partial`` table of ``parametrization`` (see
    :func:`il2pkpd.inference.samplers.centring_weights`, which computes them from draws)."""
    from il2pkpd.report.shrinkage import centring_weight

    return {p: round(centring_weight(shrinkage[p]), 2) for p in spec.iiv if p in shrinkage}


def _toml(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return "{ " + ", ".join(f"{k} = [" + ", ".join(f'"{p}"' for p in v) + "]"
                            for k, v in value.items()) + " }"


def fit(model, data, method: str = "nuts", *, chains: int = 4, warmup: int = 500,
        samples: int = 1000, seed: int = 0, target_accept: float = 0.8,
        max_tree_depth: int | tuple[int, int] = 10,
        dense_mass: str | bool = "auto", init: str = "median",
        adapt_mass_matrix: bool | None = None, pooled_metric: bool = False,
        stage1_parametrization=None, adaptive_centring: bool | str = False, thin: int = 1,
        shared_step_size: bool = False, chain_method: str | None = None,
        priors: Mapping[str, Any] | None = None,
        fix: Mapping[str, float] | None = None, population: Mapping | None = None,
        residual: Mapping | None = None, covariates: Mapping | Sequence | None = None,
        solver_options: Mapping | None = None, draws: int = 1000, svi_steps: int = 3000,
        shard: bool = False,
        progress_bar: bool | str | None = None, posterior_predictive: bool = True,
        pred_draws: int | None = 200, prior_draws: int = 300, cli: bool = False) -> FitResult:
    """Fit a population model to a dataset.

    Parameters
    ----------
    model : il2pkpd.models.Model or str
        A model, a bundled model name (``"two_cmt_iv"``) or a model file path.
    data : il2pkpd.data.Dataset, str or DataFrame
        The dataset or a CSV path.
    method : {"nuts", "map", "focei", "laplace", "svi"}
        NUTS sampling; MAP (L-BFGS on the joint posterior density in the unconstrained,
        non-centred parametrisation, one draw: a starting point, its IIV SDs are biased upward);
        FOCE-I-type estimation (the mode of the marginal posterior with the random effects
        integrated out by Laplace's method with a first-order curvature and interaction, as
        NONMEM's FOCE-I, and ``draws`` draws of the Gaussian approximation there: the fast
        method that estimates IIV SDs properly; see :mod:`il2pkpd.inference._focei`);
        Laplace approximation (Gaussian at that mode with the inverse Hessian, ``draws`` draws;
        same caveat); SVI with a full-rank Gaussian guide (``svi_steps`` Adam steps, ``draws``
        draws: the recommended fast approximation, intervals somewhat too narrow).
    chains, warmup, samples : int
        NUTS chains, warm-up iterations and draws per chain.
    seed : int
        Random seed.
    target_accept : float
        NUTS target acceptance probability.
    max_tree_depth : int or (int, int)
        NUTS maximum tree depth, or a pair (warm-up, sampling): a smaller sampling depth
        caps the leapfrog steps per draw (2**depth - 1) where the U-turn comes just past a
        doubling (see benchmarks/bench_fit_friberg.py).
    dense_mass : {"auto", "full", "population", "diagonal"}
        NUTS mass matrix (see :func:`il2pkpd.inference.samplers.run_nuts`).
    init : {"median", "map", "laplace"}
        NUTS initial values: prior medians, the MAP estimate, or the Laplace start (the
        non-centred joint mode in the sampled parametrization, with a metric from the
        Hessian there: see :func:`il2pkpd.inference.samplers.laplace_start`).
    adapt_mass_matrix : bool, optional
        Adapt the NUTS mass matrix in warm-up (default: yes, except that a full dense Laplace
        metric is kept; see :func:`il2pkpd.inference.samplers.run_nuts`).
    pooled_metric : bool
        Cross-chain warm-up: after the first half of warm-up, a metric from all chains'
        draws pooled replaces the per-chain one (see
        :func:`il2pkpd.inference.samplers.run_nuts`).
    stage1_parametrization : str or mapping, optional
        With *pooled_metric*: the IIV parametrization (as the population table's
        ``parametrization``) the first half of warm-up runs in, its draws then carried
        exactly to the model's own, e.g. ``"centred"`` for a partially centred model (see
        *stage1_model* of :func:`il2pkpd.inference.samplers.run_nuts`).
    adaptive_centring : bool or {"parameter", "subject"}
        With *pooled_metric*: after the first half of warm-up, every IIV parameter is
        partially centred with the weight ``(1 - s)^2`` from its eta-shrinkage s in the
        draws so far (True, ``"parameter"``), or with one weight per subject, ``1 - v_i /
        omega^2`` from subject i's eta variance v_i (``"subject"``), for the rest of warm-up
        and the kept draws (``info["parametrization"]`` and
        ``info["pooled_metric"]["centring_weights"]``; see
        :func:`il2pkpd.inference.samplers.centring_weights`).
    thin : int
        NUTS transitions per kept draw after warm-up (*samples* draws kept per chain from
        ``samples * thin`` iterations; divergences counted over all of them, other sampler
        statistics those of the kept transitions).
    shared_step_size : bool
        With *pooled_metric*: after warm-up all chains sample with one step size, the median
        of those they adapted (see :func:`il2pkpd.inference.samplers.run_nuts`).
    chain_method : str, optional
        ``parallel``, ``sequential`` or ``vectorized`` (automatic when None).
    priors, fix, population, residual, covariates :
        Overrides of the model file's population specification
        (see :func:`il2pkpd.inference.spec.build_spec`).
    solver_options : mapping, optional
        Passed to :func:`il2pkpd.engine.make_predict_fn` (ODE tolerances, ...).
    draws : int
        Draws of the Laplace and SVI approximations.
    svi_steps : int
        Optimisation steps of SVI.
    shard : bool
        Split subjects over all JAX devices (XLA SPMD).
    progress_bar : bool or "log", optional
        Progress on stderr: NUTS and SVI progress bars (default: when stderr is a terminal),
        or ``"log"``: plain lines for logs (NUTS about 20 over the run, see
        :class:`~il2pkpd.inference.samplers.ProgressLog`; FOCE-I one per round; SVI none).
        FOCE-I writes its lines whenever this is true or ``"log"``.
    posterior_predictive : bool
        Simulate replicated data for every draw.
    pred_draws : int or None
        Draws (at most) on which the post hoc ``pred``/``ipred`` are computed (None: all).
    prior_draws : int
        Draws of the ``prior`` and ``prior_predictive`` groups (0: none).
    cli : bool
        Report bad overrides as :class:`~il2pkpd.errors.OptionError`.

    Returns
    -------
    FitResult
    """
    if method not in METHODS:
        raise OptionError(f"method '{method}' is not allowed; use one of {', '.join(METHODS)}.")
    t0 = time.perf_counter()
    pm, model_obj, dataset, _ = prepare(model, data, priors=priors, fix=fix, population=population,
                                        residual=residual, covariates=covariates,
                                        solver_options=solver_options, shard=shard, cli=cli)
    if stage1_parametrization is not None:      # bad values named as the caller gave them
        reparametrized(pm, stage1_parametrization,
                       "--stage1-parametrization" if cli else "stage1_parametrization")
    result = fit_population_model(
        pm, method, model_name=getattr(model_obj, "name", "?"),
        data_label=str(getattr(dataset, "source", "")),
        is_ode=not getattr(model_obj, "is_closed_form", True), chains=chains, warmup=warmup,
        samples=samples, seed=seed, target_accept=target_accept, max_tree_depth=max_tree_depth,
        dense_mass=dense_mass, init=init, adapt_mass_matrix=adapt_mass_matrix,
        pooled_metric=pooled_metric, stage1_parametrization=stage1_parametrization,
        adaptive_centring=adaptive_centring, thin=thin, shared_step_size=shared_step_size,
        chain_method=chain_method, draws=draws, svi_steps=svi_steps, progress_bar=progress_bar,
        posterior_predictive=posterior_predictive, t0=t0, pred_draws=pred_draws,
        prior_draws=prior_draws)
    if getattr(model_obj, "path", None) is not None:
        result.info["model_path"] = str(model_obj.path)    # lets the report find units
    return result


def fit_population_model(pm: PopulationModel, method: str = "nuts", *, model_name: str = "?",
                         data_label: str = "", is_ode: bool = False, chains: int = 4,
                         warmup: int = 500, samples: int = 1000, seed: int = 0,
                         target_accept: float = 0.8,
                         max_tree_depth: int | tuple[int, int] = 10,
                         dense_mass: str | bool = "auto", init: str = "median",
                         adapt_mass_matrix: bool | None = None, laplace=None,
                         pooled_metric: bool = False, stage1_parametrization=None,
                         adaptive_centring: bool | str = False, thin: int = 1,
                         shared_step_size: bool = False, chain_method: str | None = None,
                         draws: int = 1000,
                         svi_steps: int = 3000, progress_bar: bool | str | None = None,
                         posterior_predictive: bool = True, t0: float | None = None,
                         pred_draws: int | None = 200, prior_draws: int = 300) -> FitResult:
    """Run inference on a built :class:`PopulationModel` (see :func:`fit` for the options;
    *laplace*: a :class:`~il2pkpd.inference.samplers.LaplaceStart` already computed for
    ``init="laplace"``, for the stage-1 parametrization when one is given)."""
    if method not in METHODS:
        raise OptionError(f"method '{method}' is not allowed; use one of {', '.join(METHODS)}.")
    if method != "nuts":        # NUTS-only options are not silently ignored
        bad = [f"{name}={value!r}" for name, value, default in (
            ("thin", thin, 1), ("pooled_metric", pooled_metric, False),
            ("stage1_parametrization", stage1_parametrization, None),
            ("adaptive_centring", adaptive_centring, False),
            ("shared_step_size", shared_step_size, False)) if value != default]
        if bad:
            raise OptionError(f"{', '.join(bad)} apply to method 'nuts' only, not '{method}'.")
    progress_bar = progress_mode(progress_bar)
    t0 = time.perf_counter() if t0 is None else t0
    obs = pm.observed
    info: dict = {"model": model_name, "data": data_label, "method": method, "seed": seed,
                  "n_subjects": pm.n_subjects, "n_obs": len(pm.obs.dv),
                  "n_blq": int(pm.obs.blq.sum()), "spec": pm.spec.describe()}
    mcmc = None
    if method == "nuts":
        pm1 = (None if stage1_parametrization is None else
               reparametrized(pm, stage1_parametrization, "stage1_parametrization"))
        mres = run_map(pm1 or pm, obs, seed=seed) if init == "map" else None
        mcmc, ninfo = run_nuts(pm, obs, chains=chains, warmup=warmup, samples=samples,
                               target_accept=target_accept, max_tree_depth=max_tree_depth,
                               seed=seed, dense_mass=dense_mass, init=init,
                               chain_method=chain_method, progress_bar=progress_bar,
                               is_ode=is_ode, map_result=mres,
                               adapt_mass_matrix=adapt_mass_matrix, laplace=laplace,
                               pooled_metric=pooled_metric, stage1_model=pm1,
                               adaptive_centring=adaptive_centring, thin=thin,
                               shared_step_size=shared_step_size)
        if ninfo["parametrization"] != pm.spec.parametrization_value():
            # adaptive centring: the draws are those of the parametrization it chose
            pm = reparametrized(pm, ninfo["parametrization"])
            info["spec"] = pm.spec.describe()
        info.update(ninfo)
        info.update({"chains": chains, "warmup": warmup, "samples": samples,
                     "target_accept": target_accept, "max_tree_depth": tree_depths(max_tree_depth),
                     "dense_mass": str(dense_mass), "init": init})
        draws_by_chain = mcmc.get_samples(group_by_chain=True)
        div = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
        info["divergences"] = int(div.sum())
        info["divergences_per_chain"] = [int(d) for d in div.sum(axis=1)]
    elif method == "map":
        mres = run_map(pm, obs, seed=seed)
        draws_by_chain = {k: jnp.asarray(v)[None, None] for k, v in mres.constrained.items()}
        info.update({"seconds": mres.seconds, "iterations": mres.iterations,
                     "converged": mres.converged, "grad_norm": mres.grad_norm,
                     "log_density": -mres.potential, "divergences": 0})
    elif method == "svi":
        smp, sinfo = run_svi(pm, obs, seed=seed, draws=draws, steps=svi_steps,
                             progress_bar=progress_bar is True)
        draws_by_chain = {k: jnp.asarray(v)[None] for k, v in smp.items()}
        info.update(sinfo)
        info.update({"draws": draws, "divergences": 0})
    elif method == "focei":
        import sys

        from il2pkpd.inference._focei import run_focei

        def log(msg):
            print(msg, file=sys.stderr, flush=True)

        smp, pm, lres = run_focei(pm, obs, seed=seed, draws=draws,
                                  log=log if progress_bar else None)
        draws_by_chain = {k: jnp.asarray(v)[None] for k, v in smp.items()}
        info.update({"seconds": lres.seconds, "rounds": lres.rounds,
                     "iterations": lres.iterations, "converged": lres.converged,
                     "status": lres.status,
                     "grad_norm": lres.grad_norm, "gradient_evaluations": lres.gradients,
                     "objective": (lres.objective if np.isfinite(lres.objective) else None),
                     "draws": draws, "divergences": 0,
                     "parametrization": "centred",
                     "hessian": {"min_eigenvalue": lres.min_eigenvalue,
                                 "clipped": lres.clipped}})
    else:
        smp, mres, linfo = run_laplace(pm, obs, seed=seed, draws=draws)
        draws_by_chain = {k: jnp.asarray(v)[None] for k, v in smp.items()}
        info.update({"seconds": mres.seconds, "map_iterations": mres.iterations,
                     "map_converged": mres.converged, "draws": draws, "divergences": 0,
                     "hessian": linfo})
    dt = to_datatree(pm, draws_by_chain, mcmc=mcmc, seed=seed,
                     posterior_predictive=posterior_predictive, pred_max_draws=pred_draws,
                     n_prior=prior_draws,
                     attrs={"il2pkpd_method": method, "il2pkpd_model": info["model"],
                            "il2pkpd_data": info["data"], "il2pkpd_spec": info["spec"]})
    post = dt["posterior"].to_dataset()
    summary = summary_table(post, pm.spec.population_names())
    constant = {p.name: float(np.median(post[p.name].values)) if p.name in post
                else float(pm.spec.priors[p.name].args[0])
                for p in pm.spec.parameters if p.name not in pm.varying}
    individual = individual_table(post, pm.ids, pm.varying, constant)
    n_draws = int(post.sizes["chain"] * post.sizes["draw"])
    msgs = diagnostics_warnings(summary, info.get("divergences", 0), n_draws, method)
    if method == "nuts":
        steps = (np.asarray(dt["sample_stats"]["n_steps"]).mean(axis=1).tolist()
                 if "n_steps" in dt["sample_stats"] else None)
        adapted, shared = chain_step_sizes(info)
        msgs += chain_warnings(post, summary, adapted, steps, shared_step_size=(
            None if shared is None else np.ravel(shared)[0]))
    if method == "map" and not info.get("converged", True):
        msgs.append(f"MAP optimisation stopped before convergence (gradient norm "
                    f"{info['grad_norm']:.2g} after {info['iterations']} iterations).")
    if method == "focei" and not info.get("converged", True):
        msgs.append(f"FOCE-I did not converge: {info['status']} ({info['rounds']} rounds, "
                    f"{info['iterations']} L-BFGS iterations, gradient norm "
                    f"{info['grad_norm']:.2g}); check the estimates or run NUTS.")
    if method == "focei" and info["hessian"]["clipped"]:
        msgs.append(f"the Hessian at the FOCE-I mode had {info['hessian']['clipped']} "
                    "non-positive eigenvalue(s), floored: some parameters are not identified "
                    "by the data (their intervals are unreliable).")
    if pm.spec.iiv and method in ("nuts", "focei", "svi", "laplace"):
        shrink = eta_shrinkage(post, pm.spec)
        if shrink:
            info["eta_shrinkage"] = shrink
            suggestion = suggest_parametrization(shrink, pm.spec)
            info["suggested_parametrization"] = suggestion
            info["suggested_partial"] = suggest_partial(shrink, pm.spec)
            slow = any("R-hat" in m or "effective sample size" in m for m in msgs)
            if method == "nuts" and slow and suggestion != pm.spec.parametrization_value():
                msgs.append(
                    "the IIV parametrization may slow the sampler: eta-shrinkage "
                    + ", ".join(f"{p} {100 * v:.0f}%" for p, v in shrink.items())
                    + f"; try [population] parametrization = {_toml(suggestion)} (centred "
                    f"where shrinkage is below {100 * SHRINKAGE_CENTRED:.0f}%), or partial "
                    "centring with weights (1 - shrinkage)^2 (fit.json: suggested_partial), "
                    "which --pooled-metric --adaptive-centring chooses within the run.")
    info["total_seconds"] = time.perf_counter() - t0
    return FitResult(datatree=dt, summary=summary, individual=individual, method=method,
                     info=info, warnings=msgs)
