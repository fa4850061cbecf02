"""Stage 1 of warm-up in another IIV parametrization (``run_nuts(stage1_model=...)``).

References: the model's own individual parameters, omegas and correlations (the map between
two parametrizations must reproduce them), the identity (a map and its reverse), NumPyro's
unconstraining transforms, and recovery of the simulated typical values.
"""

import jax
import numpy as np
import pytest
from numpyro.infer.util import unconstrain_fn
from test_inference_fit import TRUE
from test_inference_laplace_start import CASES, assert_same_iiv
from test_inference_mixed_centring import _pm, _random_point, _values

from il2pkpd.errors import OptionError
from il2pkpd.inference import fit_population_model, samplers
from il2pkpd.inference.samplers import (
    noncentred_twin,
    parametrization_map,
    reparametrized,
    sites_from_noncentred,
    sites_to_noncentred,
)


def _unconstrained(pm, point):
    return unconstrain_fn(pm, (), {"obs": pm.observed}, point)


@pytest.mark.parametrize("population,parametrization,kw", CASES)
def test_to_noncentred_keeps_the_individual_parameters(population, parametrization, kw):
    pm = _pm(parametrization, population, **kw)
    nc = noncentred_twin(pm)
    for seed in range(2):
        point = _random_point(pm, seed)
        vals = _values(pm, point)
        to_nc = sites_to_noncentred(pm, {k: v for k, v in vals.items() if k in point
                                         or k.startswith(("ind_", "corr_"))})
        vals_nc = _values(nc, {k: to_nc[k] for k in _random_point(nc, 0)})
        assert_same_iiv(pm, vals_nc, vals)
        # and back: the original sites
        back = sites_from_noncentred(pm, vals_nc)
        for k, v in point.items():
            np.testing.assert_allclose(back[k], v, rtol=1e-8, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("src,dst", [
    ("centred", {"partial": {"CL": 0.7, "V1": 0.3, "Q": 0.1, "V2": 0.5}}),
    ({"centred": ["CL"], "partial": {"Q": 0.5}}, "noncentred"),
    ("noncentred", "centred"),
    ("centred", {"partial": {"CL": [0.9, 0.1, 0.5, 1.0, 0.0, 0.7], "V1": 0.3}}),
])
def test_parametrization_map_is_exact_and_invertible(src, dst):
    pm_src = _pm(src)
    pm_dst = reparametrized(pm_src, dst)
    assert pm_dst.spec.parametrization_value() != pm_src.spec.parametrization_value()
    fwd = jax.jit(parametrization_map(pm_src, pm_dst))
    rev = jax.jit(parametrization_map(pm_dst, pm_src))
    for seed in range(3):
        point = _random_point(pm_src, seed)
        u = _unconstrained(pm_src, point)
        v = fwd(u)
        assert set(v) == set(_random_point(pm_dst, 0))
        # the same model quantities in both coordinates
        from numpyro.infer.util import constrain_fn
        c_dst = constrain_fn(pm_dst, (), {"obs": pm_dst.observed}, v)
        vals_dst = _values(pm_dst, c_dst)
        vals_src = _values(pm_src, point)
        for p in pm_src.spec.iiv:
            np.testing.assert_allclose(vals_dst[f"ind_{p}"], vals_src[f"ind_{p}"], rtol=1e-8)
        back = rev(v)
        for k in u:
            np.testing.assert_allclose(back[k], u[k], rtol=1e-8, atol=1e-9, err_msg=k)


def test_reparametrized_rejects_bad_values():
    pm = _pm("centred")
    with pytest.raises(OptionError, match="stage1_parametrization"):
        reparametrized(pm, {"partial": {"CL": 1.5}}, "stage1_parametrization")
    with pytest.raises(OptionError, match="stage1_parametrization"):
        reparametrized(pm, "sideways", "stage1_parametrization")


@pytest.fixture(scope="module")
def partial_pm():
    from test_inference_fit import simulate
    from test_inference_model import make_df

    from il2pkpd.inference import prepare

    # the data of test_inference_pooled_metric's centred model, sampled partially centred
    pm, *_ = prepare("one_cmt_iv", make_df(n=24), residual={"CP": "lognormal"},
                     population={"parametrization": "centred"})
    return reparametrized(simulate(pm, TRUE, seed=11), {"partial": {"CL": 0.6, "V": 0.4}})


def test_stage2_starts_where_stage1_ended_in_the_final_coordinates(partial_pm, monkeypatch):
    pm = partial_pm
    seen = {}
    real = samplers.pooled_covariance

    def spy(draws):
        seen["draws"] = np.asarray(draws)
        return real(draws)

    monkeypatch.setattr(samplers, "pooled_covariance", spy)
    mcmc, info = samplers.run_nuts(pm, pm.observed, chains=2, warmup=60, samples=20, seed=3,
                                   init="laplace", pooled_metric=True,
                                   stage1_model=reparametrized(pm, "centred"),
                                   progress_bar=False)
    pool = info["pooled_metric"]
    assert pool["stage1_parametrization"] == "centred" and info["metric"] == "pooled"
    # stage 2 samples the partially centred sites
    assert {"z_CL", "z_V"} <= set(mcmc.get_samples()) and "phi" not in mcmc.get_samples()
    sizes = {k: int(np.prod(np.shape(v)[1:])) for k, v in mcmc.last_state.z.items()}
    assert seen["draws"].shape == (2, 15, sum(sizes.values()))
    assert np.all(np.isfinite(seen["draws"]))


@pytest.mark.slow    # the same path as the adaptive-centring test below, which stays fast
def test_stage1_parametrization_recovers_typical_values(partial_pm):
    res = fit_population_model(partial_pm, "nuts", chains=2, warmup=100, samples=150, seed=5,
                               init="laplace", pooled_metric=True,
                               stage1_parametrization="centred", progress_bar=False,
                               posterior_predictive=False, prior_draws=0)
    assert res.info["pooled_metric"]["stage1_parametrization"] == "centred"
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name


def test_stage1_parametrization_needs_the_pooled_metric(partial_pm):
    with pytest.raises(OptionError, match="pooled_metric"):
        fit_population_model(partial_pm, "nuts", chains=2, warmup=60, samples=5,
                             stage1_parametrization="centred", progress_bar=False)


def _draws_and_eta_by_hand(pm, seed, n_draw):
    """2 chains x *n_draw* unconstrained draws around a prior point of centred *pm*, and per
    IIV parameter its eta (draws, subject) and omega (draws) computed by hand from the
    individual parameters and typical values (log scale, no covariates)."""
    from numpyro.infer.util import constrain_fn

    rng = np.random.default_rng(seed)
    base = _unconstrained(pm, _random_point(pm, seed + 3))
    draws = {k: np.asarray(v)[None, None] + 0.1 * rng.standard_normal((2, n_draw, *np.shape(v)))
             for k, v in base.items()}
    eta = {p: [] for p in pm.spec.iiv}
    om = {p: [] for p in pm.spec.iiv}
    for c in range(2):
        for i in range(n_draw):
            u = {k: v[c, i] for k, v in draws.items()}
            con = constrain_fn(pm, (), {"obs": pm.observed}, u, return_deterministic=True)
            for p in pm.spec.iiv:
                eta[p].append(np.log(con[f"ind_{p}"]) - np.log(con[p]))
                om[p].append(float(con[f"omega_{p}"]))
    return draws, {p: np.array(v) for p, v in eta.items()}, {p: np.array(v) for p, v in om.items()}


def test_centring_weights_are_one_minus_shrinkage_squared(partial_pm):
    """The reference: eta computed by hand from the individual parameters and typical values
    of a centred model's draws (log scale, no covariates), its shrinkage by the report's
    function."""
    from il2pkpd.report.shrinkage import eta_shrinkage_value

    pm = reparametrized(partial_pm, "centred")
    draws, eta, om = _draws_and_eta_by_hand(pm, 0, 40)
    weights, shrink = samplers.centring_weights(pm, draws)
    for p in pm.spec.iiv:
        _, _, ref = eta_shrinkage_value(eta[p], om[p])
        ref = min(max(ref, 0.0), 1.0)         # a shrinkage outside [0, 1] is clipped
        np.testing.assert_allclose(shrink[p], ref, rtol=1e-8)
        np.testing.assert_allclose(weights[p], (1 - ref) ** 2, rtol=1e-8)


def test_adaptive_centring_samples_the_weights_it_chose(partial_pm):
    pm = reparametrized(partial_pm, "centred")
    res = fit_population_model(pm, "nuts", chains=2, warmup=100, samples=150, seed=5,
                               init="laplace", pooled_metric=True, adaptive_centring=True,
                               progress_bar=False, posterior_predictive=False, prior_draws=0)
    pool = res.info["pooled_metric"]
    w = pool["centring_weights"]
    assert set(w) == {"CL", "V"}
    for p, v in w.items():
        assert v == round((1 - pool["stage1_eta_shrinkage"][p]) ** 2, 2)
    # the kept draws are those of the chosen parametrization, reported as such
    par = res.info["parametrization"]
    partial = {p: v for p, v in w.items() if 0 < v < 1}
    if partial:
        assert par["partial"] == partial
        assert all(f"z_{p}" in res.datatree["posterior"] for p in partial)
    s = res.summary.set_index("parameter")
    assert list(s.index[:2]) == ["CL", "V"]
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name


def test_adaptive_centring_needs_the_pooled_metric(partial_pm):
    with pytest.raises(OptionError, match="pooled_metric"):
        fit_population_model(partial_pm, "nuts", chains=2, warmup=60, samples=5,
                             adaptive_centring=True, progress_bar=False)


def test_a_laplace_start_of_the_wrong_parametrization_is_refused(partial_pm):
    from il2pkpd.inference.samplers import laplace_start

    lap = laplace_start(partial_pm, partial_pm.observed, seed=0)      # partial, not centred
    with pytest.raises(OptionError, match="another IIV parametrization"):
        samplers.run_nuts(partial_pm, partial_pm.observed, chains=1, warmup=60, samples=5,
                          init="laplace", laplace=lap, pooled_metric=True,
                          stage1_model=reparametrized(partial_pm, "centred"),
                          progress_bar=False)


def test_adaptive_centring_without_iiv_changes_nothing():
    from test_inference_model import make_df

    from il2pkpd.inference import prepare

    pm, *_ = prepare("one_cmt_iv", make_df(n=6), residual={"CP": "lognormal"},
                     population={"iiv": []})
    mcmc, info = samplers.run_nuts(pm, pm.observed, chains=1, warmup=60, samples=10, seed=1,
                                   pooled_metric=True, adaptive_centring=True,
                                   progress_bar=False)
    assert info["pooled_metric"]["centring_weights"] is None
    assert info["parametrization"] == pm.spec.parametrization_value()
    assert set(mcmc.get_samples()) >= {"CL", "V"}


def test_per_subject_centring_weights_are_one_minus_variance_over_total_variance(partial_pm):
    """The reference: each subject's eta variance over the draws (computed by hand from the
    individual parameters and typical values) over the variance of all etas pooled, draws and
    subjects together (the law of total variance, computed here directly)."""
    pm = reparametrized(partial_pm, "centred")
    draws, eta, _ = _draws_and_eta_by_hand(pm, 1, 30)
    weights, shrink = samplers.centring_weights(pm, draws, per_subject=True)
    plain, _ = samplers.centring_weights(pm, draws)
    for p in pm.spec.iiv:
        ref = np.clip(1.0 - np.var(eta[p], axis=0) / np.var(eta[p]), 0.0, 1.0)
        assert isinstance(weights[p], tuple) and len(weights[p]) == pm.n_subjects
        np.testing.assert_allclose(weights[p], ref, rtol=1e-8, atol=1e-12)
        assert p in shrink and weights[p] != plain[p]


def test_adaptive_centring_per_subject_samples_those_weights(partial_pm):
    pm = reparametrized(partial_pm, "centred")
    res = fit_population_model(pm, "nuts", chains=2, warmup=100, samples=150, seed=5,
                               init="laplace", pooled_metric=True,
                               adaptive_centring="subject", progress_bar=False,
                               posterior_predictive=False, prior_draws=0)
    w = res.info["pooled_metric"]["centring_weights"]
    assert set(w) == {"CL", "V"}
    for v in w.values():
        assert len(v) == pm.n_subjects and all(0 <= x <= 1 and round(x, 2) == x for x in v)
    par = res.info["parametrization"]
    assert {p: tuple(v) for p, v in par["partial"].items()} == {p: tuple(v)
                                                                for p, v in w.items()}
    assert "per subject" in res.info["spec"]
    post = res.datatree["posterior"]
    assert all(post[f"z_{p}"].sizes["subject"] == pm.n_subjects for p in w)
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], name


def test_per_subject_weights_are_checked():
    pm = _pm({"partial": {"Q": [0.5] * 6}})
    assert pm.spec.partial_weights == {"Q": (0.5,) * 6}
    assert "Q per subject 0.5-0.5" in pm.spec.describe()
    with pytest.raises(OptionError, match="between 0"):
        reparametrized(pm, {"partial": {"Q": [0.5, 1.5]}})
    with pytest.raises(OptionError, match="between 0"):
        reparametrized(pm, {"partial": {"Q": []}})
    short = reparametrized(pm, {"partial": {"Q": [0.5] * 5}})
    with pytest.raises(OptionError, match="5 per-subject centring weights for 6 subjects"):
        _random_point(short, 0)
    with pytest.raises(OptionError, match="adaptive_centring"):
        samplers.run_nuts(pm, pm.observed, chains=1, warmup=60, samples=5,
                          pooled_metric=True, adaptive_centring="everyone")
