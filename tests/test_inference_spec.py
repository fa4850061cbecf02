"""Population specification: priors, IIV blocks, covariates, residual models, overrides."""

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest
from scipy import stats

from il2pkpd.errors import ModelFileError, OptionError
from il2pkpd.inference.priors import Prior, parse_prior
from il2pkpd.inference.spec import build_spec, parse_assignments


def fake_model(fit_spec=None, priors=None):
    priors = priors or {}
    params = (
        NS(name="CL", domain="positive", default=4.0, prior=priors.get("CL"), auto=False),
        NS(name="V1", domain="positive", default=70.0, prior=priors.get("V1"), auto=False),
        NS(name="KA", domain="positive", default=1.0, prior=priors.get("KA"), auto=False),
        NS(name="SHIFT", domain="real", default=0.5, prior=priors.get("SHIFT"), auto=False),
        NS(name="F1", domain="unit_interval", default=1.0, prior=None, auto=True),
        NS(name="R1", domain="positive", default=None, prior=None, auto=True),
    )
    outputs = (NS(dvid=1, name="CP"), NS(dvid=2, name="ANC"))
    return NS(name="fake", parameters=params, outputs=outputs, fit_spec=fit_spec or {})


# ---- priors -----------------------------------------------------------------------------------

def test_prior_text_and_table_forms_agree():
    assert parse_prior("lognormal(1.4, 0.5)") == parse_prior(
        {"dist": "lognormal", "loc": 1.4, "scale": 0.5})
    assert parse_prior("HalfNormal(0.3)") == Prior("halfnormal", (0.3,))
    assert parse_prior(0.3) == Prior("fixed", (0.3,))


@pytest.mark.parametrize("bad", ["lognormal(1.4)", "gamma(1, 2)", "normal(a, 1)", "normal 0 1",
                                 {"dist": "normal", "loc": 0}, {"loc": 0, "scale": 1},
                                 {"dist": "normal", "loc": 0, "scale": -1},
                                 {"dist": "uniform", "low": 2, "high": 1},
                                 {"dist": "normal", "loc": 0, "scale": 1, "shape": 3}])
def test_bad_priors_raise_model_file_error(bad):
    with pytest.raises(ModelFileError):
        parse_prior(bad, where="test")


def test_cli_priors_raise_option_error():
    with pytest.raises(OptionError, match="--prior CL"):
        parse_prior("lognormal(1)", where="--prior CL", cli=True)


@pytest.mark.parametrize("text,scipy_dist", [
    ("lognormal(1.2, 0.4)", stats.lognorm(s=0.4, scale=math.exp(1.2))),
    ("normal(-1, 2)", stats.norm(-1, 2)),
    ("halfnormal(0.7)", stats.halfnorm(scale=0.7)),
    ("uniform(2, 5)", stats.uniform(2, 3)),
])
def test_prior_log_density_matches_scipy(text, scipy_dist):
    prior = parse_prior(text)
    d = prior.to_numpyro("real" if prior.dist == "normal" else "positive")
    x = np.array([2.1, 2.5, 3.3, 4.9])
    np.testing.assert_allclose(np.asarray(d.log_prob(x)), scipy_dist.logpdf(x), rtol=1e-10)
    np.testing.assert_allclose(prior.median(), scipy_dist.median(), rtol=1e-8)


def test_normal_prior_on_positive_parameter_is_truncated_at_zero():
    d = parse_prior("normal(1, 2)").to_numpyro("positive")
    ref = stats.truncnorm(a=(0 - 1) / 2, b=np.inf, loc=1, scale=2)
    np.testing.assert_allclose(np.asarray(d.log_prob(np.array([0.5, 3.0]))),
                               ref.logpdf([0.5, 3.0]), rtol=1e-10)


def test_prior_domain_checks():
    with pytest.raises(ModelFileError, match="SHIFT"):
        build_spec(fake_model(priors={"SHIFT": {"dist": "lognormal", "loc": 0, "scale": 1}}))
    with pytest.raises(ModelFileError, match="outside its domain"):
        build_spec(fake_model(), fix={"CL": -1.0})


# ---- defaults and overrides -------------------------------------------------------------------

def test_defaults_estimate_declared_parameters_with_diagonal_iiv():
    spec = build_spec(fake_model())
    assert spec.estimated == ("CL", "V1", "KA", "SHIFT")
    assert spec.fixed == {"F1": 1.0}
    assert "R1" not in spec.priors  # auto parameter without default: left to the engine
    assert spec.iiv == ("CL", "V1", "KA")
    assert spec.blocks == (("CL",), ("V1",), ("KA",))
    assert spec.priors["CL"] == Prior("lognormal", (math.log(4.0), 1.0))
    assert spec.priors["SHIFT"].dist == "normal"
    assert [r.model for r in spec.residuals] == ["proportional", "proportional"]
    assert spec.population_names() == ["CL", "V1", "KA", "SHIFT", "omega_CL", "omega_V1",
                                       "omega_KA", "sigma_CP", "sigma_ANC"]


def test_block_iiv_names_every_correlation():
    spec = build_spec(fake_model({"population": {"iiv": ["CL", "V1", "KA"],
                                                 "covariance": "block"}}))
    assert spec.blocks == (("CL", "V1", "KA"),)
    assert spec.correlations == (("CL", "V1"), ("CL", "KA"), ("V1", "KA"))
    spec = build_spec(fake_model({"population": {"iiv": ["CL", "V1", "KA"],
                                                 "blocks": [["KA", "CL"]]}}))
    assert spec.blocks == (("CL", "KA"), ("V1",))


def test_overrides_from_api_and_cli():
    model = fake_model({"residual": {"CP": {"model": "lognormal"}}})
    spec = build_spec(model, priors={"CL": "lognormal(1.4,0.5)", "omega_V1": "halfnormal(0.2)",
                                     "sigma_CP": "halfnormal(0.1)"},
                      fix={"KA": "0.3"}, cli=True)
    assert spec.priors["CL"] == Prior("lognormal", (1.4, 0.5))
    assert spec.priors["KA"] == Prior("fixed", (0.3,))
    assert "KA" not in spec.iiv  # fixed parameters lose their default IIV
    assert spec.omega_priors["omega_V1"] == Prior("halfnormal", (0.2,))
    assert spec.residuals[0].priors["sigma_CP"] == Prior("halfnormal", (0.1,))
    with pytest.raises(OptionError, match="no parameter named 'XX'"):
        build_spec(model, priors={"XX": "normal(0,1)"}, cli=True)
    with pytest.raises(OptionError, match="unknown parameter 'XX'"):
        build_spec(model, fix={"XX": 1.0}, cli=True)
    with pytest.raises(OptionError, match="expected a number"):
        build_spec(model, fix={"KA": "abc"}, cli=True)


def test_fixed_parameter_with_iiv_is_refused():
    with pytest.raises(OptionError, match="fixed"):
        build_spec(fake_model({"population": {"iiv": ["CL", "KA"]}}), fix={"KA": 0.3}, cli=True)


def test_residual_models_and_names():
    spec = build_spec(fake_model(), residual={"CP": "combined", "2": {"model": "additive",
                                                                      "sigma_prior": 2.0}})
    cp, anc = spec.residuals
    assert cp.model == "combined" and cp.site_names == ("sigma_add_CP", "sigma_prop_CP")
    assert anc.model == "additive" and anc.priors["sigma_ANC"].is_fixed
    assert "sigma_ANC" not in spec.population_names()
    with pytest.raises(ModelFileError, match="no output named 'XX'"):
        build_spec(fake_model(), residual={"XX": "additive"})
    with pytest.raises(ModelFileError, match="not allowed"):
        build_spec(fake_model(), residual={"CP": "poisson"})


def test_residual_override_by_dvid_or_name_of_a_table_keyed_the_other_way():
    # the model file keys its tables by output name (CP) and by DVID (2); overrides use the
    # other form and must merge with them, not count as a second table for the same output
    file_tables = {"residual": {"CP": {"model": "lognormal", "sigma_prior": 0.3},
                                "2": {"model": "additive"}}}
    spec = build_spec(fake_model(file_tables), residual={"1": {"sigma_prior": 0.2},
                                                         "ANC": "proportional"})
    cp, anc = spec.residuals
    assert cp.model == "lognormal" and cp.priors["sigma_CP"].is_fixed
    assert cp.priors["sigma_CP"].args == (0.2,)
    assert anc.model == "proportional"
    with pytest.raises(ModelFileError, match="given twice"):
        build_spec(fake_model({"residual": {"CP": {"model": "additive"},
                                            "1": {"model": "additive"}}}))


@pytest.mark.parametrize("table,match", [
    ({"parameter": "CL", "covariate": "WT", "model": "power"}, "reference"),
    ({"parameter": "XX", "covariate": "WT", "model": "power", "reference": 70}, "unknown parameter"),
    ({"parameter": "CL", "covariate": "AGE", "model": "power", "reference": 70}, "not in the dataset"),
    ({"parameter": "CL", "covariate": "WT", "model": "spline", "reference": 70}, "not allowed"),
    ({"parameter": "CL", "covariate": "SEX", "model": "categorical"}, "levels"),
    ({"parameter": "SHIFT", "covariate": "WT", "model": "power", "reference": 70}, "cannot act"),
    ({"parameter": "CL", "covariate": "WT", "model": "linear", "reference": 70, "exponent": 1},
     "power"),
])
def test_bad_covariate_tables(table, match):
    with pytest.raises(ModelFileError, match=match):
        build_spec(fake_model({"covariates": {"e": table}}), covariate_names=["WT", "SEX"])


def test_covariate_effect_names():
    spec = build_spec(fake_model({"covariates": {
        "a": {"parameter": "CL", "covariate": "WT", "model": "power", "reference": 70,
              "exponent": 0.75},
        "b": {"parameter": "V1", "covariate": "WT", "model": "power", "reference": 70,
              "prior": {"dist": "normal", "loc": 1.0, "scale": 0.2}},
        "c": {"parameter": "CL", "covariate": "SEX", "model": "categorical", "levels": [1, 2]},
    }}), covariate_names=["WT", "SEX"])
    names = spec.population_names()
    assert "beta_CL_WT" not in names  # fixed exponent
    assert {"beta_V1_WT", "beta_CL_SEX_1", "beta_CL_SEX_2"} <= set(names)


def test_unknown_population_keys_are_reported():
    with pytest.raises(ModelFileError, match="unknown key"):
        build_spec(fake_model({"population": {"iiiv": ["CL"]}}))
    with pytest.raises(ModelFileError, match="unknown fit table"):
        build_spec(fake_model({"priors": {}}))


def test_parse_assignments():
    assert parse_assignments(["CL=lognormal(1.4,0.5)", "KA = 0.3"], "--prior") == {
        "CL": "lognormal(1.4,0.5)", "KA": "0.3"}
    for bad in (["CL"], ["=1"], ["CL=1", "CL=2"]):
        with pytest.raises(OptionError):
            parse_assignments(bad, "--fix")
