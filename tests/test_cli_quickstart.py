import pandas as pd

from il2pkpd.cli import main


def test_quickstart_validates_bundled_trial_and_writes_simulation(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--n", "64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "subjects: 48" in text and "valid: yes" in text
    m = pd.read_csv(out / "metrics.csv")
    assert set(m.regimen) == {"1 MIU SC daily x5", "1 MIU SC qod x3"}
    fold = m[m.metric == "treg_fold"].set_index("regimen")["median"]
    assert fold["1 MIU SC daily x5"] > fold["1 MIU SC qod x3"] > 1.0   # more drug, more Tregs
    for f in ("profiles.csv", "profiles.png", "metrics.png", "_COMPLETE"):
        assert (out / f).is_file()
