import json

import pandas as pd
import pytest

from il2pkpd.cli import main


def test_quickstart_without_fit_validates_and_simulates_the_default_population(tmp_path,
                                                                                capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--no-fit", "--n", "64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "subjects: 48" in text and "valid: yes" in text and "fit skipped" in text
    assert not (out / "fit").exists()
    m = pd.read_csv(out / "simulation" / "metrics.csv")
    fold = m[m.metric == "treg_fold"].set_index("regimen")["median"]
    assert fold["1 MIU SC daily x5"] > fold["1 MIU SC qod x3"] > 1.0   # more drug, more Tregs


def test_quickstart_rejects_bad_options(tmp_path):
    assert main(["quickstart", "--subjects", "-1", "--out", str(tmp_path / "q")]) == 2


@pytest.mark.slow
def test_quickstart_validates_fits_reports_and_simulates(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--n", "64", "--subjects", "6", "--draws", "100",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "subjects: 48" in text and "valid: yes" in text
    fit = out / "fit"
    for f in ("posterior.nc", "summary.csv", "individual.csv", "fit.json", "report.html",
              "_COMPLETE"):
        assert (fit / f).is_file(), f
    info = json.loads((fit / "fit.json").read_text())
    assert info["method"] == "focei" and info["info"]["n_subjects"] == 6
    s = pd.read_csv(fit / "summary.csv").set_index("parameter")
    meta = json.loads(open("datasets/il2_lowdose_sc.meta.json").read())
    # six subjects: typical values within a factor 1.5 of the generating ones
    for name in ("CL", "V1", "KA", "TREG0", "NK0"):
        assert abs(s.loc[name, "median"] / meta["typical_values"][name] - 1) < 0.5, name
    sim = out / "simulation"
    m = pd.read_csv(sim / "metrics.csv")
    assert set(m.regimen) == {"1 MIU SC daily x5", "1 MIU SC qod x3"}
    fold = m[m.metric == "treg_fold"].set_index("regimen")["median"]
    assert fold["1 MIU SC daily x5"] > fold["1 MIU SC qod x3"] > 1.0   # more drug, more Tregs
    for f in ("profiles.csv", "profiles.png", "metrics.png", "_COMPLETE"):
        assert (sim / f).is_file()
