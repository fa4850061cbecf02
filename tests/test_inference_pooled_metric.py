"""Cross-chain warm-up (``run_nuts(pooled_metric=True)``).

References: the covariance that generated the draws (large samples), the Ledoit-Wolf intensity
written from its definition as a loop over draws, the error of the plain sample covariance
(the shrunk estimate must beat it with few draws), and recovery of the simulated typical values
with the metric NumPyro actually ends with compared to the pooled estimate.
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
    cov, lam = pooled_covariance(x)
    assert lam < 0.01
    np.testing.assert_allclose(cov, sigma, atol=0.04 * np.abs(sigma).max())


def test_intensity_is_the_ledoit_wolf_definition():
    """sum_{i != j} Var(r_ij) / sum_{i != j} r_ij^2, with Var(r_ij) estimated as
    (1/n^2) sum_k (y_ki y_kj - r_ij)^2 over standardised draws y (loop over draws)."""
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal(np.zeros(6), _ar1(6, 0.3), size=(2, 40))
    cov, lam = pooled_covariance(x)
    y = x.reshape(-1, 6)
    y = (y - y.mean(0)) / y.std(0)
    n = len(y)
    r = y.T @ y / n
    num = sum((np.outer(yk, yk) - r) ** 2 for yk in y) / n ** 2
    off = ~np.eye(6, dtype=bool)
    ref = num[off].sum() / (r[off] ** 2).sum()
    assert 0 < ref < 1
    np.testing.assert_allclose(lam, ref, rtol=1e-10)
    sd = x.reshape(-1, 6).std(0)
    np.testing.assert_allclose(cov, sd[:, None] * ((1 - ref) * r + ref * np.eye(6)) * sd,
                               rtol=1e-10, atol=1e-14)


def test_few_draws_in_many_dimensions_beat_the_sample_covariance():
    rng = np.random.default_rng(2)
    d = 60
    sigma = _ar1(d, 0.5)
    x = rng.multivariate_normal(np.zeros(d), sigma, size=(4, 12))     # 48 draws < 60 dims
    cov, lam = pooled_covariance(x)
    sample = np.cov(x.reshape(-1, d).T, bias=True)
    assert np.linalg.eigvalsh(sample).min() < 1e-10                # singular
    assert np.linalg.eigvalsh(cov).min() > 0                         # a usable metric
    assert 0 < lam < 1

    def err(c):   # error relative to the truth, in the truth's own scale
        w = np.diag(1 / np.sqrt(np.diag(sigma)))
        return np.linalg.norm(w @ (c - sigma) @ w)

    assert err(cov) < 0.8 * err(sample)


@pytest.fixture(scope="module")
def centred_pm():
    pm, *_ = prepare("one_cmt_iv", make_df(n=24), residual={"CP": "lognormal"},
                     population={"parametrization": "centred"})
    return simulate(pm, TRUE, seed=11)


@pytest.mark.parametrize("init,dense_mass", [("laplace", "auto"), ("median", "population")])
def test_nuts_ends_with_the_pooled_metric(centred_pm, monkeypatch, init, dense_mass):
    seen = {}

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
    assert seen["draws"].shape[:2] == (2, 15) and pool["draws_pooled"] == 30
    sizes = {k: int(np.prod(np.shape(v)[1:])) for k, v in mcmc.last_state.z.items()}
    assert seen["draws"].shape[2] == sum(sizes.values())
    want = _cut_metric(seen["out"][0], sizes, _dense_arg(pm, dense_mass))
    got = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert set(got) == set(want)
    for k in want:      # both chains, unchanged through the second warm-up stage
        for c in range(2):
            np.testing.assert_allclose(np.asarray(got[k])[c], np.asarray(want[k]), rtol=1e-12)


def test_nuts_with_the_pooled_metric_recovers_typical_values(centred_pm):
    res = fit_population_model(centred_pm, "nuts", chains=2, warmup=100, samples=150, seed=5,
                               init="laplace", pooled_metric=True, progress_bar=False,
                               posterior_predictive=False, prior_draws=0)
    assert res.info["pooled_metric"]["stage1_steps_total"] > 0
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name


def test_pooled_metric_needs_enough_warmup(centred_pm):
    with pytest.raises(OptionError, match="pooled_metric"):
        fit_population_model(centred_pm, "nuts", chains=2, warmup=20, samples=5,
                             pooled_metric=True, progress_bar=False)
