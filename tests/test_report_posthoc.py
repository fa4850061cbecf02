"""The report of a real package fit: NUTS through il2pkpd.inference, block IIV, two outputs.

The model: one-compartment IV bolus PK (CP, mg/L) and a direct inhibitory effect on a
circulating cell count, ``EFF = E0 * (1 - C / (EC50 + C))`` (1/nL). It is declared as a user
ODE model (so that the model file has two outputs); for speed the fit uses the closed form of
the same model as its prediction function, checked against the engine's ODE solution first.
IIV: a block over CL and V, a diagonal element for E0. The fit directory written by
``FitResult.save`` must give a report with every section and no fallback.
"""

from __future__ import annotations

import base64
import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro  # noqa: F401  (a plain import first: see repair_numpyro_submodules)
import pandas as pd
import pytest
from numpyro.infer import Predictive

from il2pkpd.report import build_report
from il2pkpd.report.build import SECTION_IDS
from il2pkpd.report.diagnostics import shrinkage_table
from il2pkpd.report.fitdir import load_fit_dir

DOSE = 100.0
PK_TIMES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)
PD_TIMES = (1.0, 4.0, 12.0, 24.0)
LLOQ = 0.25
TRUE = {"CL": 4.0, "V": 50.0, "E0": 5.0, "EC50": 1.0, "omega_CL": 0.3, "omega_V": 0.2,
        "omega_E0": 0.15, "L_omega_1": np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)]]),
        "sigma_CP": 0.1, "sigma_EFF": 0.08}

TOML = """
[model]
name = "pk_direct_effect"
description = "one compartment IV bolus PK and a direct inhibitory effect on cells"
structure = "ode:pk_direct_effect.py"
time_unit = "h"
amount_unit = "mg"

[parameters.CL]
unit = "L/h"
default = 4.0
domain = "positive"

[parameters.V]
unit = "L"
default = 50.0
domain = "positive"

[parameters.E0]
unit = "1/nL"
default = 5.0
domain = "positive"

[parameters.EC50]
unit = "mg/L"
default = 1.0
domain = "positive"

[states]
names = ["central"]

[compartments]
1 = "central"

[outputs.1]
name = "CP"
unit = "mg/L"
cmt = 1

[outputs.2]
name = "EFF"
unit = "1/nL"
cmt = 1
"""

ODE = '''
def rhs(t, y, p):
    return {"central": -p["CL"] / p["V"] * y["central"]}


def outputs(y, p):
    c = y["central"] / p["V"]
    return {"CP": c, "EFF": p["E0"] * (1.0 - c / (p["EC50"] + c))}
'''


def dataset_frame(n: int = 10) -> pd.DataFrame:
    rows = []
    for i in range(1, n + 1):
        rows.append(dict(ID=i, TIME=0.0, AMT=DOSE, EVID=1, CMT=1, DVID=1, DV=np.nan, MDV=1))
        obs = [(t, 1) for t in PK_TIMES] + [(t, 2) for t in PD_TIMES]
        for t, dvid in sorted(obs):
            rows.append(dict(ID=i, TIME=t, AMT=0.0, EVID=0, CMT=1, DVID=dvid, DV=1.0, MDV=0))
    return pd.DataFrame(rows)


def closed_form(events):
    """The model's exact solution on the events' observation grid (one 100 mg bolus at 0)."""
    t = jnp.asarray(events.obs_time)
    out = jnp.asarray(events.obs_output)
    mask = jnp.asarray(events.obs_mask)

    def predict(p):
        cl, v = p["CL"][:, None], p["V"][:, None]
        c = DOSE / v * jnp.exp(-cl / v * t)
        eff = p["E0"][:, None] * (1.0 - c / (p["EC50"][:, None] + c))
        pred = jnp.where(mask, jnp.where(out == 0, c, eff), 0.0)
        return pred, jnp.all(jnp.isfinite(pred), axis=1)

    return predict


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from il2pkpd.data import read_dataset
    from il2pkpd.engine import build_events, make_predict_fn
    from il2pkpd.inference import build_population_model, build_spec, fit_population_model
    from il2pkpd.models import load_model

    root = tmp_path_factory.mktemp("posthoc_report")
    (root / "pk_direct_effect.toml").write_text(TOML)
    (root / "pk_direct_effect.py").write_text(ODE)
    model = load_model(root / "pk_direct_effect.toml")
    df = dataset_frame()
    data = read_dataset(df, model=model)
    events = build_events(data, model)
    spec = build_spec(model, residual={"CP": "lognormal", "EFF": "proportional"},
                      population={"iiv": ["CL", "V", "E0"], "blocks": [["CL", "V"]]})
    pm = build_population_model(spec, events, closed_form(events))
    # simulate the observations with the model itself, censor CP below LLOQ
    sim = Predictive(pm, params={k: np.asarray(v) for k, v in TRUE.items()},
                     num_samples=1)(jax.random.PRNGKey(7))
    dv = np.asarray(sim["DV"][0])
    blq = (pm.obs.output == 0) & (dv < LLOQ)
    rows = np.asarray(pm.obs.row)
    df.loc[rows, "DV"] = np.where(blq, np.nan, dv)
    df["BLQ"] = 0
    df.loc[rows[blq], "BLQ"] = 1
    df["LLOQ"] = np.where(df["DVID"] == 1, LLOQ, np.nan)
    csv = root / "data.csv"
    df.to_csv(csv, index=False)
    data = read_dataset(csv, model=model)
    events = build_events(data, model)
    ode_predict = make_predict_fn(model, events)
    pm = build_population_model(spec, events, closed_form(events))
    assert 0 < pm.obs.blq.sum() < 30
    res = fit_population_model(pm, "nuts", model_name=model.name, data_label=str(csv),
                               chains=2, warmup=150, samples=150, seed=3, progress_bar=False)
    res.info["model_path"] = str(model.path)
    out = res.save(root / "fit")
    html = build_report(out).read_text(encoding="utf-8")
    return SimpleNamespace(pm=pm, res=res, out=out, html=html, ode_predict=ode_predict)


def test_closed_form_used_by_the_fit_equals_the_engine_ode(fitted):
    pm = fitted.pm
    p = {"CL": jnp.linspace(2.0, 6.0, pm.n_subjects), "V": jnp.linspace(30.0, 70.0, pm.n_subjects),
         "E0": jnp.full(pm.n_subjects, 5.0), "EC50": jnp.linspace(0.5, 2.0, pm.n_subjects)}
    ref, ok = fitted.ode_predict(p)
    mine, _ = pm.predict_fn(p)
    assert bool(np.all(ok))
    np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-8)


def test_fit_directory_holds_pred_ipred_eta_and_prior(fitted):
    fit = load_fit_dir(fitted.out)
    assert fit.pred is not None and fit.ipred is not None and fit.ppc is not None
    assert fit.pred.shape[1] == len(fitted.pm.obs.dv)
    for group in ("prior", "prior_predictive"):
        assert fit.has_group(group), group
    post = fit.datatree["posterior"]
    for name in ("eta_CL", "eta_V", "eta_E0"):
        assert post[name].dims == ("chain", "draw", "subject"), name
    assert not [n for n in fit.notes if "pred" in n or "prior" in n], fit.notes


def test_shrinkage_of_the_block_fit_equals_the_direct_computation(fitted):
    fit = load_fit_dir(fitted.out)
    tab = shrinkage_table(fit).set_index("random_effect")
    assert set(tab.index) == {"eta_CL", "eta_V", "eta_E0"}
    post = fit.datatree["posterior"]
    for par in ("CL", "V", "E0"):
        # eta_i = log(P_i) - log(TV) (no covariates), averaged over all draws per subject
        eta = np.log(post[f"ind_{par}"].values) - np.log(post[par].values)[..., None]
        eta_mean = eta.reshape(-1, eta.shape[-1]).mean(axis=0)
        expected = 1.0 - eta_mean.std(ddof=1) / post[f"omega_{par}"].values.mean()
        assert tab.loc[f"eta_{par}", "shrinkage"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert tab.loc[f"eta_{par}", "shrinkage"] < 1.0


IMG_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
FALLBACKS = ("could not be built", "not prediction corrected", "not prediction-corrected",
             "EPRED", "no prior group", "No random effects", "not in the fit",
             "does not name", "not found")


def test_report_has_every_section_and_no_fallback(fitted):
    html = fitted.html
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in html, sid
    for text in FALLBACKS:
        assert text not in html, text
    missing = re.findall(r'<p class="missing">(.*?)</p>', html, flags=re.S)
    # only the sampler's own warnings may be highlighted (Pareto k on a tiny fit)
    assert all("Pareto k" in m for m in missing), missing
    assert "Every expected piece of the fit directory was found." in html
    assert "Prediction-corrected VPC of CP" in html and "Prediction-corrected VPC of EFF" in html
    for name in ("eta_CL", "eta_V", "eta_E0"):
        assert name in html
    assert "1/nL" in html and "Dose records by route" in html


def test_report_is_self_contained_and_every_image_decodes(fitted):
    from io import BytesIO

    from PIL import Image

    html = fitted.html
    blobs = IMG_RE.findall(html)
    assert len(blobs) >= 8
    for blob in blobs:
        Image.open(BytesIO(base64.b64decode(blob))).load()
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<script" not in html.lower()
    figures = sorted(p.name for p in (fitted.out / "figures").glob("*.png"))
    assert any(f.startswith("prior_posterior") for f in figures)
    assert any("EFF" in f for f in figures) and any("CP" in f for f in figures)


def test_gof_and_vpc_use_the_fit_pred(fitted):
    """The report's per-observation PRED is the median of the saved pred draws, and the VPC
    is prediction corrected with it (checked on the first bin by hand)."""
    from il2pkpd.report.build import _medians
    from il2pkpd.report.vpc import vpc_table

    fit = load_fit_dir(fitted.out)
    med = _medians(fit)
    np.testing.assert_allclose(med["PRED"], np.median(fit.pred, axis=0))
    # PRED differs from the posterior predictive median (the old fallback)
    assert not np.allclose(med["PRED"], med["EPRED"], rtol=1e-3)
    tab = med[med["OUTPUT"] == "EFF"]
    idx = tab.index.to_numpy()
    table = vpc_table(tab["TIME"].to_numpy(float), tab["DV"].to_numpy(float),
                      tab["PRED"].to_numpy(float), fit.ppc[:, idx], n_bins=4,
                      blq=tab["BLQ"].to_numpy(), lloq=tab["LLOQ"].to_numpy(float))
    first = tab["TIME"].to_numpy() <= table["t_hi"].iloc[0]
    pred = tab["PRED"].to_numpy(float)
    pc = tab["DV"].to_numpy(float) * np.median(pred[first]) / pred
    assert table["obs_p50"].iloc[0] == pytest.approx(np.median(pc[first]), rel=1e-9)


def test_prior_posterior_panels_zoom_on_the_posterior_inside_the_support(fitted):
    """x range: posterior 0.5-99.5 % widened by 1.5 widths each side, clipped to the draws."""
    import doctest

    import matplotlib.pyplot as plt

    from il2pkpd.report import plots

    assert doctest.testmod(plots, raise_on_error=False).failed == 0
    fit = load_fit_dir(fitted.out)
    post, prior = fit.datatree["posterior"], fit.datatree["prior"]
    names = ["CL", "omega_CL", "corr_CL_V"]
    fig = plots.prior_posterior_plot(fit.datatree, names)
    lims = {ax.get_title(): ax.get_xlim() for ax in fig.axes if ax.get_title() in names}
    plt.close(fig)
    for name in names:
        x = post[name].values.ravel()
        lo, hi = np.quantile(x, [0.005, 0.995])
        both = np.r_[x, prior[name].values.ravel()]
        expected = (max(lo - 1.5 * (hi - lo), both.min()), min(hi + 1.5 * (hi - lo), both.max()))
        np.testing.assert_allclose(lims[name], expected, rtol=1e-9, atol=1e-9)
    assert -1.0 <= lims["corr_CL_V"][0] and lims["corr_CL_V"][1] <= 1.0
    assert lims["omega_CL"][0] >= 0.0
