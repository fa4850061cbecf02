"""Virtual populations: default variability, posterior draws, covariates, reproducibility."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from il2pkpd.cli import main
from il2pkpd.errors import OptionError
from il2pkpd.models import load_model
from il2pkpd.simulate.population import (
    PosteriorError,
    default_population,
    posterior_population,
    read_posterior,
    sample_covariates,
)


def write_posterior(path, *, chains=2, draws=50, seed=0, covariates=True, beta=None):
    """A fit directory with a posterior.nc in the layout of il2pkpd.inference."""
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    post = {
        "CL": rng.lognormal(np.log(4.0), 0.05, shape),
        "V": rng.lognormal(np.log(70.0), 0.05, shape),
        "omega_CL": np.full(shape, 0.3),
        "omega_V": np.full(shape, 0.2),
        "corr_CL_V": np.full(shape, 0.8),
        "eta_CL": rng.normal(size=shape + (5,)),        # per-subject: ignored
    }
    if beta is not None:
        post["beta_CL_WT"] = np.full(shape, beta)
    ds = xr.Dataset({k: (("chain", "draw") if v.ndim == 2 else ("chain", "draw", "subject"), v)
                     for k, v in post.items()})
    tree = {"posterior": ds}
    if covariates:
        tree["constant_data"] = xr.Dataset({"cov_WT": ("subject", [50.0, 60.0, 70.0, 80.0,
                                                                   90.0])})
    path.mkdir(parents=True, exist_ok=True)
    xr.DataTree.from_dict(tree).to_netcdf(path / "posterior.nc", engine="h5netcdf")
    return path


@pytest.fixture(scope="module")
def one_cmt():
    return load_model("one_cmt_iv")


def test_default_population_has_the_stated_variability_and_is_reproducible(one_cmt):
    pop = default_population(one_cmt, 20000, seed=1, omega={"CL": 0.3, "V": 0.1})
    for name, sd, tv in (("CL", 0.3, 4.0), ("V", 0.1, 70.0)):
        logs = np.log(pop.params[name] / tv)
        assert logs.std() == pytest.approx(sd, rel=0.03)
        assert abs(logs.mean()) < 0.01
    again = default_population(one_cmt, 20000, seed=1, omega={"CL": 0.3, "V": 0.1})
    np.testing.assert_array_equal(pop.params["CL"], again.params["CL"])
    pd.testing.assert_frame_equal(pop.covariates, again.covariates)
    other = default_population(one_cmt, 20000, seed=2, omega={"CL": 0.3, "V": 0.1})
    assert not np.allclose(pop.params["CL"], other.params["CL"])
    with pytest.raises(OptionError):
        default_population(one_cmt, 0)


def test_stated_covariates_and_resampling_from_a_dataset():
    rng = np.random.default_rng(0)
    cov = sample_covariates(5000, rng)
    np.testing.assert_allclose(cov["BSA"], np.sqrt(cov["WT"] * cov["HT"] / 3600))
    assert cov["SEX"].mean() == pytest.approx(0.5, abs=0.03)
    assert cov["WT"].between(40, 160).all()
    source = pd.DataFrame({"ID": [1, 1, 2, 3], "WT": [50.0, 50.0, 80.0, 100.0],
                           "HT": [160.0, 160.0, 180.0, 190.0]})
    res = sample_covariates(3000, np.random.default_rng(1), source)
    assert set(res["WT"]) == {50.0, 80.0, 100.0}
    # whole subjects are resampled: WT and HT stay paired, BSA computed from them
    pairs = set(zip(res["WT"], res["HT"], strict=True))
    assert pairs == {(50.0, 160.0), (80.0, 180.0), (100.0, 190.0)}
    assert res["WT"].value_counts(normalize=True).min() > 0.28


def test_posterior_population_uses_draws_and_correlated_variability(tmp_path, one_cmt):
    fit = write_posterior(tmp_path / "fit")
    table = read_posterior(fit)
    assert {"CL", "V", "omega_CL", "corr_CL_V"} <= set(table.columns)
    assert "eta_CL" not in table.columns and len(table) == 100
    pop = posterior_population(one_cmt, fit, 30000, seed=3, n_draws=20)
    assert pop.n_draws == 20
    np.testing.assert_array_equal(pop.draw[:25], np.arange(25) % 20)
    rows = np.unique(np.linspace(0, 99, 20).round().astype(int))
    tv_cl = table["CL"].to_numpy()[rows][pop.draw]
    tv_v = table["V"].to_numpy()[rows][pop.draw]
    eta = np.stack([np.log(pop.params["CL"] / tv_cl), np.log(pop.params["V"] / tv_v)])
    assert eta[0].std() == pytest.approx(0.3, rel=0.03)
    assert eta[1].std() == pytest.approx(0.2, rel=0.03)
    assert np.corrcoef(eta)[0, 1] == pytest.approx(0.8, abs=0.02)
    # covariates come from the fitted subjects stored with the posterior
    assert set(pop.covariates["WT"]) <= {50.0, 60.0, 70.0, 80.0, 90.0}


def test_posterior_covariate_coefficients_apply(tmp_path):
    toml = (load_model("one_cmt_iv").path.read_text()
            + '\n[covariates.CL_WT]\nparameter = "CL"\ncovariate = "WT"\nmodel = "power"\n'
              'reference = 70.0\nexponent = 0.75\n')
    path = tmp_path / "cov_model.toml"
    path.write_text(toml)
    model = load_model(path)
    fit = write_posterior(tmp_path / "fit", beta=1.5)
    table = read_posterior(fit)
    pop = posterior_population(model, fit, 200, seed=1, n_draws=1)
    row = table.iloc[0]
    wt = pop.covariates["WT"].to_numpy()
    eta = np.log(pop.params["CL"] / (row["CL"] * (wt / 70.0) ** 1.5))
    eta_v = np.log(pop.params["V"] / row["V"])
    # with beta from the posterior, what remains is the correlated random effect
    assert np.corrcoef(eta, eta_v)[0, 1] == pytest.approx(0.8, abs=0.1)
    # the default population uses the model file's fixed exponent
    d = default_population(model, 50, seed=1, omega=0.0, covariates=pop.covariates)
    np.testing.assert_allclose(d.params["CL"], 4.0 * (d.covariates["WT"] / 70.0) ** 0.75)


def test_missing_posterior_is_an_input_error(tmp_path, one_cmt):
    with pytest.raises(PosteriorError, match="posterior.nc"):
        posterior_population(one_cmt, tmp_path, 10)


def test_cli_simulates_from_a_posterior(tmp_path, capsys):
    fit = write_posterior(tmp_path / "fit")
    out = tmp_path / "run"
    rc = main(["simulate", "--model", "one_cmt_iv", "--posterior", str(fit), "--regimen",
               "100 mg IV bolus once", "--n", "40", "--days", "3", "--n-draws", "10",
               "--target", "cmax>=1.4", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    metrics = pd.read_csv(out / "metrics.csv").set_index("metric")
    # cmax = dose / V for a bolus; V around 70 L
    assert metrics.loc["cmax", "median"] == pytest.approx(100 / 70, rel=0.15)
    pta = metrics.loc["P(cmax>=1.4)"]
    assert 0 <= pta["q5"] <= pta["median"] <= pta["q95"] <= 1


def test_population_and_dosing_doctests():
    import doctest

    import il2pkpd.simulate.dosing as dosing
    import il2pkpd.simulate.population as population

    for module in (dosing, population):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
