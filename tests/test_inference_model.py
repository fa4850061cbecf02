"""The NumPyro population model on the real engine: gradients, jit, extremes, covariates, IIV."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree
from jax.test_util import check_grads
from numpyro import handlers
from numpyro.infer import Predictive, init_to_median
from numpyro.infer.util import initialize_model, log_density, potential_energy

from il2pkpd.errors import DatasetError
from il2pkpd.inference import prepare

TIMES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)


def make_df(n=12, times=TIMES, lloq=0.05, dose=100.0, seed=1):
    """One IV bolus per subject (100 mg into CMT 1), WT and SEX covariates, DV placeholders.

    The last observation of every third subject is flagged BLQ (DV = LLOQ / 2)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        wt = float(np.round(rng.uniform(45, 110), 1))
        sex = i % 2
        rows.append(dict(ID=i, TIME=0.0, AMT=dose, EVID=1, CMT=1, DV=np.nan, MDV=1, WT=wt,
                         SEX=sex, LLOQ=lloq, BLQ=0))
        for j, t in enumerate(times):
            blq = int(i % 3 == 0 and j == len(times) - 1)
            rows.append(dict(ID=i, TIME=t, AMT=0.0, EVID=0, CMT=1,
                             DV=lloq / 2 if blq else 1.0, MDV=0, WT=wt, SEX=sex, LLOQ=lloq,
                             BLQ=blq))
    return pd.DataFrame(rows)


COVARIATES = {
    "cl_wt": {"parameter": "CL", "covariate": "WT", "model": "power", "reference": 70.0,
              "prior": {"dist": "normal", "loc": 0.75, "scale": 0.2}},
    "v_wt": {"parameter": "V", "covariate": "WT", "model": "linear", "reference": 70.0,
             "prior": {"dist": "normal", "loc": 0.0, "scale": 0.01}},
    "v_sex": {"parameter": "V", "covariate": "SEX", "model": "categorical", "levels": [1]},
    "cl_sex": {"parameter": "CL", "covariate": "SEX", "model": "exponential", "reference": 0.0},
}


@pytest.fixture(scope="module")
def full_pm():
    """one_cmt_iv, block IIV, all four covariate kinds, combined error, BLQ rows."""
    pm, *_ = prepare("one_cmt_iv", make_df(), population={"covariance": "block"},
                     residual={"CP": "combined"}, covariates=COVARIATES)
    return pm


def potential(pm):
    info = initialize_model(jax.random.PRNGKey(0), pm, model_kwargs={"obs": pm.observed},
                            init_strategy=init_to_median(num_samples=15))
    x0, unravel = ravel_pytree(info.param_info.z)
    return (lambda x: info.potential_fn(unravel(x))), x0


def test_model_has_blq_rows_and_all_sites(full_pm):
    assert full_pm.obs.blq.sum() == 4
    tr = handlers.trace(handlers.seed(full_pm, 0)).get_trace(obs=full_pm.observed)
    for site in ("CL", "V", "omega_CL", "omega_V", "L_omega_1", "corr_CL_V", "beta_CL_WT",
                 "beta_V_WT", "beta_V_SEX_1", "beta_CL_SEX", "sigma_add_CP", "sigma_prop_CP",
                 "z", "DV"):
        assert site in tr, site
    assert tr["z"]["cond_indep_stack"][0].name == "subject"
    assert tr["DV"]["cond_indep_stack"][0].name == "obs"
    assert tr["DV"]["value"].shape == (len(TIMES) * 12,)


def test_gradient_matches_finite_differences_with_blq_and_covariates(full_pm):
    f, x0 = potential(full_pm)
    x = x0 + 0.01 * jax.random.normal(jax.random.PRNGKey(3), x0.shape)
    assert np.isfinite(f(x))
    check_grads(f, (x,), order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)
    # the BLQ rows contribute to the gradient: dropping them changes it
    no_blq = full_pm.with_observed(full_pm.observed)
    import dataclasses
    no_blq = dataclasses.replace(no_blq, obs=dataclasses.replace(
        no_blq.obs, blq=np.zeros_like(no_blq.obs.blq)))
    g_blq = jax.grad(f)(x)
    g_no, _ = potential(no_blq)
    assert not np.allclose(g_blq, jax.grad(g_no)(x))


def test_jit_equals_eager(full_pm):
    f, x0 = potential(full_pm)
    x = x0 + 0.1
    np.testing.assert_allclose(jax.jit(f)(x), f(x), rtol=1e-12)
    params = {"CL": 3.0, "V": 60.0, "omega_CL": 0.3, "omega_V": 0.2,
              "L_omega_1": jnp.array([[1.0, 0.0], [0.3, np.sqrt(0.91)]]), "beta_CL_WT": 0.7,
              "beta_V_WT": 0.005, "beta_V_SEX_1": 0.1, "beta_CL_SEX": -0.2,
              "sigma_add_CP": 0.02, "sigma_prop_CP": 0.1, "z": jnp.full((12, 2), 0.3)}

    def ld(p):
        return log_density(full_pm, (), {"obs": full_pm.observed}, p)[0]

    np.testing.assert_allclose(jax.jit(ld)(params), ld(params), rtol=1e-12)


@pytest.mark.parametrize("cl,v,omega,z", [(1e-6, 1e-3, 1e-6, 0.0), (1e4, 1e6, 3.0, 4.0),
                                          (4.0, 70.0, 5.0, -6.0)])
def test_no_nan_at_extreme_valid_values(full_pm, cl, v, omega, z):
    params = {"CL": cl, "V": v, "omega_CL": omega, "omega_V": omega,
              "L_omega_1": jnp.eye(2), "beta_CL_WT": 0.75, "beta_V_WT": 0.0,
              "beta_V_SEX_1": 0.0, "beta_CL_SEX": 0.0, "sigma_add_CP": 1e-4,
              "sigma_prop_CP": 1e-3, "z": jnp.full((12, 2), z)}

    def ld(p):
        return log_density(full_pm, (), {"obs": full_pm.observed}, p)[0]

    val, grad = jax.value_and_grad(ld)(params)
    assert not np.isnan(val)
    for k, g in grad.items():
        assert not np.any(np.isnan(g)), k


def test_covariate_and_iiv_formulas(full_pm):
    L = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    z = jax.random.normal(jax.random.PRNGKey(1), (12, 2))
    vals = {"CL": 3.0, "V": 60.0, "omega_CL": 0.3, "omega_V": 0.2, "L_omega_1": L,
            "beta_CL_WT": 0.7, "beta_V_WT": 0.004, "beta_V_SEX_1": 0.15, "beta_CL_SEX": -0.2,
            "sigma_add_CP": 0.02, "sigma_prop_CP": 0.1, "z": z}
    tr = handlers.trace(handlers.substitute(handlers.seed(full_pm, 0), vals)).get_trace(
        obs=full_pm.observed)
    wt = full_pm.covariates["WT"]
    sex = full_pm.covariates["SEX"]
    eta = np.asarray(z) @ (np.diag([0.3, 0.2]) @ np.asarray(L)).T
    cl = 3.0 * (wt / 70.0) ** 0.7 * np.exp(-0.2 * sex) * np.exp(eta[:, 0])
    v = 60.0 * (1 + 0.004 * (wt - 70.0)) * np.exp(0.15 * (sex == 1)) * np.exp(eta[:, 1])
    np.testing.assert_allclose(tr["ind_CL"]["value"], cl, rtol=1e-12)
    np.testing.assert_allclose(tr["ind_V"]["value"], v, rtol=1e-12)
    np.testing.assert_allclose(tr["corr_CL_V"]["value"], 0.6, rtol=1e-12)


def test_iiv_covariance_of_simulated_subjects():
    """Omega = diag(omega) R diag(omega): sample covariance of eta over 4,000 subjects."""
    df = make_df(n=4000, times=(1.0,), seed=2)
    pm, *_ = prepare("one_cmt_iv", df, population={"covariance": "block"})
    L = np.array([[1.0, 0.0], [-0.5, np.sqrt(0.75)]])
    tr = Predictive(pm, params={"CL": 4.0, "V": 50.0, "omega_CL": 0.4, "omega_V": 0.2,
                                "L_omega_1": L, "sigma_CP": 0.1},
                    num_samples=1)(jax.random.PRNGKey(5))
    eta = np.column_stack([np.log(tr["ind_CL"][0] / 4.0), np.log(tr["ind_V"][0] / 50.0)])
    target = np.diag([0.4, 0.2]) @ (L @ L.T) @ np.diag([0.4, 0.2])
    np.testing.assert_allclose(np.cov(eta.T), target, atol=0.006)


def test_failed_solve_gives_minus_infinity(full_pm):
    import dataclasses

    def failing(params):
        pred, ok = full_pm.predict_fn(params)
        return pred, ok.at[2].set(False)

    bad = dataclasses.replace(full_pm, predict_fn=failing)
    info = initialize_model(jax.random.PRNGKey(0), full_pm, model_kwargs={"obs": full_pm.observed},
                            init_strategy=init_to_median(num_samples=15))
    z = info.param_info.z

    def u(model, z):
        return potential_energy(model, (), {"obs": full_pm.observed}, z)

    assert np.isfinite(u(full_pm, z))
    assert u(bad, z) == np.inf
    grads = jax.grad(lambda q: u(bad, q))(z)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_simulation_with_obs_none_draws_data(full_pm):
    sims = Predictive(full_pm, num_samples=3)(jax.random.PRNGKey(0))
    assert sims["DV"].shape == (3, len(full_pm.obs.dv))
    assert np.all(np.isfinite(sims["DV"]))


def test_lognormal_error_refuses_nonpositive_dv():
    df = make_df(n=3)
    df.loc[2, "DV"] = 0.0
    with pytest.raises(DatasetError, match="log-normal") as err:
        prepare("one_cmt_iv", df, residual={"CP": "lognormal"})
    assert err.value.violations["lines"].iloc[0] == "4"  # row 2 of the frame is file line 4


SHARD_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    from il2pkpd import enable_x64
    enable_x64()
    assert jax.device_count() == 2, jax.devices()
    from numpyro.infer.util import log_density
    from il2pkpd.inference import prepare
    from test_inference_model import make_df, COVARIATES
    df = make_df(n=12)
    kw = dict(population={{"covariance": "block"}}, residual={{"CP": "combined"}},
              covariates=COVARIATES)
    pm1, *_ = prepare("one_cmt_iv", df, **kw)
    pm2, _, _, ev = prepare("one_cmt_iv", df, shard=True, **kw)
    assert len(ev.obs_time.sharding.device_set) == 2
    p = {{"CL": 3.0, "V": 60.0, "omega_CL": 0.3, "omega_V": 0.2,
         "L_omega_1": np.array([[1.0, 0.0], [0.3, np.sqrt(0.91)]]), "beta_CL_WT": 0.7,
         "beta_V_WT": 0.005, "beta_V_SEX_1": 0.1, "beta_CL_SEX": -0.2, "sigma_add_CP": 0.02,
         "sigma_prop_CP": 0.1, "z": np.linspace(-1, 1, 24).reshape(12, 2)}}
    f = lambda pm: jax.jit(jax.value_and_grad(
        lambda q: log_density(pm, (), {{"obs": pm.observed}}, q)[0]))(p)
    (v1, g1), (v2, g2) = f(pm1), f(pm2)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-10, atol=1e-12)
    print("SHARDED_OK", float(v1))
""")


def test_subject_sharded_log_density_equals_unsharded():
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARD_SCRIPT.format(tests=here)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED_OK" in out.stdout


def test_two_outputs_with_different_error_models_match_scipy():
    """Output 1 log-normal, output 2 combined, BLQ on output 1: the log likelihood of the DV
    site equals the sum of scipy terms row by row."""
    from types import SimpleNamespace as NS

    from scipy import stats

    from il2pkpd.inference import build_population_model, build_spec

    model = NS(name="two_out", parameters=(
        NS(name="A", domain="positive", default=2.0, prior=None, auto=False),
        NS(name="K", domain="positive", default=0.3, prior=None, auto=False)),
        outputs=(NS(dvid=1, name="CP"), NS(dvid=2, name="CELLS")), fit_spec={})
    spec = build_spec(model, residual={"CP": "lognormal", "CELLS": "combined"},
                      population={"iiv": []})
    t = np.array([[1.0, 2.0, 4.0, 1.0, 3.0]] * 2)
    out = np.array([[0, 0, 0, 1, 1]] * 2)
    blq = np.array([[False, False, True, False, False], [False, True, False, False, False]])
    dv = np.array([[1.5, 1.0, np.nan, 40.0, 35.0], [1.7, np.nan, 0.5, 41.0, 30.0]])
    events = NS(obs_mask=np.ones_like(t, bool), dv=dv, blq=blq,
                lloq=np.where(blq, 0.6, np.nan), obs_output=out, ids=np.array([1, 2]))

    def predict(p):
        pk = p["A"][:, None] * jnp.exp(-p["K"][:, None] * t)
        return jnp.where(out == 0, pk, 50.0 - 3.0 * t), jnp.ones(2, bool)

    pm = build_population_model(spec, events, predict)
    vals = {"A": 2.2, "K": 0.25, "sigma_CP": 0.2, "sigma_add_CELLS": 1.5, "sigma_prop_CELLS": 0.1}
    tr = handlers.trace(handlers.substitute(handlers.seed(pm, 0), vals)).get_trace(
        obs=pm.observed)
    ll = np.asarray(tr["DV"]["fn"].log_prob(tr["DV"]["value"]))
    expected = []
    for i in range(2):
        for j in range(5):
            if out[i, j] == 0:
                f = 2.2 * np.exp(-0.25 * t[i, j])
                expected.append(stats.lognorm.logcdf(0.6, s=0.2, scale=f) if blq[i, j]
                                else stats.lognorm.logpdf(dv[i, j], s=0.2, scale=f))
            else:
                f = 50.0 - 3.0 * t[i, j]
                sd = np.sqrt(1.5**2 + (0.1 * f) ** 2)
                expected.append(stats.norm.logpdf(dv[i, j], f, sd))
    np.testing.assert_allclose(ll, expected, rtol=1e-10)


def test_centred_parametrization_density_and_individual_values():
    """phi_i ~ MVN(log TV + covariate terms, Omega) and P_i = exp(phi_i): compare the subject
    plate's log density with scipy's multivariate normal."""
    from scipy import stats

    pm, *_ = prepare("one_cmt_iv", make_df(n=6), population={"covariance": "block",
                                                              "parametrization": "centred"},
                     covariates={"cl_wt": COVARIATES["cl_wt"]})
    L = np.array([[1.0, 0.0], [0.6, 0.8]])
    phi = np.log([[3.0, 50.0]]) + 0.1 * np.arange(12).reshape(6, 2) - 0.3
    vals = {"CL": 3.5, "V": 55.0, "omega_CL": 0.3, "omega_V": 0.2, "L_omega_1": L,
            "beta_CL_WT": 0.75, "sigma_CP": 0.1, "phi": phi}
    tr = handlers.trace(handlers.substitute(handlers.seed(pm, 0), vals)).get_trace(
        obs=pm.observed)
    np.testing.assert_allclose(tr["ind_CL"]["value"], np.exp(phi[:, 0]), rtol=1e-12)
    np.testing.assert_allclose(tr["ind_V"]["value"], np.exp(phi[:, 1]), rtol=1e-12)
    wt = pm.covariates["WT"]
    cov = np.diag([0.3, 0.2]) @ L @ L.T @ np.diag([0.3, 0.2])
    expected = sum(stats.multivariate_normal.logpdf(
        phi[i], [np.log(3.5) + 0.75 * np.log(wt[i] / 70.0), np.log(55.0)], cov)
        for i in range(6))
    np.testing.assert_allclose(np.sum(tr["phi"]["fn"].log_prob(phi)), expected, rtol=1e-10)


@pytest.mark.parametrize("drop", [False, True])
def test_dv_log_density_matches_scipy_with_and_without_padding(drop):
    """Log-normal error on one_cmt_iv boluses: with every subject observed at the same times
    (the predictions' grid is the obs plate, no gather) and with one record dropped (padding,
    gathered rows), the DV site's log density equals scipy's, row by row."""
    from scipy import stats

    df = make_df(n=4).assign(BLQ=0, DV=lambda d: np.where(d.EVID == 0, 1.0 + 0.1 * d.TIME, np.nan))
    if drop:
        df = df.drop(index=df[(df.ID == 2) & (df.TIME == 4.0)].index).reset_index(drop=True)
    pm, *_ = prepare("one_cmt_iv", df, population={"iiv": []}, residual={"CP": "lognormal"})
    vals = {"CL": 4.0, "V": 40.0, "sigma_CP": 0.3}
    tr = handlers.trace(handlers.substitute(handlers.seed(pm, 0), vals)).get_trace(
        obs=pm.observed)
    ll = np.asarray(tr["DV"]["fn"].log_prob(tr["DV"]["value"]))
    obs = df[df.EVID == 0]
    f = 100.0 / 40.0 * np.exp(-0.1 * obs.TIME.to_numpy())
    expected = stats.lognorm.logpdf(obs.DV.to_numpy(), s=0.3, scale=f)
    assert len(ll) == len(obs) == 4 * len(TIMES) - int(drop)
    np.testing.assert_allclose(ll, expected, rtol=1e-12)
