"""NUTS started from a Laplace approximation (``init="laplace"``).

References: the non-centred model's own individual parameters and correlations (the mapped
point must reproduce them in any parametrization), JAX's exact Hessian of the potential (the
metric is built from central differences of the gradient), :func:`run_map`'s mode, and
recovery of the simulated typical values.
"""

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.infer import init_to_median
from numpyro.infer.util import initialize_model
from test_inference_fit import TRUE, simulate
from test_inference_mixed_centring import POP4, _pm, _random_point, _values
from test_inference_model import COVARIATES, make_df

from il2pkpd.errors import OptionError
from il2pkpd.inference import fit_population_model, prepare
from il2pkpd.inference.samplers import (
    laplace_start,
    noncentred_twin,
    run_map,
    sites_from_noncentred,
)

CASES = [
    (POP4, "centred", {}),
    (POP4, {"centred": ["V1", "V2"]}, {}),
    (POP4, "noncentred", {}),
    ({"blocks": [["CL", "Q"]]}, {"noncentred": ["CL", "V2"]},
     {"covariates": {"cl_wt": COVARIATES["cl_wt"]}}),
    (POP4, {"centred": ["CL"], "partial": {"Q": 0.5}}, {}),
    (POP4, {"partial": {"CL": 0.3, "V2": 0.8}}, {}),
    ({"blocks": [["CL", "Q"]]}, {"centred": ["V1"], "partial": {"CL": 0.25}},
     {"covariates": {"cl_wt": COVARIATES["cl_wt"]}}),
]


@pytest.mark.parametrize("population,parametrization,kw", CASES)
def test_mapped_point_has_the_same_individual_parameters(population, parametrization, kw):
    pm = _pm(parametrization, population, **kw)
    nc = noncentred_twin(pm)
    assert nc.spec.parametrization == "noncentred"
    for seed in range(2):
        vals_nc = _values(nc, _random_point(nc, seed))
        mapped = sites_from_noncentred(pm, vals_nc)
        assert set(mapped) == set(_random_point(pm, 0))
        assert_same_iiv(pm, _values(pm, mapped), vals_nc)


def assert_same_iiv(pm, got, ref):
    """The same individual parameters, IIV SDs and correlations in two sets of site values."""
    for p in pm.spec.iiv:
        np.testing.assert_allclose(got[f"ind_{p}"], ref[f"ind_{p}"], rtol=1e-9)
        np.testing.assert_allclose(got[f"omega_{p}"], ref[f"omega_{p}"], rtol=1e-12)
    for a, b in pm.spec.correlations:
        np.testing.assert_allclose(got[f"corr_{a}_{b}"], ref[f"corr_{a}_{b}"],
                                   rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def centred_pm():
    pm, *_ = prepare("one_cmt_iv", make_df(n=24), residual={"CP": "lognormal"},
                     population={"parametrization": "centred"})
    return simulate(pm, TRUE, seed=11)


def test_metric_is_the_floored_inverse_of_the_exact_hessian(centred_pm):
    pm = centred_pm
    lap = laplace_start(pm, pm.observed, seed=0, hessian_floor=0.5, metric="hessian")
    info = initialize_model(jax.random.PRNGKey(0), pm, model_kwargs={"obs": pm.observed},
                            init_strategy=init_to_median(num_samples=15))
    x, unravel = ravel_pytree(lap.unconstrained)
    hess = np.asarray(jax.hessian(lambda v: info.potential_fn(unravel(v)))(x))
    w, v = np.linalg.eigh(0.5 * (hess + hess.T))
    ref = (v / np.maximum(w, 0.5)) @ v.T
    assert lap.inverse_mass_matrix.shape == (x.size, x.size)
    np.testing.assert_allclose(lap.inverse_mass_matrix, ref, rtol=1e-4, atol=1e-6)
    assert lap.info["eigenvalues_floored"] == int(np.sum(w < 0.5))
    assert lap.info["metric"] == "laplace (hessian)" and lap.info["map_converged"]


def test_mapped_metric_is_the_noncentred_laplace_covariance_carried_by_the_jacobian(
        centred_pm):
    """Reference: the exact Hessian of the non-centred potential at its mode and the Jacobian
    of the map written out by hand for log-normal IIV: phi = log TV + omega z, every other
    unconstrained coordinate unchanged (finite differences of that hand map)."""
    pm = centred_pm
    nc = noncentred_twin(pm)
    mres = run_map(nc, nc.observed, seed=0)
    lap = laplace_start(pm, pm.observed, map_result=mres, metric="mapped")
    info = initialize_model(jax.random.PRNGKey(0), nc, model_kwargs={"obs": nc.observed},
                            init_strategy=init_to_median(num_samples=15))
    x_nc, unravel_nc = ravel_pytree(mres.unconstrained)
    hess = np.asarray(jax.hessian(lambda v: info.potential_fn(unravel_nc(v)))(x_nc))
    assert np.linalg.eigvalsh(hess).min() > 0.5          # a proper mode: nothing floored
    iiv = pm.spec.iiv

    def hand_map(v):
        u = unravel_nc(v)
        out = {k: u[k] for k in u if k != "z"}
        out["phi"] = np.stack([u[p] + np.exp(u[f"omega_{p}"]) * u["z"][:, j]
                               for j, p in enumerate(iiv)], axis=1)
        return np.asarray(ravel_pytree(out)[0])

    x_s = np.asarray(ravel_pytree(lap.unconstrained)[0])
    np.testing.assert_allclose(hand_map(x_nc), x_s, rtol=1e-10, atol=1e-12)
    n, h = x_nc.size, 1e-6
    jac = np.stack([(hand_map(x_nc + h * np.eye(n)[i]) - hand_map(x_nc - h * np.eye(n)[i]))
                    / (2 * h) for i in range(n)], axis=1)
    ref = jac @ np.linalg.inv(hess) @ jac.T
    np.testing.assert_allclose(lap.inverse_mass_matrix, ref, rtol=1e-4,
                               atol=1e-5 * np.abs(ref).max())
    assert lap.info["eigenvalues_floored"] == 0


def test_noncentred_start_is_the_map_mode(centred_pm):
    nc = noncentred_twin(centred_pm)
    mres = run_map(nc, nc.observed, seed=0)
    lap = laplace_start(nc, nc.observed, seed=0, map_result=mres)
    for k, v in mres.unconstrained.items():
        np.testing.assert_allclose(lap.unconstrained[k], v, rtol=1e-8, atol=1e-10)
    small = laplace_start(nc, nc.observed, map_result=mres, max_dim=3)
    assert small.inverse_mass_matrix is None and small.info["metric"].startswith("adapted")
    with pytest.raises(OptionError, match="hessian_floor"):
        laplace_start(nc, nc.observed, map_result=mres, hessian_floor=0.0)


@pytest.mark.parametrize("adapt", [None, True])
def test_nuts_from_laplace_start_recovers_typical_values(centred_pm, adapt):
    res = fit_population_model(centred_pm, "nuts", chains=1, warmup=100, samples=200, seed=2,
                               init="laplace", adapt_mass_matrix=adapt, progress_bar=False,
                               posterior_predictive=False, prior_draws=0)
    assert res.info["metric"] == "laplace" and res.info["laplace"]["metric"] == "laplace (hessian)"
    assert res.info["adapt_mass_matrix"] is bool(adapt)
    assert res.info["laplace"]["map_converged"] and res.info["map_seconds"] > 0
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name


def test_bad_init_is_an_option_error(centred_pm):
    with pytest.raises(OptionError, match="laplace"):
        fit_population_model(centred_pm, "nuts", chains=1, warmup=5, samples=5, init="mode")


def test_structured_metric_is_the_laplace_covariance_cut_to_numpyro_blocks():
    """Reference: each site's positions in the flat vector from JAX's own ravel_pytree (sites
    of several shapes); a dense block in its tuple's order, which differs from sorted order;
    the remaining sites one diagonal block in sorted order."""
    from il2pkpd.inference.samplers import LaplaceStart, _laplace_blocks

    unc = {"b": np.zeros(()), "a": np.zeros((2, 3)), "d": np.zeros(4), "c": np.zeros(())}
    flat, unravel = ravel_pytree(unc)
    n = flat.size
    pos = {k: np.asarray(v).ravel().astype(int)
           for k, v in unravel(np.arange(n, dtype=float)).items()}
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, n))
    cov = a @ a.T + n * np.eye(n)
    lap = LaplaceStart(unconstrained=unc, inverse_mass_matrix=cov, info={})
    block = ("d", "b")
    out = _laplace_blocks(lap, [block])
    ii = np.concatenate([pos["d"], pos["b"]])
    np.testing.assert_array_equal(np.asarray(out[block]), cov[np.ix_(ii, ii)])
    assert set(out) == {block, ("a", "c")}
    jj = np.concatenate([pos["a"], pos["c"]])
    np.testing.assert_array_equal(np.asarray(out[("a", "c")]), np.diag(cov)[jj])
    np.testing.assert_array_equal(np.asarray(_laplace_blocks(lap, False)), np.diag(cov))
    full = _laplace_blocks(lap, True)
    assert list(full) == [("a", "b", "c", "d")]
    np.testing.assert_array_equal(np.asarray(full[("a", "b", "c", "d")]), cov)


def test_numpyro_starts_from_the_structured_laplace_metric(centred_pm):
    """Fewer than 20 warm-up iterations: NumPyro adapts only the step size, so the metric it
    ends with is the one it was given."""
    from il2pkpd.inference.samplers import _dense_arg, _laplace_blocks, run_nuts

    pm = centred_pm
    lap = laplace_start(pm, pm.observed, seed=0)
    mcmc, info = run_nuts(pm, pm.observed, chains=1, warmup=10, samples=5, seed=0,
                          dense_mass="population", init="laplace", laplace=lap,
                          progress_bar=False)
    assert info["mass_matrix"] == "blocks" and info["adapt_mass_matrix"] is True
    want = _laplace_blocks(lap, _dense_arg(pm, "population"))
    got = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-12)


@pytest.mark.parametrize("dense_mass", ["population", "diagonal"])
def test_structured_laplace_metric_starts_the_adaptation(centred_pm, dense_mass):
    res = fit_population_model(centred_pm, "nuts", chains=1, warmup=100, samples=200, seed=3,
                               init="laplace", dense_mass=dense_mass, progress_bar=False,
                               posterior_predictive=False, prior_draws=0)
    assert res.info["metric"] == "laplace" and res.info["adapt_mass_matrix"] is True
    assert res.info["mass_matrix"] == ("blocks" if dense_mass == "population" else "diagonal")
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name


def test_nuts_from_laplace_start_with_partial_centring_recovers_typical_values(centred_pm):
    import dataclasses

    pm, *_ = prepare("one_cmt_iv", make_df(n=24), residual={"CP": "lognormal"},
                     population={"parametrization": {"centred": ["CL"], "partial": {"V": 0.4}}})
    pm = dataclasses.replace(pm, obs=centred_pm.obs)        # the same simulated data
    res = fit_population_model(pm, "nuts", chains=1, warmup=100, samples=200, seed=3,
                               init="laplace", progress_bar=False, posterior_predictive=False,
                               prior_draws=0)
    assert res.info["init"] == "laplace" and res.info["laplace"]["map_converged"]
    assert "z_V" in res.datatree["posterior"]
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name
