"""NPDE, VPC, shrinkage and LOO computations of il2pkpd.report against cases worked by hand."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from il2pkpd.report import (
    assign_bins,
    loo_summary,
    npde,
    pde_subject,
    shrinkage_table,
    time_bin_edges,
    vpc_table,
)
from il2pkpd.report.fitdir import FitData

# Four simulated replicates of a subject with two observations. By hand:
# E = (1, 2); deviations (-1,-2), (1,2), (1,0), (-1,0); with divisor K-1 = 3,
# V = [[4/3, 4/3], [4/3, 8/3]] = s^2 [[1, 1], [1, 2]] with s^2 = 4/3, so the Cholesky factor is
# L = s [[1, 0], [1, 1]] and L^-1 = (1/s) [[1, 0], [-1, 1]]. Decorrelated deviations (times s):
# (d1, d2 - d1): (-1,-1), (1,1), (1,-1), (-1,1).
YSIM = np.array([[0.0, 0.0], [2.0, 4.0], [2.0, 2.0], [0.0, 2.0]])
PHI_INV_075 = 0.6744897501960817  # standard normal 75th percentile (tables)


def test_pd_without_decorrelation_is_fraction_of_simulations_below():
    # y = (0.5, 3.5): column 1 (0, 2, 2, 0) has 2 of 4 below 0.5; column 2 (0, 4, 2, 2) 3 of 4.
    pde, done = pde_subject(np.array([0.5, 3.5]), YSIM, decorrelate=False)
    assert not done
    np.testing.assert_allclose(pde, [0.5, 0.75])


def test_pde_decorrelates_with_the_cholesky_factor():
    # y = (2.5, 3.5): deviation (1.5, 1.5) -> decorrelated (1.5, 0) / s.
    # pde1: all 4 simulated d1 in {-1, 1} are below 1.5 -> 1 -> bounded to 1 - 1/4 = 0.75.
    # pde2: simulated d2 in {-1, 1, -1, 1}: 2 of 4 below 0 -> 0.5 (raw pd would be 0.75).
    pde, done = pde_subject(np.array([2.5, 3.5]), YSIM)
    assert done
    np.testing.assert_allclose(pde, [0.75, 0.5])
    raw, _ = pde_subject(np.array([2.5, 3.5]), YSIM, decorrelate=False)
    np.testing.assert_allclose(raw, [1.0 - 0.25, 0.75])


def test_pde_lower_bound_is_one_over_k():
    pde, _ = pde_subject(np.array([-10.0, -10.0]), YSIM)
    np.testing.assert_allclose(pde, [0.25, 0.25])


def test_npde_per_subject_with_censoring_and_fallback():
    # Subject 1: the hand case above. Subject 2: its second observation is censored (left out),
    # its first is compared with (5, 6, 7, 8): 9 is above all -> 0.75 after bounding.
    # Subject 3: the simulated values of its two observations are identical in every replicate
    # (singular covariance): no decorrelation, pd = (2 of 4 below 1.5, 0 of 4 below 0.9 -> 1/4).
    ids = np.array([1, 1, 2, 2, 3, 3])
    y = np.array([2.5, 3.5, 9.0, 0.0, 1.5, 0.9])
    ysim = np.column_stack([
        YSIM[:, 0], YSIM[:, 1],
        [5.0, 6.0, 7.0, 8.0], [1.0, 1.0, 1.0, 1.0],
        [1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0],
    ])
    cens = np.array([False, False, False, True, False, False])
    out = npde(ids, y, ysim, censored=cens)
    np.testing.assert_allclose(out["pde"].to_numpy()[[0, 1, 2, 4, 5]],
                               [0.75, 0.5, 0.75, 0.5, 0.25])
    assert np.isnan(out["pde"][3]) and np.isnan(out["npde"][3])
    assert out["decorrelated"].tolist() == [True, True, True, False, False, False]
    np.testing.assert_allclose(out["npde"].to_numpy()[[0, 1, 4, 5]],
                               [PHI_INV_075, 0.0, 0.0, -PHI_INV_075], atol=1e-12)


def test_time_bins_one_per_nominal_time_or_quantiles():
    np.testing.assert_allclose(time_bin_edges(np.array([1.0, 1, 2, 4, 4]), 8), [1, 1.5, 3, 4])
    edges = time_bin_edges(np.arange(1.0, 7.0), 3)
    np.testing.assert_allclose(edges, [1.0, 1 + 5 / 3, 1 + 10 / 3, 6.0])
    assert assign_bins(np.arange(1.0, 7.0), edges).tolist() == [0, 0, 1, 1, 2, 2]


TIME = np.array([1.0, 1, 1, 2, 2, 2])
DV = np.array([1.0, 2, 3, 10, 20, 30])
SIMS = np.array([[1.0, 2, 3, 10, 20, 30], [2.0, 3, 4, 20, 30, 40], [3.0, 4, 5, 30, 40, 50]])


def test_vpc_percentiles_without_correction():
    tab = vpc_table(TIME, DV, None, SIMS, n_bins=2)
    # bin 1: observed (1, 2, 3): p5 at position 0.1 -> 1.1, p50 2, p95 at 1.9 -> 2.9.
    # simulated medians per replicate (2, 3, 4): 90 % interval 2.1 .. 3.9, median 3.
    # bin 2: observed median 20; simulated medians (20, 30, 40): 21, 30, 39.
    np.testing.assert_allclose(tab["obs_p5"], [1.1, 11.0])
    np.testing.assert_allclose(tab["obs_p50"], [2.0, 20.0])
    np.testing.assert_allclose(tab["obs_p95"], [2.9, 29.0])
    np.testing.assert_allclose(tab[["sim_p50_lo", "sim_p50_med", "sim_p50_hi"]].to_numpy(),
                               [[2.1, 3.0, 3.9], [21.0, 30.0, 39.0]])
    assert tab["n"].tolist() == [3, 3]
    assert tab["t_mid"].tolist() == [1.0, 2.0]
    assert np.isnan(tab["obs_blq"]).all()


def test_vpc_prediction_correction():
    # bin 2 has PRED (1, 2, 4), median 2: factors (2, 1, 0.5).
    # observed (10, 20, 30) -> (20, 20, 15): sorted (15, 20, 20): p5 = 15.5, p50 = 20, p95 = 20.
    # replicates -> (20, 20, 15), (40, 30, 20), (60, 40, 25): medians 20, 30, 40.
    pred = np.array([1.0, 1, 1, 1, 2, 4])
    tab = vpc_table(TIME, DV, pred, SIMS, n_bins=2)
    row = tab.iloc[1]
    assert row["obs_p5"] == pytest.approx(15.5)
    assert row["obs_p50"] == pytest.approx(20.0)
    assert row["obs_p95"] == pytest.approx(20.0)
    assert row["sim_p50_med"] == pytest.approx(30.0)
    # bin 1 has PRED all 1: unchanged
    assert tab.iloc[0]["obs_p50"] == pytest.approx(2.0)


def test_vpc_prediction_correction_leaves_zero_pred_uncorrected():
    # bin 2 has PRED (0, 2, 4): the pre-dose-like 0 keeps its value; median of the usable
    # PREDs is 3: factors (1, 1.5, 0.75); observed (10, 20, 30) -> (10, 30, 22.5): p50 22.5
    pred = np.array([1.0, 1, 1, 0, 2, 4])
    with np.errstate(all="raise"):
        tab = vpc_table(TIME, DV, pred, SIMS, n_bins=2)
    assert tab.iloc[1]["obs_p50"] == pytest.approx(22.5)
    assert np.isfinite(tab[["obs_p5", "obs_p50", "obs_p95", "sim_p50_med"]].to_numpy()).all()


def test_vpc_censoring_and_blq_fraction():
    # One bin, LLOQ 2, observations (BLQ, BLQ, 5, 7): sorted (-inf, -inf, 5, 7).
    # p50 at position 1.5 falls among the censored values -> NaN; p95 at 2.85 -> 6.7.
    # Replicates (1, 3, 4, 6), (1, 1, 1, 8), (3, 4, 5, 6): fractions below 2: 0.25, 0.75, 0.
    # Their p95: 5.7, censored (-inf), 5.85 -> median 5.7, upper 5.835, lower unknown.
    # Fractions sorted (0, 0.25, 0.75): 5 % -> 0.025, median 0.25, 95 % -> 0.7.
    t = np.ones(4)
    dv = np.array([2.0, 2.0, 5.0, 7.0])
    blq = np.array([True, True, False, False])
    sims = np.array([[1.0, 3, 4, 6], [1.0, 1, 1, 8], [3.0, 4, 5, 6]])
    tab = vpc_table(t, dv, None, sims, blq=blq, lloq=np.full(4, 2.0))
    row = tab.iloc[0]
    assert math.isnan(row["obs_p50"]) and math.isnan(row["obs_p5"])
    assert row["obs_p95"] == pytest.approx(6.7)
    assert row["obs_blq"] == pytest.approx(0.5)
    assert (row["sim_blq_lo"], row["sim_blq_med"], row["sim_blq_hi"]) == pytest.approx(
        (0.025, 0.25, 0.7))
    assert row["sim_p95_med"] == pytest.approx(5.7)
    assert row["sim_p95_hi"] == pytest.approx(5.835)
    assert math.isnan(row["sim_p95_lo"])


def _fitdata(groups: dict[str, xr.Dataset]) -> FitData:
    dt = xr.DataTree.from_dict(groups)
    obs = pd.DataFrame({"ID": [1], "TIME": [0.0], "DVID": [1], "DV": [0.0], "BLQ": [False],
                        "LLOQ": [np.nan], "OUTPUT": ["CP"]})
    return FitData(fit_dir=Path("."), datatree=dt, obs=obs, pred=None, ipred=None, ppc=None,
                   summary=None, model=None, model_path=None, dataset=None)


def test_shrinkage_from_known_posterior_means():
    # eta posterior means (-0.3, 0, 0.3): SD (divisor n-1) 0.3; omega 0.6 -> shrinkage 0.5.
    # Draw noise with zero mean per subject does not change the means.
    noise = np.array([-0.1, 0.1, -0.2, 0.2])[None, :, None]
    eta = np.array([-0.3, 0.0, 0.3])[None, None, :] + noise
    post = xr.Dataset({
        "eta_CL": (("chain", "draw", "subject"), eta),
        "omega_CL": (("chain", "draw"), np.array([[0.5, 0.7, 0.6, 0.6]])),
    })
    tab = shrinkage_table(_fitdata({"posterior": post}))
    assert tab["random_effect"].tolist() == ["eta_CL"]
    assert tab["shrinkage"].iloc[0] == pytest.approx(0.5)


def test_loo_adds_constant_observations_exactly():
    rng = np.random.default_rng(3)
    mu = rng.normal(0.0, 0.1, size=(2, 300))
    y = np.array([-0.5, 0.2, 0.9, 0.1])
    ll = -0.5 * (y[None, None, :] - mu[..., None]) ** 2 - 0.5 * np.log(2 * np.pi)
    post = xr.Dataset({"mu": (("chain", "draw"), mu)})
    base = _fitdata({"posterior": post,
                     "log_likelihood": xr.Dataset({"DV": (("chain", "draw", "obs"), ll)})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = az.loo(base.datatree, pointwise=True)
    tab, _ = loo_summary(base)
    assert tab["estimate"].iloc[0] == pytest.approx(float(ref.elpd))
    assert tab["se"].iloc[0] == pytest.approx(float(ref.se))
    # A censored observation with log likelihood log(0.8) in every draw adds exactly log(0.8).
    ll2 = np.concatenate([ll, np.full((2, 300, 1), np.log(0.8))], axis=-1)
    more = _fitdata({"posterior": post,
                     "log_likelihood": xr.Dataset({"DV": (("chain", "draw", "obs"), ll2)})})
    tab2, _ = loo_summary(more)
    assert tab2["estimate"].iloc[0] == pytest.approx(float(ref.elpd) + np.log(0.8))
    assert tab2.attrs["n_const"] == 1
    assert np.isnan(tab2.attrs["pareto_k"][-1])


def test_shrinkage_from_non_centred_z_over_iiv():
    # z posterior means (-0.5, 0, 0.5) for CL, omega_CL 0.6 in every draw: eta means
    # (-0.3, 0, 0.3), SD 0.3 -> shrinkage 0.5. For V: z means (-1, 0, 1), omega_V 0.2 ->
    # eta means (-0.2, 0, 0.2), SD 0.2 -> shrinkage 0.
    zm = np.array([[-0.5, -1.0], [0.0, 0.0], [0.5, 1.0]])
    z = zm[None, None] + np.array([-0.1, 0.1])[None, :, None, None]
    post = xr.Dataset(
        {"z": (("chain", "draw", "subject", "iiv"), z),
         "omega_CL": (("chain", "draw"), np.full((1, 2), 0.6)),
         "omega_V": (("chain", "draw"), np.full((1, 2), 0.2))},
        coords={"iiv": ["CL", "V"]},
    )
    tab = shrinkage_table(_fitdata({"posterior": post})).set_index("random_effect")
    assert tab.loc["eta_CL", "shrinkage"] == pytest.approx(0.5)
    assert tab.loc["eta_V", "shrinkage"] == pytest.approx(0.0, abs=1e-12)


def test_npde_of_data_from_the_simulated_distribution_are_independent_standard_normal():
    # Observations drawn from the same correlated normal distribution as the simulations:
    # NPDE must be close to N(0, 1) and uncorrelated within subjects, while the raw
    # prediction discrepancies keep the correlation.
    rng = np.random.default_rng(7)
    n_sub, n_obs, k = 400, 3, 500
    cov = np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.8], [0.6, 0.8, 1.0]]) * 0.04
    mean = np.array([10.0, 6.0, 3.0])
    chol = np.linalg.cholesky(cov)
    y = mean + rng.standard_normal((n_sub, n_obs)) @ chol.T
    sims = mean + rng.standard_normal((k, n_sub, n_obs)) @ chol.T
    ids = np.repeat(np.arange(n_sub), n_obs)
    out = npde(ids, y.reshape(-1), sims.reshape(k, -1))
    z = out["npde"].to_numpy().reshape(n_sub, n_obs)
    assert abs(z.mean()) < 0.1
    assert 0.9 < z.std() < 1.1
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.15
    raw = npde(ids, y.reshape(-1), sims.reshape(k, -1), decorrelate=False)
    zr = raw["npde"].to_numpy().reshape(n_sub, n_obs)
    assert np.corrcoef(zr[:, 0], zr[:, 1])[0, 1] > 0.6
