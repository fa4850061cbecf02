"""Cross-chain warm-up (``run_nuts(pooled_metric=True)``).

References: the covariance that generated the draws (large samples), the Schaefer-Strimmer
intensity written from its definition as a loop over draws, the error of the plain sample
covariance (the shrunk estimate must beat it with few draws), NumPyro's own kinetic energy for
the layout of the metric blocks, an independent re-run of stage 1 (its draws unconstrained by
NumPyro's transforms) for what is pooled, and recovery of the simulated typical values.
"""

import numpy as np
import pytest
from test_inference_fit import TRUE, simulate
from test_inference_model import make_df

from il2pkpd.errors import OptionError
from il2pkpd.inference import fit_population_model, prepare, samplers
from il2pkpd.inference.samplers import _cut_metric, _dense_arg, pooled_covariance


def _ar1(d, rho=0.7):
    i = np.arange(d)
    sd = np.linspace(0.1, 3.0, d)
    return sd[:, None] * rho ** np.abs(i[:, None] - i[None, :]) * sd[None, :]


def test_many_draws_give_the_generating_covariance():
    rng = np.random.default_rng(0)
    sigma = _ar1(5)
    x = rng.multivariate_normal(np.zeros(5), sigma, size=(4, 5000))
    cov, lam, still = pooled_covariance(x)
    assert lam < 0.01 and still == 0
    np.testing.assert_allclose(cov, sigma, atol=0.04 * np.abs(sigma).max())


def test_intensity_is_the_schaefer_strimmer_definition():
    """lambda = sum_{i != j} Var(r_ij) / sum_{i != j} r_ij^2 on standardised draws y, with
    r_ij = sum_k w_kij / (n - 1), w_kij = y_ki y_kj and Var(r_ij) = n / (n - 1)^3
    sum_k (w_kij - mean w_ij)^2 (Schaefer & Strimmer 2005, appendix), as a loop over draws."""
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal(np.zeros(6), _ar1(6, 0.3), size=(2, 40))
    cov, lam, _ = pooled_covariance(x)
    flat = x.reshape(-1, 6)
    n = len(flat)
    y = (flat - flat.mean(0)) / flat.std(0, ddof=1)
    w = [np.outer(yk, yk) for yk in y]
    wbar = sum(w) / n
    r = wbar * n / (n - 1)
    var = n / (n - 1) ** 3 * sum((wk - wbar) ** 2 for wk in w)
    off = ~np.eye(6, dtype=bool)
    ref = var[off].sum() / (r[off] ** 2).sum()
    assert 0 < ref < 1
    np.testing.assert_allclose(lam, ref, rtol=1e-10)
    sd = flat.std(0, ddof=1)
    np.testing.assert_allclose(cov, sd[:, None] * ((1 - ref) * r + ref * np.eye(6)) * sd,
                               rtol=1e-10, atol=1e-14)


def test_a_coordinate_that_never_moved_gets_unit_variance():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 30, 4))
    x[:, :, 2] = 0.7
    cov, _, still = pooled_covariance(x)
    assert still == 1 and cov[2, 2] == 1.0
    assert np.all(cov[2, [0, 1, 3]] == 0) and np.all(np.isfinite(cov))
    assert np.linalg.eigvalsh(cov).min() > 0


def test_few_draws_in_many_dimensions_beat_the_sample_covariance():
    rng = np.random.default_rng(2)
    d = 60
    sigma = _ar1(d, 0.5)
    x = rng.multivariate_normal(np.zeros(d), sigma, size=(4, 12))     # 48 draws < 60 dims
    cov, lam, _ = pooled_covariance(x)
    sample = np.cov(x.reshape(-1, d).T, bias=True)
    assert np.linalg.eigvalsh(sample).min() < 1e-10                # singular
    assert np.linalg.eigvalsh(cov).min() > 0                         # a usable metric
    assert 0 < lam < 1

    def err(c):   # error relative to the truth, in the truth's own scale
        w = np.diag(1 / np.sqrt(np.diag(sigma)))
        return np.linalg.norm(w @ (c - sigma) @ w)

    assert err(cov) < 0.8 * err(sample)


@pytest.mark.parametrize("dense", [True, False, [("d", "b")], [("b", "d")]])
def test_cut_metric_is_the_layout_numpyro_uses(dense):
    """NumPyro's kinetic energy with the cut metric equals 1/2 r^T M r for the full matrix M
    restricted to the structure, with r flattened by JAX's ravel_pytree (sorted sites)."""
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.hmc_util import euclidean_kinetic_energy

    sites = {"b": np.zeros(()), "a": np.zeros((2, 3)), "d": np.zeros(4), "c": np.zeros(())}
    sizes = {k: int(np.size(v)) for k, v in sites.items()}
    n = sum(sizes.values())
    rng = np.random.default_rng(4)
    a = rng.normal(size=(n, n))
    cov = a @ a.T + n * np.eye(n)
    r = {k: jnp.asarray(rng.normal(size=np.shape(v))) for k, v in sites.items()}
    flat, unravel = ravel_pytree(r)
    pos = {k: np.asarray(v).ravel().astype(int)
           for k, v in unravel(jnp.arange(n, dtype=float)).items()}
    if dense is True:
        m = cov
    else:
        m = np.diag(np.diag(cov))
        for block in dense or []:
            ii = np.concatenate([pos[k] for k in block])
            m[np.ix_(ii, ii)] = cov[np.ix_(ii, ii)]
    metric = _cut_metric(cov, sizes, dense)
    if isinstance(metric, dict):
        ke = euclidean_kinetic_energy(metric, r)
    else:
        ke = euclidean_kinetic_energy(metric, flat)
    np.testing.assert_allclose(float(ke), 0.5 * float(flat @ m @ flat), rtol=1e-10)


@pytest.fixture(scope="module")
def centred_pm():
    pm, *_ = prepare("one_cmt_iv", make_df(n=24), residual={"CP": "lognormal"},
                     population={"parametrization": "centred"})
    return simulate(pm, TRUE, seed=11)


@pytest.mark.parametrize("init,dense_mass,discard", [("laplace", "auto", 0.5),
                                                     ("median", "population", 0.5),
                                                     ("median", "population", 0.2)])
def test_nuts_ends_with_the_pooled_metric(centred_pm, monkeypatch, init, dense_mass, discard):
    """discard: samplers.POOL_DISCARD, the share of stage 1's draws left out (default 0.5;
    bench_fit_friberg.py --pool-discard)."""
    seen = {}
    skip = int(discard * 30)
    monkeypatch.setattr(samplers, "POOL_DISCARD", discard)

    def spy(draws):
        seen["draws"] = np.asarray(draws)
        seen["out"] = pooled_covariance(draws)
        return seen["out"]

    monkeypatch.setattr(samplers, "pooled_covariance", spy)
    pm = centred_pm
    mcmc, info = samplers.run_nuts(pm, pm.observed, chains=2, warmup=60, samples=10, seed=4,
                                   init=init, dense_mass=dense_mass, pooled_metric=True,
                                   progress_bar=False)
    pool = info["pooled_metric"]
    assert info["metric"] == "pooled" and info["adapt_mass_matrix"] is False
    assert pool["warmup_stage1"] == 30 and pool["warmup_stage2"] == 30
    assert seen["draws"].shape[:2] == (2, 30 - skip)
    assert pool["draws_pooled"] == 2 * (30 - skip)
    sizes = {k: int(np.prod(np.shape(v)[1:])) for k, v in mcmc.last_state.z.items()}
    assert seen["draws"].shape[2] == sum(sizes.values())
    want = _cut_metric(seen["out"][0], sizes, _dense_arg(pm, dense_mass))
    got = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert set(got) == set(want)
    for k in want:      # both chains, unchanged through the second warm-up stage
        for c in range(2):
            np.testing.assert_allclose(np.asarray(got[k])[c], np.asarray(want[k]), rtol=1e-12)
    if init == "median":
        # stage 1 again by hand: its constrained draws, unconstrained by NumPyro's transforms
        # and flattened by ravel_pytree; the pooled ones are each chain's last 30 - skip
        import jax
        from jax.flatten_util import ravel_pytree
        from numpyro.infer import MCMC, NUTS, init_to_median
        from numpyro.infer.util import unconstrain_fn

        ref = MCMC(NUTS(pm, dense_mass=_dense_arg(pm, dense_mass),
                        init_strategy=init_to_median(num_samples=15)),
                   num_warmup=30, num_samples=1, num_chains=2, chain_method="sequential",
                   progress_bar=False)
        ref.warmup(jax.random.split(jax.random.PRNGKey(4))[0], obs=pm.observed,
                   collect_warmup=True)
        post = ref.get_samples(group_by_chain=True)
        flat = np.array([[np.asarray(ravel_pytree(unconstrain_fn(
            pm, (), {"obs": pm.observed}, {k: post[k][c, i] for k in sizes}))[0])
            for i in range(skip, 30)] for c in range(2)])
        np.testing.assert_allclose(seen["draws"], flat, rtol=1e-8, atol=1e-10)


def test_nuts_with_the_pooled_metric_recovers_typical_values(centred_pm):
    res = fit_population_model(centred_pm, "nuts", chains=2, warmup=100, samples=150, seed=5,
                               init="laplace", pooled_metric=True, progress_bar=False,
                               posterior_predictive=False, prior_draws=0)
    assert res.info["pooled_metric"]["stage1_steps_total"] > 0
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name


def test_cli_states_the_same_minimum_warmup():
    from il2pkpd.cli.fit import _POOLED_MIN_WARMUP

    assert _POOLED_MIN_WARMUP == samplers.POOLED_MIN_WARMUP


def test_pooled_metric_needs_enough_warmup(centred_pm):
    with pytest.raises(OptionError, match="pooled_metric"):
        fit_population_model(centred_pm, "nuts", chains=2, warmup=20, samples=5,
                             pooled_metric=True, progress_bar=False)


@pytest.mark.parametrize("method", ["map", "laplace"])
def test_nuts_only_options_are_refused_for_other_methods(centred_pm, method):
    """thin, pooled_metric, stage1_parametrization and adaptive_centring would be ignored by
    the other methods: all those given are named at once instead."""
    with pytest.raises(OptionError, match=r"thin=2, pooled_metric=True, adaptive_centring="
                                          r"'subject' apply to method 'nuts' only"):
        fit_population_model(centred_pm, method, thin=2, pooled_metric=True,
                             adaptive_centring="subject", progress_bar=False)


def test_shared_step_size_is_the_median_after_the_same_warmup(small_pm):
    """Reference: the same run without sharing. Its warm-up is the shared run's (the step
    sizes adapted are equal); the sampling stage then keeps the median of them in every chain
    (the state after sampling still holds it: no adaptation after warm-up), and with --thin
    makes *thin* transitions per kept draw (the iteration counter). Parallel chains: the
    CLI test (test_inference_cli.py)."""
    pm = small_pm
    kw = dict(chains=3, warmup=40, seed=2, chain_method="sequential", pooled_metric=True)
    _, plain = samplers.run_nuts(pm, pm.observed, samples=20, **kw)
    mcmc, shared = samplers.run_nuts(pm, pm.observed, samples=10, thin=2,
                                     shared_step_size=True, **kw)
    assert "step_size_adapted" not in plain
    np.testing.assert_allclose(shared["step_size_adapted"], plain["step_size"], rtol=1e-6)
    assert len(set(plain["step_size"])) == 3            # the chains adapted different ones
    np.testing.assert_allclose(shared["step_size"], [np.median(plain["step_size"])] * 3,
                               rtol=1e-6)
    assert np.shape(mcmc.get_samples(group_by_chain=True)["CL"])[:2] == (3, 10)
    # stage 2 counts its own iterations: the rest of warm-up, then 10 draws x 2
    w2 = 40 - shared["pooled_metric"]["warmup_stage1"]
    np.testing.assert_array_equal(np.ravel(mcmc.last_state.i), [w2 + 10 * 2] * 3)
    assert shared["pooled_metric"]["stage1_steps_total"] == \
        plain["pooled_metric"]["stage1_steps_total"]


def test_nuts_with_a_shared_step_size_recovers_typical_values(centred_pm, monkeypatch):
    import il2pkpd.inference._fit as fit_module

    seen = {}
    real = fit_module.chain_warnings

    def spy(post, summary, step_size=None, steps_per_draw=None, shared_step_size=None):
        seen.update(step_size=step_size, shared=shared_step_size)
        return real(post, summary, step_size, steps_per_draw, shared_step_size=shared_step_size)

    monkeypatch.setattr(fit_module, "chain_warnings", spy)
    res = fit_population_model(centred_pm, "nuts", chains=2, warmup=100, samples=150, seed=5,
                               init="laplace", pooled_metric=True, shared_step_size=True,
                               progress_bar=False, posterior_predictive=False, prior_draws=0)
    eps = res.info["step_size"]
    assert eps[0] == eps[1] == pytest.approx(np.median(res.info["step_size_adapted"]))
    # the chain warnings judge each chain by the step size it adapted, beside the shared one
    assert seen == {"step_size": res.info["step_size_adapted"], "shared": eps[0]}
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name
    assert s["r_hat"].max() < 1.05


def test_shared_step_size_needs_the_pooled_metric(centred_pm):
    with pytest.raises(OptionError, match="pooled_metric"):
        fit_population_model(centred_pm, "nuts", chains=2, warmup=60, samples=5,
                             shared_step_size=True, progress_bar=False)
    with pytest.raises(OptionError, match="shared_step_size"):
        fit_population_model(centred_pm, "map", shared_step_size=True)
