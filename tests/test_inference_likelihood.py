"""Residual error densities and the M3 likelihood against scipy closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from il2pkpd.inference.likelihood import ResidualError, residual_log_density

DV = np.array([0.8, 2.5, 10.0, 33.0])
PRED = np.array([1.0, 2.0, 12.0, 30.0])
F = np.zeros(4, bool)
T = np.ones(4, bool)
NAN = np.full(4, np.nan)


def test_additive_proportional_combined_match_scipy_normal():
    sa, sp = 0.3, 0.15
    cases = [(sa, 0.0, np.full(4, sa)), (0.0, sp, sp * PRED),
             (sa, sp, np.sqrt(sa**2 + (sp * PRED) ** 2))]
    for a, p, sd in cases:
        ll = residual_log_density(DV, PRED, a, p, F, F, NAN)
        np.testing.assert_allclose(ll, stats.norm.logpdf(DV, PRED, sd), rtol=1e-10)


def test_lognormal_matches_scipy_lognorm():
    s = 0.25
    ll = residual_log_density(DV, PRED, s, 0.0, T, F, NAN)
    np.testing.assert_allclose(ll, stats.lognorm.logpdf(DV, s=s, scale=PRED), rtol=1e-10)


def test_m3_term_is_the_normal_cdf_below_lloq():
    lloq = np.array([0.5, 1.0, 5.0, 40.0])
    sa, sp = 0.3, 0.1
    sd = np.sqrt(sa**2 + (sp * PRED) ** 2)
    ll = residual_log_density(NAN, PRED, sa, sp, F, T, lloq)  # DV of BLQ rows is ignored
    np.testing.assert_allclose(ll, stats.norm.logcdf(lloq, PRED, sd), rtol=1e-10)
    ll = residual_log_density(NAN, PRED, 0.2, 0.0, T, T, lloq)
    np.testing.assert_allclose(ll, stats.lognorm.logcdf(lloq, s=0.2, scale=PRED), rtol=1e-10)


def test_m3_is_stable_far_above_the_limit():
    # prediction 40 SDs above LLOQ: log Phi(-40) = -804.6 (finite, no underflow to -inf)
    ll = residual_log_density(np.array([np.nan]), np.array([41.0]), 1.0, 0.0, np.array([False]),
                              np.array([True]), np.array([1.0]))
    np.testing.assert_allclose(ll, stats.norm.logcdf(-40.0), rtol=1e-8)


def test_mixed_rows_and_nan_in_unused_entries_give_finite_gradients():
    dv = np.array([np.nan, 2.5, np.nan, 33.0])  # BLQ rows carry NaN DV
    lloq = np.array([1.0, np.nan, 5.0, np.nan])  # observed rows carry NaN LLOQ
    blq = np.array([True, False, True, False])
    is_log = np.array([True, True, False, False])

    def total(pred, s):
        return jnp.sum(residual_log_density(dv, pred, s, 0.1 * (~is_log), is_log, blq, lloq))

    val, grads = jax.value_and_grad(total, argnums=(0, 1))(jnp.asarray(PRED), 0.3)
    assert np.isfinite(val)
    assert np.all(np.isfinite(grads[0])) and np.isfinite(grads[1])


def test_zero_prediction_keeps_log_density_finite():
    ll = residual_log_density(np.array([1.0, 1.0]), np.array([0.0, 0.0]), np.array([0.2, 0.0]),
                              np.array([0.0, 0.1]), np.array([True, False]),
                              np.array([False, False]), np.array([np.nan, np.nan]))
    g = jax.grad(lambda p: jnp.sum(residual_log_density(
        np.array([1.0]), p, 0.2, 0.0, np.array([True]), np.array([False]),
        np.array([np.nan]))))(jnp.array([0.0]))
    assert np.all(np.isfinite(ll)) and np.all(ll < -1e3)
    assert np.all(np.isfinite(g))


def test_sampling_reproduces_the_error_model_moments():
    n = 200_000
    pred = jnp.array([10.0, 10.0])
    d = ResidualError(pred, jnp.array([0.2, 1.0]), jnp.array([0.0, 0.1]),
                      jnp.array([True, False]), jnp.array([False, False]), jnp.array([0.0, 0.0]))
    y = np.asarray(d.sample(jax.random.PRNGKey(0), (n,)))
    # log-normal: log y ~ N(log 10, 0.2); combined: y ~ N(10, sqrt(1 + 1))
    np.testing.assert_allclose(np.mean(np.log(y[:, 0])), np.log(10.0), atol=0.003)
    np.testing.assert_allclose(np.std(np.log(y[:, 0])), 0.2, rtol=0.01)
    np.testing.assert_allclose(np.mean(y[:, 1]), 10.0, atol=0.02)
    np.testing.assert_allclose(np.std(y[:, 1]), np.sqrt(2.0), rtol=0.01)


def test_grouped_rows_equal_the_generic_formula():
    from il2pkpd.inference.likelihood import RowGroups

    rng = np.random.default_rng(0)
    n = 40
    is_log = rng.random(n) < 0.5
    blq = rng.random(n) < 0.3
    pred = rng.uniform(0.5, 5.0, n)
    dv = np.where(blq, np.nan, pred * np.exp(0.2 * rng.standard_normal(n)))
    lloq = np.where(blq, 0.7, np.nan)
    sa = np.where(is_log, 0.2, 0.1)
    sp = np.where(is_log, 0.0, 0.15)
    d = ResidualError(pred, sa, sp, is_log, blq, lloq, groups=RowGroups(is_log, blq))
    np.testing.assert_allclose(d.log_prob(dv),
                               residual_log_density(dv, pred, sa, sp, is_log, blq, lloq),
                               rtol=1e-13)


@pytest.mark.parametrize("log, censored", [(True, False), (False, False), (True, True)])
def test_single_group_shortcut_matches_scipy(log, censored):
    """Every row in one group (no gathers): the same numbers as scipy, row by row."""
    from scipy import stats

    from il2pkpd.inference.likelihood import RowGroups

    rng = np.random.default_rng(3)
    n = 25
    is_log = np.full(n, log)
    blq = np.full(n, censored)
    pred = rng.uniform(0.5, 5.0, n)
    dv = pred * np.exp(0.2 * rng.standard_normal(n))
    lloq = np.full(n, 0.9)
    sa = np.full(n, 0.2 if log else 0.3)
    sp = np.full(n, 0.0 if log else 0.1)
    groups = RowGroups(is_log, blq)
    assert groups.single
    got = ResidualError(pred, sa, sp, is_log, blq, lloq, groups=groups).log_prob(dv)
    if log and censored:
        expected = stats.lognorm.logcdf(lloq, s=0.2, scale=pred)
    elif log:
        expected = stats.lognorm.logpdf(dv, s=0.2, scale=pred)
    else:
        expected = stats.norm.logpdf(dv, pred, np.sqrt(0.3**2 + (0.1 * pred) ** 2))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
