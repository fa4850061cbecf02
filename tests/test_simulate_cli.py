"""`il2pkpd simulate`: outputs, atomic folder, exit status 2 on bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from il2pkpd.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "run"
    rc = main(["simulate", "--model", "il2_pkpd", "--regimen", "1 MIU SC daily x3",
               "--regimen", "3 MIU SC daily x3", "--n", "16", "--days", "10", "--seed", "2",
               "--target", "treg_fold>=1.5 and nk_fold<=1.3", "--patients", "--out", str(out)])
    assert rc == 0
    return out


def test_simulate_writes_metrics_profiles_plots_and_marker(run_dir):
    for name in ("metrics.csv", "profiles.csv", "profiles.png", "metrics.png", "simulation.json",
                 "patients.csv", "_COMPLETE"):
        assert (run_dir / name).is_file(), name
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns[:5]) == ["regimen", "metric", "median", "q5", "q95"]
    assert set(metrics["regimen"]) == {"1 MIU SC daily x3", "3 MIU SC daily x3"}
    med = metrics.set_index(["regimen", "metric"])["median"]
    assert med[("3 MIU SC daily x3", "cmax")] > med[("1 MIU SC daily x3", "cmax")]
    assert np.isclose(med[("1 MIU SC daily x3", "cum_dose")], 3.0)
    assert "P(treg_fold>=1.5 and nk_fold<=1.3)" in set(metrics["metric"])
    profiles = pd.read_csv(run_dir / "profiles.csv")
    assert list(profiles.columns) == ["regimen", "output", "time", "median", "q5", "q95"]
    assert profiles["time"].max() == pytest.approx(240.0)
    patients = pd.read_csv(run_dir / "patients.csv")
    assert len(patients) == 32
    settings = json.loads((run_dir / "simulation.json").read_text())
    assert settings["seed"] == 2 and settings["n"] == 16
    assert (run_dir / "profiles.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args", [
    ["--regimen", "1 MIU SC dialy x5"],
    ["--regimen", "1 MIU SC daily x5", "--n", "0"],
    ["--regimen", "1 MIU SC daily x5", "--days", "-1"],
    ["--regimen", "1 MIU SC daily x5", "--target", "treg_fold >= "],
    ["--regimen", "1 MIU SC daily x5", "--posterior", "/no/such/fit"],
    ["--regimen", "1 mg SC once"],
    ["--regimen", "1 MIU SC once", "--model", "no_such_model"],
    ["--regimen", "1 MIU SC once", "--precision", "half"],
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args):
    out = tmp_path / "run"
    base = ["simulate", "--model", "il2_pkpd", "--out", str(out), "--days", "2", "--n", "2"]
    rc = main(base + args)      # a later option overrides an earlier one
    assert rc == 2
    assert "error:" in capsys.readouterr().err
    assert not (out / "_COMPLETE").exists()
