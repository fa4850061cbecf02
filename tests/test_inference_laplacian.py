"""Laplacian conditional estimation against an exact marginal posterior mode.

For a linear Gaussian random-effects model the Laplace approximation of the marginal is
exact, so the estimator must land on the mode of the closed-form marginal posterior. The
model: one_cmt_iv observed immediately after the dose (t = 1e-6 h, so C = DOSE / V_i to 1e-8),
log-normal residual error, IIV on V only, CL fixed:
log y_ij = log(DOSE) - log TV_V - eta_i + eps_ij, i.e. each subject's log observations are
MVN(log DOSE - log TV_V, sigma^2 I + omega^2 11').
"""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from il2pkpd.inference import fit_population_model, prepare
from il2pkpd.inference._laplacian import run_laplacian

DOSE = 100.0
N_SUBJ, N_REP = 30, 4
TRUE_V, OMEGA, SIGMA = 50.0, 0.3, 0.1


def _data(seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, N_SUBJ + 1):
        v_i = TRUE_V * np.exp(OMEGA * rng.standard_normal())
        rows.append(dict(ID=i, TIME=0.0, AMT=DOSE, EVID=1, CMT=1, DV=np.nan, MDV=1))
        for j in range(N_REP):
            y = DOSE / v_i * np.exp(SIGMA * rng.standard_normal())
            rows.append(dict(ID=i, TIME=1e-6 * (j + 1), AMT=0.0, EVID=0, CMT=1, DV=y, MDV=0))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def linear_case():
    df = _data()
    pm, *_ = prepare("one_cmt_iv", df, fix={"CL": 4.0}, population={"iiv": ["V"]},
                     residual={"CP": "lognormal"})
    return pm, df


def _exact_mode(pm, df):
    """Mode of the closed-form marginal posterior in (log V, log omega, log sigma)."""
    obs = df[df.EVID == 0]
    logy = [np.log(g.DV.to_numpy()) for _, g in obs.groupby("ID")]
    spec = pm.spec
    pv = spec.priors["V"].to_numpyro("positive")
    po = spec.omega_priors["omega_V"].to_numpyro("positive")
    ps = next(r for r in spec.residuals).priors["sigma_CP"].to_numpyro("positive")

    def neg(u):
        v, om, sg = np.exp(u)
        lp = sum(float(d.log_prob(x)) + np.log(x) for d, x in ((pv, v), (po, om), (ps, sg)))
        cov = sg ** 2 * np.eye(N_REP) + om ** 2 * np.ones((N_REP, N_REP))
        mu = np.full(N_REP, np.log(DOSE) - np.log(v))
        ll = sum(stats.multivariate_normal(mu, cov).logpdf(y) for y in logy)
        return -(lp + ll)

    r = optimize.minimize(neg, np.log([40.0, 0.2, 0.2]), method="Nelder-Mead",
                          options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 20000})
    return np.exp(r.x), r


def test_laplacian_mode_equals_exact_marginal_mode(linear_case):
    pm, df = linear_case
    exact, _ = _exact_mode(pm, df)
    smp, pmc, res = run_laplacian(pm, pm.observed, draws=400, seed=2)
    assert pmc.spec.centred
    got = np.array([float(res.mode["V"]), float(res.mode["omega_V"]),
                    float(res.mode["sigma_CP"])])
    np.testing.assert_allclose(got, exact, rtol=2e-3)
    assert res.clipped == 0 and res.converged
    # draws centred near the mode, with a spread that is neither degenerate nor huge
    log_om = np.log(smp["omega_V"])
    assert abs(np.median(log_om) - np.log(exact[1])) < 0.05
    assert 0.03 < np.std(log_om) < 0.5


def test_laplacian_fit_recovers_iiv_where_the_joint_mode_cannot(linear_case):
    pm, _ = linear_case
    lap = fit_population_model(pm, "laplacian", seed=0, draws=300,
                               posterior_predictive=False)
    mp = fit_population_model(pm, "map", seed=0, posterior_predictive=False)
    s_lap = lap.summary.set_index("parameter")
    s_map = mp.summary.set_index("parameter")
    assert 0.6 * OMEGA < s_lap.loc["omega_V", "median"] < 1.5 * OMEGA
    assert s_lap.loc["omega_V", "q5"] < s_lap.loc["omega_V", "q95"]
    # the non-centred joint mode inflates the IIV SD towards the prior scale
    assert s_map.loc["omega_V", "median"] > 1.5 * s_lap.loc["omega_V", "median"]
    post = lap.datatree["posterior"]
    assert post.sizes["draw"] == 300 and "ind_V" in post
    assert lap.info["method"] == "laplacian" and lap.warnings == []
