"""Thinned NUTS draws (``run_nuts(thin=k)``, ``il2pkpd fit --thin k``).

Reference: the same seed run without thinning (NumPyro's own NUTS, one transition per draw):
the thinned run must keep exactly every k-th of its draws and their leapfrog steps, with the
divergences of all the transitions in between.
"""

import numpy as np
import pytest

from il2pkpd.errors import OptionError
from il2pkpd.inference import samplers
from il2pkpd.inference.samplers import ProgressLog


def _stats(mcmc):
    ex = mcmc.get_extra_fields(group_by_chain=True)
    return np.asarray(ex["diverging"]), np.asarray(ex["num_steps"])


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_thinned_draws_are_every_kth_transition(small_pm, chain_method):
    pm, k, n = small_pm, 3, 12
    kw = dict(chains=2, warmup=30, seed=4, chain_method=chain_method)
    full, _ = samplers.run_nuts(pm, pm.observed, samples=n * k, **kw)
    thin, info = samplers.run_nuts(pm, pm.observed, samples=n, thin=k, **kw)
    assert info["thin"] == k
    a, b = full.get_samples(group_by_chain=True), thin.get_samples(group_by_chain=True)
    for name in a:
        assert np.shape(b[name])[:2] == (2, n)
        np.testing.assert_allclose(np.asarray(b[name]), np.asarray(a[name])[:, k - 1::k],
                                   rtol=1e-6, atol=1e-9, err_msg=name)
    div_a, steps_a = _stats(full)
    div_b, steps_b = _stats(thin)
    np.testing.assert_array_equal(steps_b, steps_a[:, k - 1::k])
    np.testing.assert_array_equal(div_b, div_a.reshape(2, n, k).any(axis=2))


def test_a_divergence_between_kept_draws_is_counted(small_pm):
    """Four warm-up iterations leave a step size too large: some transitions diverge; every
    kept draw whose block holds a divergence says so, and fit's count is of those draws."""
    pm = small_pm
    kw = dict(chains=1, warmup=4, seed=1, adapt_mass_matrix=False, chain_method="sequential")
    from il2pkpd.inference import fit_population_model

    full, _ = samplers.run_nuts(pm, pm.observed, samples=40, **kw)
    div_a, _ = _stats(full)
    assert 0 < div_a.sum() < 40
    res = fit_population_model(pm, "nuts", samples=20, thin=2, posterior_predictive=False,
                               prior_draws=0, progress_bar=False, **kw)
    assert res.info["divergences"] == int(div_a.reshape(20, 2).any(axis=1).sum())
    assert res.info["thin"] == 2
    assert res.datatree["posterior"].sizes["draw"] == 20


def test_progress_lines_count_every_iteration(small_pm):
    pm = small_pm
    _, info = samplers.run_nuts(pm, pm.observed, chains=2, warmup=30, samples=10, thin=4,
                                seed=2, chain_method="sequential", progress_bar="log")
    lines = info["progress_lines"]
    assert all("of 2 x 70 iterations" in x for x in lines)
    assert lines[-1].startswith("NUTS: 100%")
    pct = [int(x.split("NUTS: ")[1].split("%")[0]) for x in lines]
    # every mark of the 70 iterations, although the sampling ones advance 4 at a time
    assert pct == sorted(pct) and len(lines) == len(ProgressLog(2, 30, 40).marks) == 18
    assert "every chain past iteration 70 (sampling)" in lines[-1]


def test_thin_with_the_pooled_metric_thins_only_the_kept_draws(small_pm):
    """Both warm-up stages unchanged (one transition per iteration), then every 2nd draw."""
    pm = small_pm
    kw = dict(chains=2, warmup=40, seed=1, chain_method="sequential", pooled_metric=True)
    full, _ = samplers.run_nuts(pm, pm.observed, samples=30, **kw)
    thin, info = samplers.run_nuts(pm, pm.observed, samples=15, thin=2, **kw)
    assert info["thin"] == 2 and info["metric"] == "pooled"
    a, b = full.get_samples(group_by_chain=True), thin.get_samples(group_by_chain=True)
    for name in a:
        np.testing.assert_allclose(np.asarray(b[name]), np.asarray(a[name])[:, 1::2],
                                   rtol=1e-6, atol=1e-9, err_msg=name)


def test_bad_thin_is_refused(small_pm):
    """The CLI's --thin 0: test_inference_cli.py (exit 2)."""
    for bad in (0, 1.5):
        with pytest.raises(OptionError, match="thin"):
            samplers.run_nuts(small_pm, small_pm.observed, chains=1, warmup=5, samples=5,
                              thin=bad)
