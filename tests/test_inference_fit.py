"""Fitting: recovery of known parameters from data simulated by the package's own model."""

import dataclasses

import jax
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from numpyro.infer import Predictive
from test_inference_model import make_df

from il2pkpd.inference import fit_population_model, prepare
from il2pkpd.inference.results import SUMMARY_COLUMNS

TRUE = {"CL": 4.0, "V": 50.0, "omega_CL": 0.3, "omega_V": 0.2, "sigma_CP": 0.1}
LLOQ = 0.3  # censors about half of the 24-h samples (M3 in the fit)


def simulate(pm, truth, seed, lloq=LLOQ):
    """Simulate DV with the model itself (obs=None) and censor values below *lloq*."""
    sim = Predictive(pm, params={k: np.asarray(v) for k, v in truth.items()},
                     num_samples=1)(jax.random.PRNGKey(seed))
    dv = np.asarray(sim["DV"][0])
    blq = dv < lloq
    obs = dataclasses.replace(pm.obs, dv=np.where(blq, lloq, dv), blq=blq,
                              lloq=np.full_like(dv, lloq))
    return dataclasses.replace(pm, obs=obs)


@pytest.fixture(scope="module")
def sim_pm():
    pm, *_ = prepare("one_cmt_iv", make_df(n=24), residual={"CP": "lognormal"})
    pm = simulate(pm, TRUE, seed=11)
    assert 0 < pm.obs.blq.sum() < 24
    return pm


@pytest.fixture(scope="module")
def nuts_result(sim_pm):
    # sequential: the same draws whether or not an earlier test made JAX split the CPU into
    # devices (parallel chains round differently, and the draws with them)
    return fit_population_model(sim_pm, "nuts", chains=2, warmup=300, samples=300, seed=1,
                                chain_method="sequential", progress_bar=False)


def test_nuts_90_percent_intervals_cover_true_typical_values(nuts_result):
    s = nuts_result.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert s.loc[name, "q5"] < TRUE[name] < s.loc[name, "q95"], (name, s.loc[name])
    # IIV and residual SDs land near the truth (24 subjects: loose)
    for name in ("omega_CL", "omega_V", "sigma_CP"):
        assert 0.5 * TRUE[name] < s.loc[name, "median"] < 1.6 * TRUE[name], name
    assert s["r_hat"].max() < 1.05
    # at most 1% of the 600 draws (these draws: 2, both in chain 2)
    assert nuts_result.info["divergences"] <= 6


def test_datatree_groups_dims_and_names(nuts_result, sim_pm):
    dt = nuts_result.datatree
    for g in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive",
              "observed_data", "constant_data"):
        assert g in dt.children, g
    post = dt["posterior"]
    assert post["ind_CL"].dims == ("chain", "draw", "subject")
    assert list(post["subject"].values) == list(sim_pm.ids)
    assert dt["log_likelihood"]["DV"].dims == ("chain", "draw", "obs")
    assert dt["log_likelihood"]["DV"].sizes["obs"] == len(sim_pm.obs.dv)
    cd = dt["constant_data"]
    for v in ("ID", "TIME", "DVID", "CMT", "BLQ", "LLOQ"):
        assert v in cd, v
    np.testing.assert_array_equal(dt["observed_data"]["DV"].values, sim_pm.obs.dv)
    assert "solver_ok" not in dt["observed_data"]
    assert list(nuts_result.summary.columns) == SUMMARY_COLUMNS
    assert list(nuts_result.summary["parameter"]) == ["CL", "V", "omega_CL", "omega_V",
                                                      "sigma_CP"]
    # pointwise log likelihood of the draws equals the model's own density (spot check)
    import warnings

    import arviz as az
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings on 600 draws are expected
        loo = az.loo(dt)
    assert np.isfinite(loo.elpd)


def test_individual_estimates_track_the_simulated_subjects(nuts_result, sim_pm):
    ind = nuts_result.individual
    assert list(ind["ID"]) == list(sim_pm.ids)
    assert {"CL", "CL_q5", "CL_q95", "V"} <= set(ind.columns)
    assert np.all(ind["CL_q5"] < ind["CL"]) and np.all(ind["CL"] < ind["CL_q95"])


def test_save_writes_files_atomically(nuts_result, tmp_path, monkeypatch):
    out = nuts_result.save(tmp_path / "fit")
    for f in ("posterior.nc", "summary.csv", "individual.csv", "fit.json", "_COMPLETE"):
        assert (out / f).is_file(), f
    back = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    assert set(back.children) >= {"posterior", "log_likelihood", "constant_data"}
    np.testing.assert_allclose(back["posterior"]["CL"].values,
                               nuts_result.datatree["posterior"]["CL"].values)
    back.close()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    # an interrupted save leaves no completion marker and no partial file
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.DataTree, "to_netcdf", boom)
    with pytest.raises(KeyboardInterrupt):
        nuts_result.save(tmp_path / "fit2")
    assert not (tmp_path / "fit2" / "_COMPLETE").exists()
    assert not (tmp_path / "fit2" / "posterior.nc").exists()
    assert [p.name for p in (tmp_path / "fit2").iterdir()] == []
    with pytest.raises(KeyboardInterrupt):
        nuts_result.save(out)  # overwriting a complete folder first removes its marker
    assert not (out / "_COMPLETE").exists()


def test_map_and_svi_find_the_typical_values(sim_pm):
    m = fit_population_model(sim_pm, "map", seed=0)
    s = m.summary.set_index("parameter")
    assert abs(s.loc["CL", "mean"] / TRUE["CL"] - 1) < 0.25
    assert abs(s.loc["V", "mean"] / TRUE["V"] - 1) < 0.25
    assert m.datatree["posterior"].sizes["draw"] == 1
    svi = fit_population_model(sim_pm, "svi", seed=0, draws=400, svi_steps=1000)
    s = svi.summary.set_index("parameter")
    for name in ("CL", "V"):
        assert abs(s.loc[name, "median"] / TRUE[name] - 1) < 0.15, name


@pytest.mark.slow
def test_laplace_draws_around_the_mode(sim_pm):
    lap = fit_population_model(sim_pm, "laplace", seed=0, draws=200)
    post = lap.datatree["posterior"]
    assert post.sizes["draw"] == 200
    assert np.all(np.isfinite(post["CL"].values))
    assert lap.info["hessian"]["clipped"] == 0
    s = lap.summary.set_index("parameter")
    assert abs(s.loc["CL", "median"] / TRUE["CL"] - 1) < 0.25


def test_diagnostic_warnings_name_the_problem():
    from il2pkpd.inference.results import diagnostics_warnings

    summary = pd.DataFrame({"parameter": ["CL", "V"], "r_hat": [1.2, 1.0],
                            "ess_bulk": [50.0, 2000.0], "ess_tail": [900.0, 2000.0]})
    msgs = diagnostics_warnings(summary, divergences=3, n_draws=4000, method="nuts")
    assert any("3 divergent" in m for m in msgs)
    assert any("R-hat" in m and "CL" in m and "V," not in m and "--thin" in m for m in msgs)
    assert any("effective sample size" in m and "CL" in m for m in msgs)
    assert diagnostics_warnings(summary, 0, 4000, "map") == []


def test_chain_warnings_name_the_chain_that_differs():
    from il2pkpd.inference.results import chain_warnings, summary_table

    rng = np.random.default_rng(0)
    v = rng.normal(50.0, 5.0, size=(4, 400))
    v[3] = rng.normal(30.0, 5.0, size=400)          # chain 4 elsewhere
    cl = rng.normal(4.0, 0.4, size=(4, 400))        # all chains agree
    post = xr.Dataset({"V": (("chain", "draw"), v), "CL": (("chain", "draw"), cl)})
    summary = summary_table(post, ["CL", "V"])
    assert summary.set_index("parameter").loc["V", "r_hat"] > 1.1
    msgs = chain_warnings(post, summary, step_size=[0.08, 0.07, 0.09, 0.02],
                          steps_per_draw=[63.0, 70.0, 61.0, 255.0])
    assert len(msgs) == 2
    assert "CL" not in msgs[0] and msgs[0].startswith("per-chain medians (chains 1-4)")
    got = [float(x) for x in msgs[0].split("V ")[1].split(". ")[0].split(", ")]
    np.testing.assert_allclose(got, np.median(v, axis=1), rtol=1e-3)
    assert msgs[1].startswith("chain 4 adapted a step size of 0.02 against 0.07-0.09")
    assert "255 leapfrog steps per draw (61-70)" in msgs[1]
    # similar step sizes, agreeing chains, or one chain: nothing to say
    ok = summary_table(post[["CL"]], ["CL"])
    assert chain_warnings(post, ok, [0.08, 0.07, 0.09, 0.05], None) == []
    assert chain_warnings(post.isel(chain=[0]), ok, [0.08], None) == []
    assert chain_warnings(post, ok, np.array([0.08, 0.07, 0.09, 0.02]), None)[0].startswith(
        "chain 4 adapted")                          # arrays as well as lists
    # --shared-step-size: the adapted values name the chain; no leapfrog comparison
    shared = chain_warnings(post, ok, [0.08, 0.07, 0.09, 0.02], [64.0, 64.0, 64.0, 64.0],
                            shared_step_size=0.075)
    assert len(shared) == 1 and shared[0].startswith(
        "chain 4 adapted a step size of 0.02 against 0.07-0.09 in the others (all chains "
        "sampled with their median, 0.075)")
    assert "leapfrog" not in shared[0]


@pytest.mark.slow
def test_two_cmt_block_iiv_recovery_larger():
    """two_cmt_iv with a full 4x4 IIV block, 48 subjects, 4 chains x (500 + 500).

    Measured: R-hat 1.028 on CL (non-centred) and 1.11 on an IIV SD (centred) at these
    settings, so convergence is checked at 1.05 here, not the 1.01 of a production run."""
    df = make_df(n=48, times=(0.25, 0.5, 1, 2, 4, 6, 8, 12, 24, 36, 48))
    df["DV"] = np.where(df["EVID"] == 0, 1.0, np.nan)
    df["BLQ"] = 0
    pm, *_ = prepare("two_cmt_iv", df, population={"covariance": "block"},
                     residual={"CP": "lognormal"})
    truth = {"CL": 4.0, "V1": 70.0, "Q": 4.0, "V2": 50.0, "omega_CL": 0.3, "omega_V1": 0.25,
             "omega_Q": 0.3, "omega_V2": 0.25, "sigma_CP": 0.15,
             "L_omega_1": np.linalg.cholesky(np.array([[1, .3, 0, 0], [.3, 1, 0, 0],
                                                       [0, 0, 1, .2], [0, 0, .2, 1.]]))}
    pm = simulate(pm, truth, seed=3, lloq=1e-3)
    res = fit_population_model(pm, "nuts", chains=4, warmup=500, samples=500, seed=2,
                               progress_bar=False)
    s = res.summary.set_index("parameter")
    for name in ("CL", "V1", "Q", "V2"):
        assert s.loc[name, "q5"] < truth[name] < s.loc[name, "q95"], name
    assert s["r_hat"].max() < 1.05


def test_nuts_started_from_map(sim_pm):
    """init="map": chains start from the (jittered) MAP estimate and sample normally."""
    res = fit_population_model(sim_pm, "nuts", chains=1, warmup=100, samples=150, seed=4,
                               init="map", progress_bar=False, posterior_predictive=False)
    s = res.summary.set_index("parameter")
    assert res.info["init"] == "map" and res.info["map_seconds"] > 0
    assert s.loc["CL", "q5"] < TRUE["CL"] < s.loc["CL", "q95"]
    assert "posterior_predictive" not in res.datatree.children
