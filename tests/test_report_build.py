"""A small real fit for the report tests: a one-compartment IV-bolus population model.

Eight subjects, 100 mg IV bolus at time 0, concentrations at 0.5-24 h, proportional residual
error, log-normal IIV on CL and V, M3 likelihood for observations below LLOQ. Closed form:
``C(t) = dose / V_i * exp(-CL_i / V_i * t)``. Sampled with NUTS (2 chains x 150 draws) and saved
with the fit-directory layout the report reads (see il2pkpd.report.fitdir).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

N_SUB = 8
TIMES = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0])
DOSE = 100.0
LLOQ = 0.4
TRUE = {"CL": 2.0, "V": 10.0, "omega": 0.3, "sigma": 0.15}

MODEL_TOML = """
[model]
name = "one_cmt_test"
description = "one compartment, IV bolus"
structure = "one_cmt"
time_unit = "h"
amount_unit = "mg"

[parameters.CL]
unit = "L/h"
default = 2.0
domain = "positive"

[parameters.V]
unit = "L"
default = 10.0
domain = "positive"

[compartments]
1 = "central"

[outputs.1]
name = "CP"
unit = "mg/L"
cmt = 1
"""


def simulate_data(seed: int = 11) -> pd.DataFrame:
    """The observation records of the fixture (NONMEM-style columns, one output)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(1, N_SUB + 1), TIMES.size)
    t = np.tile(TIMES, N_SUB)
    cl = TRUE["CL"] * np.exp(TRUE["omega"] * rng.standard_normal(N_SUB))
    v = TRUE["V"] * np.exp(TRUE["omega"] * rng.standard_normal(N_SUB))
    conc = DOSE / v[ids - 1] * np.exp(-cl[ids - 1] / v[ids - 1] * t)
    dv = conc * (1.0 + TRUE["sigma"] * rng.standard_normal(conc.size))
    blq = dv < LLOQ
    wt = np.round(rng.uniform(50, 90, N_SUB), 1)
    return pd.DataFrame({
        "ID": ids, "TIME": t, "DV": np.where(blq, LLOQ, dv), "BLQ": blq,
        "LLOQ": np.full(t.size, LLOQ), "DVID": np.ones(t.size, dtype=int),
        "MDV": np.zeros(t.size, dtype=int), "WT": wt[ids - 1],
    })


def nonmem_csv(obs: pd.DataFrame) -> pd.DataFrame:
    """Dose plus observation records (for the data summary's dose table)."""
    doses = pd.DataFrame({"ID": np.arange(1, N_SUB + 1), "TIME": 0.0, "AMT": DOSE, "EVID": 1,
                          "CMT": 1, "RATE": 0.0, "MDV": 1, "DV": np.nan})
    recs = obs.assign(AMT=0.0, EVID=0, CMT=1, RATE=0.0)[
        ["ID", "TIME", "AMT", "EVID", "CMT", "RATE", "MDV", "DV", "WT"]]
    doses["WT"] = obs.groupby("ID")["WT"].first().to_numpy()
    return pd.concat([doses, recs]).sort_values(["ID", "TIME", "EVID"], ascending=[
        True, True, False]).reset_index(drop=True)


def fit_fixture(out: Path, *, seed: int = 0, num_samples: int = 150) -> Path:
    """Fit the fixture model and save a fit directory at *out*; returns *out*."""
    import arviz as az
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS, Predictive, init_to_median

    from il2pkpd._io import mark_complete
    from il2pkpd.inference._posthoc import repair_numpyro_submodules

    obs = simulate_data()
    sub = obs["ID"].to_numpy() - 1
    t = obs["TIME"].to_numpy(float)
    cens = obs["BLQ"].to_numpy().astype(np.int32)

    def model(sub, t, cens, dv=None):
        cl_tv = numpyro.sample("CL", dist.LogNormal(jnp.log(2.0), 0.5))
        v_tv = numpyro.sample("V", dist.LogNormal(jnp.log(10.0), 0.5))
        om_cl = numpyro.sample("omega_CL", dist.HalfNormal(0.5))
        om_v = numpyro.sample("omega_V", dist.HalfNormal(0.5))
        sigma = numpyro.sample("sigma_CP", dist.HalfNormal(0.3))
        with numpyro.plate("subject", N_SUB):
            z_cl = numpyro.sample("z_CL", dist.Normal())
            z_v = numpyro.sample("z_V", dist.Normal())
            eta_cl = numpyro.deterministic("eta_CL", om_cl * z_cl)
            eta_v = numpyro.deterministic("eta_V", om_v * z_v)
        cl_i = cl_tv * jnp.exp(eta_cl)[sub]
        v_i = v_tv * jnp.exp(eta_v)[sub]
        with numpyro.plate("obs", t.shape[0]):
            numpyro.deterministic("pred", DOSE / v_tv * jnp.exp(-cl_tv / v_tv * t))
            ipred = numpyro.deterministic("ipred", DOSE / v_i * jnp.exp(-cl_i / v_i * t))
            base = dist.Normal(ipred, sigma * ipred)
            like = dist.LeftCensoredDistribution(base, cens) if dv is not None else base
            numpyro.sample("DV", like, obs=dv)

    mcmc = MCMC(NUTS(model, init_strategy=init_to_median), num_warmup=num_samples,
                num_samples=num_samples, num_chains=2, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), sub, t, cens, obs["DV"].to_numpy(float),
             extra_fields=("energy", "num_steps"))
    samples = mcmc.get_samples()
    ppc = Predictive(model, samples)(jax.random.PRNGKey(seed + 1), sub, t, cens)
    prior = Predictive(model, num_samples=200)(jax.random.PRNGKey(seed + 2), sub, t, cens)
    wt = obs.groupby("ID")["WT"].first().to_numpy()
    repair_numpyro_submodules()  # as the package does before from_numpyro (lazy import)
    dt = az.from_numpyro(
        mcmc, posterior_predictive={"DV": ppc["DV"]}, prior=prior, log_likelihood=True,
        constant_data={"ID": obs["ID"].to_numpy(), "TIME": t, "DVID": obs["DVID"].to_numpy(),
                       "MDV": obs["MDV"].to_numpy(), "BLQ": obs["BLQ"].to_numpy(),
                       "LLOQ": obs["LLOQ"].to_numpy(), "WT": wt},
    )
    out.mkdir(parents=True, exist_ok=True)
    dt.to_netcdf(out / "posterior.nc", engine="h5netcdf")
    (out / "model.toml").write_text(MODEL_TOML, encoding="utf-8")
    nonmem_csv(obs).to_csv(out / "data.csv", index=False)
    (out / "fit.json").write_text(json.dumps({"model": "model.toml", "data": "data.csv"}),
                                  encoding="utf-8")
    summ = az.summary(dt, var_names=["CL", "V", "omega_CL", "omega_V", "sigma_CP"],
                      ci_prob=0.9, ci_kind="eti", round_to="none")
    pd.DataFrame({"parameter": summ.index, "mean": summ["mean"], "sd": summ["sd"],
                  "q5": summ["eti90_lb"], "median": np.nan, "q95": summ["eti90_ub"],
                  "ess_bulk": summ["ess_bulk"], "ess_tail": summ["ess_tail"],
                  "r_hat": summ["r_hat"]}).to_csv(out / "summary.csv", index=False)
    mark_complete(out)
    return out


# ----------------------------------------------------------------------------------------------
# Tests

import base64  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from PIL import Image  # noqa: E402

from il2pkpd.cli import main  # noqa: E402
from il2pkpd.report import SECTION_IDS, build_report, load_fit_dir  # noqa: E402
from il2pkpd.report.diagnostics import (  # noqa: E402
    EBFMI_MIN,
    ESS_MIN,
    RHAT_MAX,
    chain_table,
    convergence_table,
    sampler_checks,
)

MALICIOUS_ID = "<script>alert(1)</script>"
MALICIOUS_COL = "<img src=x onerror=alert(1)>"
IMG_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="session")
def fit_dir(tmp_path_factory) -> Path:
    """A real small fit, made once per session."""
    return fit_fixture(tmp_path_factory.mktemp("report") / "fit")


@pytest.fixture(scope="session")
def report_html(fit_dir) -> str:
    return build_report(fit_dir).read_text(encoding="utf-8")


def _copy_fit(src: Path, dst: Path, edit=None, drop_files=()) -> Path:
    shutil.copytree(src, dst)
    for name in ("report.html", "figures", *drop_files):
        p = dst / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    if edit is not None:
        dt = xr.open_datatree(dst / "posterior.nc", engine="h5netcdf").load()
        dt.close()
        dt = edit(dt)
        (dst / "posterior.nc").unlink()
        dt.to_netcdf(dst / "posterior.nc", engine="h5netcdf")
    return dst


def _decode_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_fixture_fit_recovers_typical_values(fit_dir):
    summ = pd.read_csv(fit_dir / "summary.csv").set_index("parameter")
    # 8 subjects: the 90 % intervals of the typical values contain the simulation truth
    assert summ.loc["CL", "q5"] < TRUE["CL"] < summ.loc["CL", "q95"]
    assert summ.loc["V", "q5"] < TRUE["V"] < summ.loc["V", "q95"]


def test_report_has_every_section(report_html):
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in report_html, sid
    assert "could not be built" not in report_html
    for text in ("R-hat", "ESS", "divergent transitions", "E-BFMI", "tree depth saturation",
                 "90% equal-tailed credible interval", "L/h", "Eta shrinkage", "NPDE",
                 "Prediction-corrected VPC", "fraction below LLOQ", "elpd_loo", "Pareto k",
                 "Dose records by route", "WT"):
        assert text in report_html, text


def test_report_flags_follow_the_thresholds(fit_dir):
    fit = load_fit_dir(fit_dir)
    conv = convergence_table(fit)
    expect = np.where((conv["r_hat"] <= RHAT_MAX) & (conv["ess_bulk"] >= ESS_MIN)
                      & (conv["ess_tail"] >= ESS_MIN), "pass", "warn")
    assert conv["status"].tolist() == expect.tolist()
    checks = sampler_checks(fit).set_index("check")
    n_div = int(fit.datatree["sample_stats"]["diverging"].values.sum())
    assert checks.loc["divergent transitions", "value"].startswith(f"{n_div} of 300")
    assert checks.loc["divergent transitions", "status"] == ("pass" if n_div == 0 else "warn")
    # E-BFMI by its definition: sum of squared energy differences over the energy variance
    energy = fit.datatree["sample_stats"]["energy"].values
    bfmi = (np.diff(energy, axis=1) ** 2).sum(axis=1) / ((energy - energy.mean(axis=1,
            keepdims=True)) ** 2).sum(axis=1)
    assert float(checks.loc["E-BFMI (lowest chain)", "value"]) == pytest.approx(bfmi.min(),
                                                                                 abs=1e-3)
    assert checks.loc["E-BFMI (lowest chain)", "status"] == (
        "pass" if bfmi.min() >= EBFMI_MIN else "warn")
    assert checks.loc["tree depth saturation", "status"] in ("pass", "warn")


def test_chain_table_follows_the_sample_stats(fit_dir, tmp_path, report_html):
    fit = load_fit_dir(fit_dir)
    tab = chain_table(fit)
    ss = fit.datatree["sample_stats"]
    n_chain = ss.sizes["chain"]
    assert tab["chain"].tolist() == list(range(1, n_chain + 1))
    div = ss["diverging"].values.sum(axis=1)
    assert tab["divergences"].tolist() == div.tolist()
    steps = ss["n_steps"].values.mean(axis=1)
    np.testing.assert_allclose(tab["leapfrog steps per draw"].astype(float), steps, atol=0.05)
    assert "step size" not in tab           # this fit.json records none
    assert "Per chain: adapted step size" in report_html
    # step sizes as a fit records them (info.step_size): a chain whose step size is a fifth of
    # the others' is flagged, the others are not (unless the sample stats flag them)
    dst = _copy_fit(fit_dir, tmp_path / "slow")
    meta = json.loads((dst / "fit.json").read_text())
    meta["info"] = {"step_size": [0.5] * (n_chain - 1) + [0.1]}
    (dst / "fit.json").write_text(json.dumps(meta))
    slow = chain_table(load_fit_dir(dst))
    assert slow["step size"].astype(float).tolist() == meta["info"]["step_size"]
    assert slow["status"].iloc[-1] == "warn"
    clean = (div[:-1] == 0) & (tab["status"].iloc[:-1] == "pass").to_numpy()
    assert (slow["status"].iloc[:-1][clean] == "pass").all()
    assert "sampled with" not in slow
    # --shared-step-size: the adapted step sizes flag the chain, the shared one is shown
    meta["info"] = {"step_size": [0.4] * n_chain,
                    "step_size_adapted": [0.5] * (n_chain - 1) + [0.1]}
    (dst / "fit.json").write_text(json.dumps(meta))
    shared = chain_table(load_fit_dir(dst))
    assert shared["step size"].astype(float).tolist() == meta["info"]["step_size_adapted"]
    assert shared["sampled with"].astype(float).tolist() == meta["info"]["step_size"]
    assert shared["status"].iloc[-1] == "warn"
    # E-BFMI by its definition, and a stuck chain (constant energy: undefined E-BFMI) and
    # transitions at the maximum tree depth are flagged
    e = ss["energy"].values
    bfmi = (np.diff(e, axis=1) ** 2).sum(axis=1) / ((e - e.mean(axis=1, keepdims=True)) ** 2
                                                   ).sum(axis=1)
    np.testing.assert_allclose(tab["E-BFMI"].astype(float), bfmi, atol=1e-3)

    def edit(dt):
        st = dt["sample_stats"].to_dataset()
        energy = st["energy"].values.copy()
        energy[0] = 5.0
        st = st.assign(energy=(st["energy"].dims, energy))
        for name, value in (("reached_max_tree_depth", True), ("tree_depth", 10),
                            ("n_steps", 1023)):     # whichever the report reads
            if name in st:
                v = st[name].values.copy()
                v[1, :3] = value
                st = st.assign({name: (st[name].dims, v)})
        dt["sample_stats"] = xr.DataTree(st)
        return dt

    odd = chain_table(load_fit_dir(_copy_fit(fit_dir, tmp_path / "odd", edit=edit)))
    assert odd["E-BFMI"].iloc[0] == "nan" and odd["status"].iloc[0] == "warn"
    assert odd["at max tree depth"].iloc[1] >= 3 and odd["status"].iloc[1] == "warn"
    one = _copy_fit(fit_dir, tmp_path / "one",
                    edit=lambda dt: dt.isel(chain=[0]) if hasattr(dt, "isel") else dt)
    assert chain_table(load_fit_dir(one)) is None


def test_every_embedded_image_decodes_and_figures_are_saved(fit_dir, report_html):
    blobs = IMG_RE.findall(report_html)
    # rank, trace, prior-posterior, GOF, one individual page, VPC, Pareto k
    assert len(blobs) == 7
    for blob in blobs:
        img = _decode_png(base64.b64decode(blob, validate=True))
        assert img.size[0] > 100 and img.size[1] > 100
    files = sorted((fit_dir / "figures").glob("*.png"))
    assert len(files) == len(blobs)
    for f in files:
        _decode_png(f.read_bytes())


def test_no_external_resource_and_no_script(report_html):
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', report_html, flags=re.I)
    assert refs
    for ref in refs:
        assert ref.startswith(("data:image/png;base64,", "#")), ref[:60]
    for bad in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert bad not in report_html.lower(), bad
    assert not re.search(r'(?:src|href)\s*=\s*"//', report_html)


def test_malicious_id_and_column_name_are_escaped(fit_dir, tmp_path):
    def edit(dt):
        c = dt["constant_data"].to_dataset()
        ids = c["ID"].values.astype(str).astype(object)
        ids[ids == "1"] = MALICIOUS_ID
        c["ID"] = (c["ID"].dims, ids)
        c[MALICIOUS_COL] = c["WT"]
        dt["constant_data"] = xr.DataTree(c)
        return dt

    bad = _copy_fit(fit_dir, tmp_path / "bad", edit, drop_files=("data.csv",))
    text = build_report(bad).read_text(encoding="utf-8")
    assert MALICIOUS_ID not in text and MALICIOUS_COL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<script" not in text.lower()
    assert "could not be built" not in text


def test_missing_pieces_are_reported_not_fatal(fit_dir, tmp_path):
    def edit(dt):
        for group in ("posterior_predictive", "prior", "prior_predictive", "log_likelihood"):
            if group in dt.children:
                del dt[group]
        c = dt["constant_data"].to_dataset().drop_vars(["BLQ", "LLOQ", "DVID"])
        dt["constant_data"] = xr.DataTree(c)
        return dt

    thin = _copy_fit(fit_dir, tmp_path / "thin", edit,
                     drop_files=("fit.json", "summary.csv", "data.csv", "_COMPLETE"))
    text = build_report(thin).read_text(encoding="utf-8")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in text
    assert "could not be built" not in text
    for phrase in ("has no prior group", "No posterior predictive DV in the fit",
                   "has no log_likelihood group", "Units are blank", "no _COMPLETE marker",
                   "constant_data has no BLQ flag"):
        assert phrase in text, phrase
    for blob in IMG_RE.findall(text):
        _decode_png(base64.b64decode(blob))


def test_point_estimate_fit_reports_what_does_not_apply(fit_dir, tmp_path):
    # A MAP fit: one chain, one draw, no sample_stats.
    def edit(dt):
        for group in ("posterior", "posterior_predictive", "log_likelihood"):
            dt[group] = xr.DataTree(dt[group].to_dataset().isel(chain=[0], draw=[0]))
        del dt["sample_stats"]
        return dt

    point = _copy_fit(fit_dir, tmp_path / "map", edit, drop_files=("fit.json",))
    (point / "fit.json").write_text(json.dumps({"method": "map", "model": "model.toml"}))
    text = build_report(point).read_text(encoding="utf-8")
    assert "could not be built" not in text
    assert "convergence diagnostics need MCMC draws" in text
    assert "PSIS-LOO needs posterior draws" in text
    assert "method &#x27;map&#x27;, not MCMC" in text


def test_each_output_gets_its_own_plots(fit_dir, tmp_path):
    # Even subjects' observations relabelled as output DVID 2 (not in the model file).
    def edit(dt):
        c = dt["constant_data"].to_dataset()
        dvid = np.where(c["ID"].values % 2 == 0, 2, 1)
        c["DVID"] = (c["DVID"].dims, dvid)
        dt["constant_data"] = xr.DataTree(c)
        return dt

    two = _copy_fit(fit_dir, tmp_path / "two", edit)
    text = build_report(two).read_text(encoding="utf-8")
    assert "could not be built" not in text
    names = {p.name for p in (two / "figures").glob("*.png")}
    for stem in ("gof_1_CP", "gof_2_DVID_2", "vpc_1_CP", "vpc_2_DVID_2",
                 "individual_1_CP_page1", "individual_2_DVID_2_page1"):
        assert f"{stem}.png" in names, stem
    assert "DVID 2: VPC bins" in text


def test_padded_subject_by_obs_layout_gives_the_same_table(fit_dir, tmp_path):
    # The same observations stored as (subject, 8) arrays, the last column padding.
    def pad(da, fill):
        lead = [d for d in da.dims if d in ("chain", "draw")]
        vals = da.values.reshape(*[da.sizes[d] for d in lead], N_SUB, TIMES.size)
        widths = [(0, 0)] * (len(lead) + 1) + [(0, 1)]
        vals = np.pad(vals.astype(float) if fill is np.nan else vals, widths,
                      constant_values=fill)
        return xr.DataArray(vals, dims=[*lead, "subject", "obs"])

    def edit(dt):
        groups = {}
        for name in dt.children:
            ds = dt[name].to_dataset()
            new = {}
            for var, da in ds.data_vars.items():
                size = da.size // int(np.prod([da.sizes[d] for d in da.dims
                                               if d in ("chain", "draw")]))
                if size == N_SUB * TIMES.size:
                    fill = np.nan if var in ("TIME", "DV", "pred", "ipred", "LLOQ") else (
                        1 if var == "MDV" else 0)
                    new[var] = pad(da, fill)
                else:
                    new[var] = da.drop_vars(list(da.coords))
            groups[name] = xr.Dataset(new)
        return xr.DataTree.from_dict(groups)

    padded = _copy_fit(fit_dir, tmp_path / "padded", edit)
    a, b = load_fit_dir(fit_dir), load_fit_dir(padded)
    pd.testing.assert_frame_equal(a.obs.drop(columns="POS"), b.obs.drop(columns="POS"))
    np.testing.assert_allclose(a.ipred, b.ipred)
    np.testing.assert_allclose(a.ppc, b.ppc)


def test_layout_of_il2pkpd_inference_is_read(fit_dir, tmp_path):
    # What il2pkpd.inference writes today: z over (subject, iiv) instead of eta_<P>; no
    # pred/ipred; constant data on an 'obs' dimension with OUTPUT/CMT/ROW, BLQ as int8,
    # subject_ID and cov_<name> over 'subject'; fit.json with the model name under 'info'.
    def edit(dt):
        post = dt["posterior"].to_dataset()
        z = xr.concat([post["z_CL"], post["z_V"]], dim="iiv").transpose(
            "chain", "draw", "subject", "iiv").assign_coords(iiv=["CL", "V"])
        post = post.drop_vars(["z_CL", "z_V", "eta_CL", "eta_V", "pred", "ipred"]).assign(z=z)
        post = post.drop_dims([d for d in post.dims if d not in ("chain", "draw", "subject",
                                                                 "iiv")])
        c = dt["constant_data"].to_dataset()
        n = c["ID"].size
        const = xr.Dataset({
            "ID": ("obs", c["ID"].values), "TIME": ("obs", c["TIME"].values),
            "DVID": ("obs", c["DVID"].values), "BLQ": ("obs", c["BLQ"].values.astype(np.int8)),
            "LLOQ": ("obs", c["LLOQ"].values), "OUTPUT": ("obs", np.zeros(n, dtype=int)),
            "CMT": ("obs", np.ones(n, dtype=int)), "ROW": ("obs", np.arange(n)),
            "subject_ID": ("subject", np.arange(1, N_SUB + 1)),
            "cov_WT": ("subject", c["WT"].values),
        })
        dt["posterior"] = xr.DataTree(post)
        dt["constant_data"] = xr.DataTree(const)
        dt.attrs["il2pkpd_model"] = "one_cmt_test"
        return dt

    ref = load_fit_dir(fit_dir)
    other = _copy_fit(fit_dir, tmp_path / "inference_style", edit, drop_files=("fit.json",))
    (other / "fit.json").write_text(json.dumps({"method": "nuts", "info": {
        "model": "one_cmt_test", "data": str(other / "data.csv"), "max_tree_depth": 10}}))
    fit = load_fit_dir(other)
    pd.testing.assert_frame_equal(ref.obs.drop(columns="OUTPUT"), fit.obs.drop(columns="OUTPUT"))
    from il2pkpd.report import shrinkage_table

    pd.testing.assert_frame_equal(shrinkage_table(ref), shrinkage_table(fit))
    text = build_report(other).read_text(encoding="utf-8")
    assert "could not be built" not in text
    assert "model file one_cmt_test not found" in text
    assert "population prediction (posterior &#x27;pred&#x27;) not in the fit" in text
    assert "Dose records by route" in text and "subject_ID" not in text


def test_cli_report_writes_the_file_and_rejects_a_missing_dir(fit_dir, tmp_path, capsys):
    copy = _copy_fit(fit_dir, tmp_path / "cli")
    # a stale figure of an earlier build is removed
    (copy / "figures").mkdir(exist_ok=True)
    (copy / "figures" / "individual_9_old_page1.png").write_bytes(b"old")
    # paged individual fits: 8 subjects at 3 per page -> 3 pages
    assert main(["report", str(copy), "--bins", "4", "--per-page", "3"]) == 0
    assert (copy / "report.html").is_file()
    pages = sorted(p.name for p in (copy / "figures").glob("individual_*.png"))
    assert pages == [f"individual_1_CP_page{k}.png" for k in (1, 2, 3)]
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert "page 3 of 3: subjects 7, 8" in text
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "posterior.nc" in capsys.readouterr().err


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and shutil.which("apt-get"):
        subprocess.run("apt-get update -q && apt-get install -y -q chromium", shell=True,
                       capture_output=True, check=False, timeout=900)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed and apt-get could not install it")
    return exe


def test_report_renders_in_headless_chromium(chromium, fit_dir, report_html, tmp_path):
    shot = tmp_path / "shot.png"
    url = (fit_dir / "report.html").resolve().as_uri()
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1200,2000", url],
                   capture_output=True, check=False, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = _decode_png(shot.read_bytes()).convert("RGB")
    assert img.size == (1200, 2000)
    px = np.asarray(img).reshape(-1, 3)
    non_white = np.mean(np.any(px < 240, axis=1))
    n_colours = len(np.unique(px, axis=0))
    assert non_white > 0.05, non_white
    assert n_colours > 50, n_colours


@pytest.mark.slow
def test_report_of_an_il2pkpd_inference_fit(tmp_path):
    # End to end with the package's own fitting (il2pkpd.inference) on the fixture data.
    from il2pkpd.inference import fit

    obs = simulate_data()
    df = nonmem_csv(obs)
    is_obs = (df["EVID"] == 0).to_numpy()
    blq = np.zeros(len(df), dtype=bool)
    blq[is_obs] = obs.sort_values(["ID", "TIME"])["BLQ"].to_numpy()
    df["BLQ"] = blq.astype(int)
    df["LLOQ"] = np.where(is_obs, LLOQ, np.nan)
    df.loc[blq, "DV"] = np.nan
    csv = tmp_path / "data.csv"
    df.to_csv(csv, index=False)
    res = fit("one_cmt_iv", str(csv), chains=2, warmup=150, samples=150,
              chain_method="vectorized", progress_bar=False)
    out = res.save(tmp_path / "fit")
    text = build_report(out).read_text(encoding="utf-8")
    assert "could not be built" not in text
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in text
    assert "eta_CL" in text and "eta_V" in text  # shrinkage from the fit's eta_<P>
    assert "not prediction corrected" not in text and "No population prediction" not in text
    assert "The DataTree has no prior group" not in text
    assert "L/h" in text and "Dose records by route" in text
    for blob in IMG_RE.findall(text):
        _decode_png(base64.b64decode(blob))


def test_a_pair_of_tree_depths_is_checked_at_the_sampling_depth(fit_dir, tmp_path):
    """fit.json's max_tree_depth as (warm-up, sampling): the draws are checked against the
    sampling depth (here from n_steps alone, 2**2 - 1 = 3 leapfrog steps)."""
    def edit(dt):
        st = dt["sample_stats"].to_dataset()
        st = st.drop_vars([v for v in ("reached_max_tree_depth", "tree_depth") if v in st])
        dt["sample_stats"] = xr.DataTree(st)
        return dt

    dst = _copy_fit(fit_dir, tmp_path / "pair", edit=edit)
    meta = json.loads((dst / "fit.json").read_text())
    meta["info"] = {"max_tree_depth": [10, 2]}
    (dst / "fit.json").write_text(json.dumps(meta))
    steps = load_fit_dir(dst).datatree["sample_stats"]["n_steps"].values
    text = build_report(dst).read_text(encoding="utf-8")
    assert f"{int((steps >= 3).sum())} of {steps.size} at depth 2" in text
