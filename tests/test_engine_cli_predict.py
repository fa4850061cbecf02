"""`il2pkpd predict` end to end."""

import json
import math

import pandas as pd
import pytest

from il2pkpd.cli import main


@pytest.fixture()
def data_csv(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("ID,TIME,AMT,RATE,EVID,MDV,CMT,DV\n"
                 "1,0,100,0,1,1,1,.\n"
                 "1,1,0,0,0,0,1,1.8\n"
                 "1,4,0,0,0,0,1,1.3\n"
                 "2,0,100,0,1,1,1,.\n"
                 "2,2,0,0,0,0,1,1.6\n")
    return p


def test_predict_json_params_writes_one_row_per_observation(tmp_path, data_csv):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"CL": 5.0, "V": 50.0}))
    out = tmp_path / "out.csv"
    assert main(["predict", str(data_csv), "--model", "one_cmt_iv", "--params", str(params),
                 "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["ID", "TIME", "CMT", "PRED"]
    expected = [2 * math.exp(-0.1), 2 * math.exp(-0.4), 2 * math.exp(-0.2)]
    assert df["PRED"].tolist() == pytest.approx(expected, rel=1e-9)


def test_predict_csv_params_per_subject_and_dvid_column(tmp_path, data_csv):
    data = pd.read_csv(data_csv, na_values=["."]).assign(DVID=1)
    data_path = tmp_path / "data_dvid.csv"
    data.to_csv(data_path, index=False, na_rep=".")
    params = tmp_path / "p.csv"
    params.write_text("ID,CL,V\n1,5,50\n2,10,50\n")
    out = tmp_path / "out.csv"
    assert main(["predict", str(data_path), "--model", "one_cmt_iv", "--params", str(params),
                 "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["ID", "TIME", "CMT", "DVID", "PRED"]
    assert df["PRED"].iloc[2] == pytest.approx(2 * math.exp(-0.4), rel=1e-9)


@pytest.mark.parametrize("params,fragment", [
    ({"CL": 5.0}, "V: missing"),
    ({"CL": 5.0, "V": 50.0, "VV": 1.0}, "VV: unknown"),
    ({"CL": -5.0, "V": 50.0}, "CL: must be > 0"),
    ({"CL": 5.0, "V": 50.0, "F1": -0.5}, "F1: must be >= 0"),
])
def test_bad_parameters_exit_2_with_message(tmp_path, data_csv, capsys, params, fragment):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(params))
    out = tmp_path / "out.csv"
    assert main(["predict", str(data_csv), "--model", "one_cmt_iv", "--params", str(p),
                 "--out", str(out)]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_csv_params_missing_subject_exit_2(tmp_path, data_csv, capsys):
    p = tmp_path / "p.csv"
    p.write_text("ID,CL,V\n1,5,50\n")
    assert main(["predict", str(data_csv), "--model", "one_cmt_iv", "--params", str(p),
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert "ID(s) [2]" in capsys.readouterr().err


def test_unknown_model_exit_2(tmp_path, data_csv, capsys):
    p = tmp_path / "p.json"
    p.write_text("{}")
    assert main(["predict", str(data_csv), "--model", "nope", "--params", str(p),
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert "unknown model" in capsys.readouterr().err
