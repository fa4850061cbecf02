"""`il2pkpd fit` on a small simulated dataset; bad options exit 2."""

import json
import os
import subprocess
import sys

import arviz as az
import jax
import numpy as np
import pandas as pd
import pytest
from numpyro.infer import Predictive
from test_inference_model import make_df

from il2pkpd.cli import main
from il2pkpd.inference import prepare
from il2pkpd.inference.results import SUMMARY_COLUMNS


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    """12 subjects simulated from one_cmt_iv with a log-normal error, written as a CSV."""
    df = make_df(n=12)
    df["BLQ"] = 0
    df.loc[df["EVID"] == 0, "DV"] = 1.0
    pm, *_ = prepare("one_cmt_iv", df, residual={"CP": "lognormal"})
    sim = Predictive(pm, params={"CL": np.array(4.0), "V": np.array(50.0),
                                 "omega_CL": np.array(0.3), "omega_V": np.array(0.2),
                                 "sigma_CP": np.array(0.1)},
                     num_samples=1)(jax.random.PRNGKey(0))
    df.loc[pm.obs.row, "DV"] = np.asarray(sim["DV"][0])
    path = tmp_path_factory.mktemp("data") / "sim.csv"
    df.to_csv(path, index=False, na_rep=".")
    return path


def test_cli_map_fit_writes_the_files(csv_path, tmp_path, capsys):
    out = tmp_path / "fit"
    rc = main(["fit", str(csv_path), "--model", "one_cmt_iv", "--out", str(out), "--method",
               "map", "--residual", "CP=lognormal", "--prior", "CL=lognormal(1.4,0.5)"])
    assert rc == 0, capsys.readouterr().err
    for f in ("posterior.nc", "summary.csv", "individual.csv", "fit.json", "_COMPLETE",
              "report.html"):
        assert (out / f).is_file(), f
    assert "Convergence" in (out / "report.html").read_text()
    s = pd.read_csv(out / "summary.csv")
    assert list(s.columns) == SUMMARY_COLUMNS
    assert list(s["parameter"]) == ["CL", "V", "omega_CL", "omega_V", "sigma_CP"]
    cl = s.set_index("parameter").loc["CL", "mean"]
    assert 3.0 < cl < 5.5
    ind = pd.read_csv(out / "individual.csv")
    assert len(ind) == 12 and "CL" in ind
    meta = json.loads((out / "fit.json").read_text())
    assert "lognormal(1.4, 0.5)" in meta["info"]["spec"]


def test_cli_focei_fit_with_prior_draws_option(csv_path, tmp_path, capsys):
    out = tmp_path / "focei"
    rc = main(["fit", str(csv_path), "--model", "one_cmt_iv", "--out", str(out), "--method",
               "focei", "--draws", "100", "--prior-draws", "40", "--residual", "CP=lognormal",
               "--no-report"])
    assert rc == 0, capsys.readouterr().err
    dt = az.from_netcdf(out / "posterior.nc")
    assert dt["prior"].sizes["draw"] == 40
    assert dt["posterior"].sizes["draw"] == 100 and "ipred" in dt["posterior"]
    meta = json.loads((out / "fit.json").read_text())
    assert meta["method"] == "focei" and meta["info"]["status"] == "converged"


def test_cli_mixed_parametrization(csv_path, tmp_path, capsys):
    out = tmp_path / "mixed"
    rc = main(["fit", str(csv_path), "--model", "one_cmt_iv", "--out", str(out), "--method",
               "map", "--residual", "CP=lognormal", "--parametrization", "centred=CL",
               "--no-report"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "fit.json").read_text())
    assert "mixed (centred: CL; non-centred: V)" in meta["info"]["spec"]
    s = pd.read_csv(out / "summary.csv").set_index("parameter")
    assert 3.0 < s.loc["CL", "mean"] < 5.5


def test_cli_stage1_parametrization(csv_path, tmp_path, capsys):
    """Warm-up's first half centred, then the mixed parametrization the fit asked for; the
    draws thinned (30 kept of 60 iterations), their trees at most 3 doublings deep."""
    out = tmp_path / "stage1"
    rc = main(["fit", str(csv_path), "--model", "one_cmt_iv", "--out", str(out), "--chains",
               "2", "--warmup", "60", "--samples", "30", "--residual", "CP=lognormal",
               "--parametrization", "centred=CL", "--pooled-metric", "--init", "laplace",
               "--stage1-parametrization", "centred", "--no-report", "--no-progress",
               "--prior-draws", "0", "--pred-draws", "10", "--thin", "2",
               "--max-tree-depth", "10,3"])
    assert rc == 0, capsys.readouterr().err
    info = json.loads((out / "fit.json").read_text())["info"]
    assert info["max_tree_depth"] == [10, 3]     # warm-up 10, the kept draws at most 7 steps
    assert int(az.from_netcdf(out / "posterior.nc")["sample_stats"]["n_steps"].max()) <= 7
    assert info["pooled_metric"]["stage1_parametrization"] == "centred"
    assert info["metric"] == "pooled" and "mixed (centred: CL" in info["spec"]
    assert info["thin"] == 2 and info["samples"] == 30
    assert az.from_netcdf(out / "posterior.nc")["posterior"].sizes["draw"] == 30
    assert (out / "_COMPLETE").is_file()


@pytest.mark.parametrize("pooled", [False, True])
def test_cli_nuts_fit_with_parallel_chains(csv_path, tmp_path, pooled):
    """Two chains run in parallel on two XLA CPU devices (a fresh process sets them up),
    started from the Laplace approximation with its metric kept through warm-up (pooled: for
    the first half of it, then the metric from both chains' draws, in the partial centring
    with one weight per subject it chose, both chains then sampling with one step size; with
    progress lines)."""
    out = tmp_path / "nuts"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "il2pkpd", "fit", str(csv_path), "--model", "one_cmt_iv",
         "--out", str(out), "--chains", "2", "--warmup", "150", "--samples", "100",
         "--residual", "CP=lognormal", "--fix", "V=50", "--iiv", "CL",
         *(["--pooled-metric", "--adaptive-centring", "--centring-weights", "subject",
            "--shared-step-size"]
           if pooled else ["--no-progress"]),
         "--no-report", "--init", "laplace"],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # stderr is not a terminal: progress as plain lines (pooled run), counted over both stages
    lines = [x for x in proc.stderr.splitlines() if x.startswith("NUTS: ")]
    assert len(lines) == (20 if pooled else 0)     # 19 marks of 13 iterations, and the last
    if pooled:
        assert all("of 2 x 250 iterations" in x for x in lines)
        assert lines[-1].startswith("NUTS: 100%") and "past iteration 250 (sampling)" in lines[-1]
        past = [int(x.split("past iteration ")[1].split()[0]) for x in lines if "past" in x]
        assert past == sorted(past) and any(75 < k < 150 for k in past)   # on in stage 2
    assert "2 chains (parallel)" in proc.stdout
    s = pd.read_csv(out / "summary.csv").set_index("parameter")
    assert list(s.index) == ["CL", "omega_CL", "sigma_CP"]  # V fixed, IIV on CL only
    assert (out / "_COMPLETE").is_file()
    info = json.loads((out / "fit.json").read_text())["info"]
    assert info["init"] == "laplace" and info["metric"] == ("pooled" if pooled else "laplace")
    assert info["adapt_mass_matrix"] is False and len(info["step_size"]) == 2
    if pooled:
        assert info["pooled_metric"]["warmup_stage1"] == 75
        assert info["pooled_metric"]["draws_pooled"] == 2 * (75 - 37)
        # one centring weight per subject, sampled with them
        w = info["pooled_metric"]["centring_weights"]["CL"]
        assert len(w) == len(pd.read_csv(csv_path)["ID"].unique())
        assert info["parametrization"]["partial"]["CL"] == w
        # the median of the two adapted step sizes, shared
        eps = info["step_size_adapted"]
        assert len(eps) == 2 and eps[0] != eps[1]
        assert info["step_size"] == pytest.approx([np.median(eps)] * 2, rel=1e-6)


@pytest.mark.parametrize("args,needle", [
    (["--method", "gibbs"], "--method"),
    (["--chains", "0"], "--chains"),
    (["--thin", "0"], "--thin"),
    (["--max-tree-depth", "0"], "--max-tree-depth"),
    (["--centring-weights", "subject"], "--centring-weights needs --adaptive-centring"),
    (["--method", "nuts", "--pooled-metric", "--adaptive-centring", "--centring-weights",
      "row"],
     "--centring-weights"),
    (["--max-tree-depth", "10,6,2"], "--max-tree-depth"),
    (["--max-tree-depth", "ten"], "--max-tree-depth"),
    (["--method", "focei", "--thin", "2"], "--thin applies to --method nuts only"),
    (["--target-accept", "1.5"], "--target-accept"),
    (["--dense-mass", "sparse"], "--dense-mass"),
    (["--prior", "CL=lognormal(1.4)"], "--prior CL"),
    (["--prior", "CL"], "NAME=VALUE"),
    (["--prior", "XX=normal(0,1)"], "XX"),
    (["--fix", "XX=1"], "XX"),
    (["--fix", "CL=abc"], "number"),
    (["--residual", "CP=poisson"], "poisson"),
    (["--iiv", "CL,XX"], "XX"),
    (["--covariance", "banded"], "--covariance"),
    (["--parametrization", "funnel"], "--parametrization"),
    (["--parametrization", "centred=CL,XX"], "XX"),
    (["--stage1-parametrization", "centred"], "--pooled-metric"),
    (["--adaptive-centring"], "--pooled-metric"),
    (["--shared-step-size"], "--pooled-metric"),
    (["--method", "nuts", "--pooled-metric", "--stage1-parametrization", "sideways"],
     "--stage1-parametrization"),
    (["--method", "nuts", "--pooled-metric", "--stage1-parametrization", "centred=XX"], "XX"),
    (["--chains", "two"], ""),
    (["--pred-draws", "-1"], "--pred-draws"),
    (["--estimate", "CL,XX"], "XX"),
    (["--init", "mode"], "--init"),
    (["--adapt-mass", "sometimes"], "--adapt-mass"),
    (["--method", "nuts", "--warmup", "10", "--pooled-metric"], "--pooled-metric"),
    (["--pooled-metric"], "--pooled-metric"),
])
def test_bad_options_exit_2(csv_path, tmp_path, capsys, args, needle):
    rc = main(["fit", str(csv_path), "--model", "one_cmt_iv", "--out", str(tmp_path / "x"),
               "--method", "map", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err
    assert not (tmp_path / "x" / "_COMPLETE").exists()


def test_missing_dataset_and_unknown_model_exit_2(csv_path, tmp_path, capsys):
    assert main(["fit", str(tmp_path / "none.csv"), "--model", "one_cmt_iv", "--out",
                 str(tmp_path / "x")]) == 2
    assert main(["fit", str(csv_path), "--model", "no_such_model", "--out",
                 str(tmp_path / "x")]) == 2
