"""A maximum tree depth per phase, ``max_tree_depth=(warm-up, sampling)`` as NumPyro's NUTS
takes it (``il2pkpd fit --max-tree-depth 10,6``).

Reference: NumPyro's own NUTS with one depth. Warm-up with the same depth and seed must adapt
the same step size; sampling must then stay within the smaller tree, and the results (ArviZ
sample stats, fit.json) must say which depth the draws had.
"""

import numpy as np
import pytest

from il2pkpd.errors import OptionError
from il2pkpd.inference import fit_population_model, samplers


@pytest.mark.parametrize("value,expected", [
    (10, 10), (6.0, 6), ((10, 6), (10, 6)), ([10, 6], (10, 6)), ((7, 7), 7), ([5], 5),
    (np.int64(8), 8)])
def test_tree_depths_accepts_one_depth_or_a_pair(value, expected):
    assert samplers.tree_depths(value) == expected


@pytest.mark.parametrize("value", [0, -1, 31, 2.5, True, "10", (10, 0), (10, 6, 2), (), None,
                                   (10, "6")])
def test_tree_depths_refuses_bad_values(value):
    with pytest.raises(OptionError, match="max_tree_depth"):
        samplers.tree_depths(value)


def test_sampling_depth_caps_the_draws_after_the_same_warm_up(small_pm):
    pm = small_pm
    kw = dict(chains=2, warmup=40, samples=30, seed=3, chain_method="sequential")
    ref, ref_info = samplers.run_nuts(pm, pm.observed, max_tree_depth=10, **kw)
    cap, cap_info = samplers.run_nuts(pm, pm.observed, max_tree_depth=(10, 2), **kw)
    # warm-up identical (depth 10 in both): the same adapted step sizes
    np.testing.assert_allclose(cap_info["step_size"], ref_info["step_size"], rtol=1e-12)
    steps_ref = np.asarray(ref.get_extra_fields()["num_steps"])
    steps_cap = np.asarray(cap.get_extra_fields()["num_steps"])
    assert steps_ref.max() > 3          # the uncapped trees are deeper here
    assert steps_cap.max() <= 3         # 2 doublings: at most 3 leapfrog steps


def test_fit_records_the_pair_and_arviz_flags_the_sampling_depth(small_pm):
    pm = small_pm
    res = fit_population_model(pm, "nuts", chains=1, warmup=30, samples=20, seed=2,
                               max_tree_depth=(10, 2), chain_method="sequential",
                               posterior_predictive=False, prior_draws=0, progress_bar=False)
    assert tuple(res.info["max_tree_depth"]) == (10, 2)
    ss = res.datatree["sample_stats"]
    steps = np.asarray(ss["n_steps"])
    assert steps.max() <= 3
    np.testing.assert_array_equal(np.asarray(ss["reached_max_tree_depth"]),
                                  np.asarray(ss["tree_depth"]) >= 2)
