"""Mixed IIV parametrization: some IIV parameters centred (``phi``), the others non-centred
conditionally on them (``z``). Same model as the centred one, different sampler coordinates.

References: the centred model's log density plus the log-Jacobian of z -> phi, computed
independently from the conditional covariance of the non-centred members given the centred
ones (``det S_NN^2 = det(Omega_NN - Omega_NC Omega_CC^-1 Omega_CN)``, with Omega built in the
model file's order from omega and the correlations); recovery of simulated parameters.
"""

import dataclasses

import jax
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density
from test_inference_fit import simulate
from test_inference_model import COVARIATES, make_df
from test_inference_posthoc import model_draws

from il2pkpd.errors import ModelFileError
from il2pkpd.inference import fit_population_model, prepare, to_datatree

POP4 = {"covariance": "block"}


def _pm(parametrization, population=POP4, model="two_cmt_iv", n=6, **kw):
    pm, *_ = prepare(model, make_df(n=n), population={**population,
                                                      "parametrization": parametrization},
                     residual={"CP": "lognormal"}, **kw)
    return pm


def _random_point(pm, seed):
    """A point of *pm*'s latent space (constrained values), drawn from its prior."""
    tr = handlers.trace(handlers.seed(pm, seed)).get_trace(obs=None)
    return {k: v["value"] for k, v in tr.items()
            if v["type"] == "sample" and not v["is_observed"] and k != "DV"}


_JITTED: dict = {}  # (kind, model) -> jitted function (the key keeps the model alive)


def _values(pm, point):
    """Every site's value (deterministics included) of *pm* at *point* (jitted trace)."""
    def run(pt):
        tr = handlers.trace(handlers.substitute(handlers.seed(pm, 0), pt)).get_trace(
            obs=pm.observed)
        return {k: v["value"] for k, v in tr.items()}

    fn = _JITTED.setdefault(("values", pm), jax.jit(run))
    return {k: np.asarray(v) for k, v in fn(point).items()}


def _log_density(pm, point):
    fn = _JITTED.setdefault(("lp", pm), jax.jit(
        lambda pt: log_density(pm, (), {"obs": pm.observed}, pt)[0]))
    return float(fn(point))


def _omega_matrix(pm, values):
    """Omega in iiv (model) order from the values of omega_<P> and corr_<A>_<B>."""
    iiv = pm.spec.iiv
    sd = np.array([float(values[f"omega_{p}"]) for p in iiv])
    corr = np.eye(len(iiv))
    for a, b in pm.spec.correlations:
        i, j = iiv.index(a), iiv.index(b)
        corr[i, j] = corr[j, i] = float(values[f"corr_{a}_{b}"])
    return sd[:, None] * corr * sd[None, :]


def _centred_point(pm_mixed, pm_centred, point, values):
    """The centred model's coordinates of the same individual parameters."""
    iiv = pm_mixed.spec.iiv
    _, phi_names, _ = pm_centred.iiv_layout()
    # phi = log of the individual parameters (every IIV parameter here is positive)
    phi = np.stack([np.log(values[f"ind_{p}"]) for p in phi_names], axis=1)
    out = {k: v for k, v in point.items() if k not in ("phi", "z")}
    out["phi"] = phi
    # the mixed model's L_omega rows follow its centred-first order: re-factor the same
    # correlation matrix in the centred model's block order
    om = _omega_matrix(pm_mixed, values)
    for k, block in enumerate(pm_centred.spec.blocks):
        if len(block) > 1:
            idx = [iiv.index(p) for p in block]
            sub = om[np.ix_(idx, idx)]
            sd = np.sqrt(np.diag(sub))
            out[f"L_omega_{k + 1}"] = np.linalg.cholesky(sub / np.outer(sd, sd))
    return out


def _l_terms(pm, point):
    """Sum over L_omega sites of (log p(L), log LKJ(R)): log LKJ(R) = log p(L) - log |dR/dL|,
    the Jacobian of L -> R = L L^T over the strict lower triangle being prod_i L_ii^(K - i)."""
    lp = lkj = 0.0
    for k, L in point.items():
        if k.startswith("L_omega_"):
            L = np.asarray(L)
            d = L.shape[0]
            v = float(dist.LKJCholesky(d, pm.spec.lkj_concentration).log_prob(L))
            lp += v
            lkj += v - sum((d - i) * np.log(L[i - 1, i - 1]) for i in range(1, d + 1))
    return lp, lkj


def _log_jacobian(pm, om):
    """log |d phi / d (sampled coordinates)| summed over subjects, from Omega (model order):
    the members of each block are taken centred first, then non-centred, then partially
    centred (each group in model order); a non-centred member k contributes log s_k per
    subject and a partially centred one (1 - w_k) log s_k (per-subject weights: the sum of
    1 - w_ik), s_k^2 being its variance given the members before it (a Schur complement of
    Omega)."""
    iiv = list(pm.spec.iiv)
    c = set(pm.spec.centred_parameters)
    pw = pm.spec.partial_weights
    total = 0.0
    for block in pm.spec.blocks:
        order = ([p for p in block if p in c] + [p for p in block if p not in c and p not in pw]
                 + [p for p in block if p in pw])
        for r, p in enumerate(order):
            if p in c:
                continue
            k = iiv.index(p)
            prev = [iiv.index(q) for q in order[:r]]
            var = om[k, k]
            if prev:
                var -= om[k, prev] @ np.linalg.solve(om[np.ix_(prev, prev)], om[prev, k])
            w = np.broadcast_to(np.asarray(pw.get(p, 0.0), float), (pm.n_subjects,))
            total += np.sum(1.0 - w) * 0.5 * np.log(var)
    return total


CASES = [
    # full block, centred members not first in the block: L_omega is reordered
    (POP4, {"centred": ["V1", "V2"]}, {}),
    # the benchmark's choice, as the CLI-style text
    (POP4, "centred=CL,V1", {}),
    # a 2x2 block with one centred member, two diagonal parameters (one centred), covariates
    ({"blocks": [["CL", "Q"]]}, {"noncentred": ["CL", "V2"]},
     {"covariates": {"cl_wt": COVARIATES["cl_wt"]}}),
    # partially centred members after the centred ones
    (POP4, {"centred": ["CL", "V1"], "partial": {"Q": 0.5, "V2": 0.3}}, {}),
    # partial in a 2x2 block after a non-centred member, and on a diagonal parameter
    ({"blocks": [["CL", "Q"]]}, {"partial": {"CL": 0.6, "V1": 0.4}},
     {"covariates": {"cl_wt": COVARIATES["cl_wt"]}}),
    # one weight per subject (six subjects; 0 and 1 among them), next to a single weight
    (POP4, {"centred": ["CL"], "partial": {"Q": [0.1, 0.9, 0.5, 0.0, 1.0, 0.3], "V2": 0.3}},
     {}),
    ({"blocks": [["CL", "Q"]]}, {"partial": {"CL": [0.6, 0.2, 0.95, 0.4, 0.7, 0.05]}},
     {"covariates": {"cl_wt": COVARIATES["cl_wt"]}}),
]


@pytest.mark.parametrize("population,parametrization,kw", CASES)
def test_mixed_log_density_is_centred_plus_log_jacobian(population, parametrization, kw):
    pm_m = _pm(parametrization, population, **kw)
    pm_c = _pm("centred", population, **kw)
    assert pm_m.spec.parametrization == "mixed" and pm_c.spec.parametrization == "centred"
    _, c_names, n_names = pm_m.iiv_layout()
    partial = pm_m.spec.partial_weights
    assert set(c_names) | set(n_names) | set(partial) == set(pm_m.spec.iiv)
    iiv = list(pm_m.spec.iiv)
    for seed in range(3):
        point = _random_point(pm_m, seed)
        if c_names:
            assert point["phi"].shape == (pm_m.n_subjects, len(c_names))
        if n_names:
            assert point["z"].shape == (pm_m.n_subjects, len(n_names))
        for p in partial:
            assert point[f"z_{p}"].shape == (pm_m.n_subjects,)
        vals_m = _values(pm_m, point)
        cpoint = _centred_point(pm_m, pm_c, point, vals_m)
        vals_c = _values(pm_c, cpoint)
        om = _omega_matrix(pm_m, vals_m)
        log_jac = _log_jacobian(pm_m, om)
        # the LKJ prior is on the correlation matrix, whatever its order; its Cholesky factor
        # (the sampled coordinate) depends on the order, so the L_omega terms are compared as
        # densities of the correlation matrix
        (l_m, lkj_m), (l_c, lkj_c) = _l_terms(pm_m, point), _l_terms(pm_c, cpoint)
        np.testing.assert_allclose(lkj_m, lkj_c, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(_log_density(pm_m, point) - l_m,
                                   _log_density(pm_c, cpoint) - l_c
                                   + log_jac, rtol=1e-10, atol=1e-8)
        # the same individual parameters and the same correlations
        for p in iiv:
            np.testing.assert_allclose(vals_m[f"ind_{p}"], vals_c[f"ind_{p}"], rtol=1e-10)
        for a, b in pm_m.spec.correlations:
            np.testing.assert_allclose(vals_c[f"corr_{a}_{b}"], vals_m[f"corr_{a}_{b}"],
                                       rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("word,listed", [("centred", ["CL", "V1", "Q", "V2"]),
                                         ("noncentred", []), ("centred", []),
                                         ("noncentred", ["CL", "V1", "Q", "V2"])])
def test_all_or_none_listed_is_the_plain_form(word, listed):
    """Listing every IIV parameter (or none) gives exactly the centred / non-centred model:
    same spec, same sites, same log density."""
    pm = _pm({word: listed})
    full = "centred" if (word == "centred") == bool(listed) else "noncentred"
    ref = _pm(full)
    assert pm.spec == ref.spec
    point = _random_point(ref, 4)
    assert set(point) == set(_random_point(pm, 4))
    np.testing.assert_allclose(_log_density(pm, point), _log_density(ref, point), rtol=1e-12)


@pytest.mark.parametrize("value,full", [
    ({"partial": {"CL": 1, "V1": 1.0, "Q": 1, "V2": 1}}, "centred"),
    ({"centred": ["CL", "V1"], "partial": {"Q": 1, "V2": 1.0}}, "centred"),
    ({"partial": {"CL": 0, "Q": 0.0}}, "noncentred"),
])
def test_weights_zero_and_one_are_the_plain_forms(value, full):
    assert _pm(value).spec == _pm(full).spec


def test_centred_true_overrides_the_mixed_list():
    """FOCE-I's conversion (dataclasses.replace(spec, centred=True)) gives the fully centred
    model from a mixed one."""
    pm = _pm({"centred": ["CL", "V1"]})
    pmc = dataclasses.replace(pm, spec=dataclasses.replace(pm.spec, centred=True))
    assert pmc.spec.centred_parameters == pm.spec.iiv
    assert pmc.iiv_site_dims() == {"phi": ("iiv", ("CL", "V1", "Q", "V2"))}
    assert "z" not in _random_point(pmc, 0)
    assert "IIV parametrization: mixed (centred: CL, V1; non-centred: Q, V2)" in (
        pm.spec.describe())


def test_posthoc_eta_and_datatree_labels_of_a_mixed_fit():
    """eta_<P> from the replay equals log(ind_P) - log(TV) - covariate term for both forms;
    phi and z carry their own IIV dimensions, labelled by parameter, also in the prior group."""
    pm = _pm({"centred": ["V1"], "partial": {"Q": 0.5}}, {"blocks": [["CL", "V1"]]},
             covariates={"cl_wt": COVARIATES["cl_wt"]})
    s = model_draws(pm, n_draw=8, seed=2)
    dt = to_datatree(pm, s, posterior_predictive=False, n_prior=20)
    post = dt["posterior"]
    assert post["phi"].dims == ("chain", "draw", "subject", "iiv_centred")
    assert list(post["phi"]["iiv_centred"].values) == ["V1"]
    assert post["z"].dims == ("chain", "draw", "subject", "iiv_noncentred")
    assert list(post["z"]["iiv_noncentred"].values) == ["CL", "V2"]
    assert post["z_Q"].dims == ("chain", "draw", "subject")
    wt = pm.covariates["WT"]
    loc_cl = np.log(s["CL"])[..., None] + s["beta_CL_WT"][..., None] * np.log(wt / 70.0)
    np.testing.assert_allclose(post["eta_CL"].values, np.log(s["ind_CL"]) - loc_cl, atol=1e-10)
    for p in ("V1", "Q", "V2"):
        np.testing.assert_allclose(post[f"eta_{p}"].values,
                                   np.log(s[f"ind_{p}"]) - np.log(s[p])[..., None], atol=1e-10)
    np.testing.assert_allclose(post["eta_V1"].values,
                               s["phi"][..., 0] - np.log(s["V1"])[..., None], atol=1e-10)
    assert "prior" in dt.children and dt["prior"]["z"].sizes["iiv_noncentred"] == 2
    assert dt["prior"]["z_Q"].dims == ("chain", "draw", "subject")


@pytest.mark.parametrize("value,needle", [
    ({"centred": ["CL", "KX"]}, "unknown parameter 'KX'"),
    ({"centred": ["V2"]}, "parameter 'V2' has no inter-individual variability"),
    ({"centered": ["CL"], "noncentred": ["V1"]}, "not both"),
    ({"middle": ["CL"]}, "key 'middle' is not allowed"),
    ("semicentred", "'semicentred' is not allowed"),
    ("centred=CL,CL", "'CL' is listed twice"),
    ({"partial": {"Q": 1.5}}, "partial Q: expected a centring weight between 0"),
    ({"partial": {"V2": 0.5}}, "partial: parameter 'V2' has no inter-individual"),
    ({"partial": ["Q"]}, "partial: expected a table"),
    ({"centred": ["CL", "Q"], "partial": {"Q": 0.5}}, "'Q' is both in centred and in partial"),
    ({"noncentred": "Q, KX"}, "unknown parameter 'KX'"),
])
def test_bad_parametrization_values_name_the_problem(value, needle):
    with pytest.raises(ModelFileError, match=needle):
        prepare("two_cmt_iv", make_df(n=3), population={"iiv": ["CL", "V1", "Q"],
                                                        "parametrization": value})


def test_cli_style_override_raises_option_error():
    """A bad --parametrization (population override with cli=True) is an OptionError naming
    the option and the parameter."""
    from il2pkpd.errors import OptionError

    with pytest.raises(OptionError, match="--parametrization centred: unknown parameter 'KX'"):
        prepare("two_cmt_iv", make_df(n=3), population={"parametrization": "centred=CL,KX"},
                cli=True)
    pm, *_ = prepare("two_cmt_iv", make_df(n=3), population={"parametrization": "centred=CL"},
                     cli=True)
    assert pm.spec.centred_parameters == ("CL",) and pm.spec.parametrization == "mixed"


def test_small_mixed_fit_recovers_the_typical_values():
    """one_cmt_iv, 24 subjects, CL centred and V non-centred: 90% intervals cover the truth."""
    truth = {"CL": 4.0, "V": 50.0, "omega_CL": 0.3, "omega_V": 0.2, "sigma_CP": 0.1,
             "L_omega_1": np.linalg.cholesky(np.array([[1.0, 0.4], [0.4, 1.0]]))}
    pm, *_ = prepare("one_cmt_iv", make_df(n=24), residual={"CP": "lognormal"},
                     population={"covariance": "block", "parametrization": {"centred": ["CL"]}})
    pm = simulate(pm, truth, seed=5)
    res = fit_population_model(pm, "nuts", chains=2, warmup=250, samples=250, seed=3,
                               progress_bar=False, posterior_predictive=False, prior_draws=0,
                               pred_draws=20)
    s = res.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < truth[name] < s.loc[name, "q95"], (name, s.loc[name])
    assert 0.5 * 0.3 < s.loc["omega_CL", "median"] < 1.6 * 0.3
    assert s["r_hat"].max() < 1.05 and res.info["divergences"] == 0
    assert "corr_CL_V" in s.index
    ind = res.individual
    assert len(ind) == 24 and np.all(np.isfinite(ind.filter(like="CL").to_numpy(float)))
    assert set(res.info["eta_shrinkage"]) == {"CL", "V"}


def test_mixed_gradient_is_finite_and_matches_finite_differences():
    """The potential's gradient in the mixed coordinates (triangular solve included)."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer import init_to_median
    from numpyro.infer.util import initialize_model

    pm = _pm({"centred": ["V1", "Q"]}, n=3)
    info = initialize_model(jax.random.PRNGKey(0), pm, model_kwargs={"obs": pm.observed},
                            init_strategy=init_to_median(num_samples=15))
    x0, unravel = ravel_pytree(info.param_info.z)
    x0 = x0 + 0.1 * jax.random.normal(jax.random.PRNGKey(1), x0.shape)

    def f(x):
        return info.potential_fn(unravel(x))

    g = np.asarray(jax.grad(f)(x0))
    assert np.all(np.isfinite(g))
    rng = np.random.default_rng(0)
    for _ in range(3):
        d = rng.standard_normal(x0.shape)
        h = 1e-5
        fd = (float(f(x0 + h * d)) - float(f(x0 - h * d))) / (2 * h)
        np.testing.assert_allclose(g @ d, fd, rtol=1e-5, atol=1e-6)


def test_eta_shrinkage_and_suggested_parametrization():
    """Shrinkage 1 - sd(posterior mean eta_i) / omega on constructed draws: eta_i = a_i + noise
    with sd(a_i) = 0.95 omega (shrinkage 5%) for CL and 0.5 omega (50%) for Q."""
    import xarray as xr

    from il2pkpd.inference._fit import eta_shrinkage, suggest_parametrization, suggest_partial

    pm = _pm("noncentred", {"iiv": ["CL", "Q"], "covariance": "block"})
    rng = np.random.default_rng(0)
    n_s, omega = 200, 0.3
    data = {}
    for p, frac in (("CL", 0.95), ("Q", 0.5)):
        a = rng.standard_normal(n_s)
        a = (a - a.mean()) / a.std(ddof=1) * frac * omega
        noise = rng.standard_normal((2, 500, n_s)) * 0.2
        noise -= noise.mean(axis=(0, 1))  # posterior means exactly a
        data[f"eta_{p}"] = (("chain", "draw", "subject"), a + noise)
        data[f"omega_{p}"] = (("chain", "draw"), np.full((2, 500), omega))
    shrink = eta_shrinkage(xr.Dataset(data), pm.spec)
    np.testing.assert_allclose([shrink["CL"], shrink["Q"]], [0.05, 0.5], atol=1e-10)
    assert suggest_parametrization(shrink, pm.spec) == {"centred": ["CL"]}
    assert suggest_parametrization({"CL": 0.1, "Q": 0.2}, pm.spec) == "centred"
    assert suggest_parametrization({"CL": 0.4, "Q": 0.6}, pm.spec) == "noncentred"
    # partial weights (1 - s)^2, clipped to [0, 1] and rounded; model order
    assert suggest_partial(shrink, pm.spec) == {"CL": 0.9, "Q": 0.25}
    assert suggest_partial({"Q": 1.2, "CL": -0.1}, pm.spec) == {"CL": 1.0, "Q": 0.0}
    mixed = _pm({"centred": ["CL"]}, {"iiv": ["CL", "Q"], "covariance": "block"})
    assert mixed.spec.parametrization_value() == {"centred": ["CL"]}
