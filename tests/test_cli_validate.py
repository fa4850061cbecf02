"""`il2pkpd validate`: summaries of good datasets (exit 0), violation tables of bad ones (exit 2)."""

import csv
import re
from pathlib import Path

import pytest

from il2pkpd.cli import main

MALFORMED = Path(__file__).parent / "data" / "malformed"


def _expected() -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    with open(MALFORMED / "expected.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["file"], []).append(row)
    return out


EXPECTED = _expected()


def test_corpus_has_at_least_30_files_each_with_expectations():
    files = sorted(p.name for p in MALFORMED.glob("*.csv") if p.name != "expected.csv")
    assert len(files) >= 30
    assert sorted(EXPECTED) == files


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_dataset_exits_2_naming_column_and_line(name, capsys):
    rows = EXPECTED[name]
    args = ["validate", str(MALFORMED / name)]
    if rows[0]["model"]:
        args += ["--model", rows[0]["model"]]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err + captured.out
    for row in rows:
        # One row of the violation table: rule, column, ID, lines (holding the line), message.
        pattern = (rf"^\s*{re.escape(row['rule'])}\s+{re.escape(row['column'])}\s+\S+\s+"
                   rf"(?:[\d, -]*[ ,-])?{row['line']}(?![\d])")
        assert re.search(pattern, err, flags=re.MULTILINE), (row, err)


def test_benchmark_single_dose_summary(shared_benchmarks, capsys):
    assert main(["validate", str(shared_benchmarks / "iv_2cmt_single_dose.csv")]) == 0
    out = capsys.readouterr().out
    assert "subjects: 120\n" in out
    assert "observations: 1,800 used" in out
    assert "CMT 1, infusion: 120 records" in out
    assert "BLQ: 0 of 1,800 (0.0%)" in out
    assert "covariates: DVLN" in out


def test_benchmark_friberg_summary(shared_benchmarks, capsys):
    assert main(["validate", str(shared_benchmarks / "friberg_multiple_dose.csv")]) == 0
    out = capsys.readouterr().out
    assert "subjects: 12\n" in out
    assert "observations: 816 used" in out
    assert "CMT 2: 468" in out and "CMT 8: 348" in out
    assert "dose records: 12 (84 doses with ADDL)" in out


def test_summary_names_compartments_with_model(shared_benchmarks, capsys):
    path = shared_benchmarks / "iv_2cmt_single_dose.csv"
    assert main(["validate", str(path), "--model", "two_cmt_iv"]) == 0
    out = capsys.readouterr().out
    assert "model: two_cmt_iv" in out
    assert "CMT 1 (central), infusion" in out


def test_warning_for_reappearing_id_is_printed(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("ID,TIME,DV\n1,0,1\n2,0,1\n1,1,1\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "subjects: 3 (2 distinct IDs)" in out
    assert "warning: ID 1 reappears at line 4" in out


def test_declared_units_shown(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("ID,TIME,AMT,DV\n1,0,1,.\n1,1,0,5\n")
    assert main(["validate", str(path), "--time-unit", "day", "--amount-unit", "MIU"]) == 0
    out = capsys.readouterr().out
    assert "time: 0 to 1 day" in out and "amount unit MIU" in out


def test_unknown_unit_exits_2(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("ID,TIME,DV\n1,0,1\n")
    assert main(["validate", str(path), "--time-unit", "fortnightz"]) == 2
    assert "unknown unit 'fortnightz'" in capsys.readouterr().err


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_help(capsys):
    assert main(["validate", "--help"]) == 0
    assert "--model" in capsys.readouterr().out


IL2_CSV = ("ID,TIME,AMT,DV,DVID,CMT,BLQ,LLOQ,WT,HT\n1,0,1,.,1,1,0,.,70,170\n"
           "1,0.5,0,30,1,2,0,10,.,.\n1,1,0,5,1,2,1,10,.,.\n1,24,0,20,2,7,0,.,.,.\n")


def test_units_converted_to_model_units(tmp_path, capsys):
    path = tmp_path / "il2.csv"
    path.write_text(IL2_CSV)
    args = ["validate", str(path), "--model", "il2_pkpd", "--time-unit", "day",
            "--amount-unit", "MIU/m2", "--conc-unit", "1=pg/mL,2=cells/uL",
            "--specific-activity", "18 MIU per 1.1 mg"]
    assert main(args) == 0
    out = capsys.readouterr().out
    bsa = (70.0 * 170.0 / 3600.0) ** 0.5  # Mosteller
    assert f"AMT {1e6 * bsa:g}" in out and "amount unit IU" in out
    assert "time: 0 to 576 h" in out
    assert "DVID 1 (IL2), CMT 2 (central): 2 (1 BLQ, 50.0%)" in out
    assert "DVID 2 (TREG), CMT 7 (treg): 1" in out


def test_mass_concentration_without_specific_activity_exits_2(tmp_path, capsys):
    path = tmp_path / "il2.csv"
    path.write_text(IL2_CSV)
    args = ["validate", str(path), "--model", "il2_pkpd", "--conc-unit", "1=pg/mL,2=cells/uL"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "converting pg/mL to IU/mL needs a specific activity" in err
    assert "--specific-activity" in err


def test_one_concentration_unit_for_two_kinds_of_output_exits_2(tmp_path, capsys):
    path = tmp_path / "il2.csv"
    path.write_text(IL2_CSV)
    args = ["validate", str(path), "--model", "il2_pkpd", "--conc-unit", "IU/mL"]
    assert main(args) == 2
    assert "cannot convert IU/mL to cells/uL" in capsys.readouterr().err


def test_bad_conc_unit_option_exits_2(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("ID,TIME,DV\n1,0,1\n")
    assert main(["validate", str(path), "--conc-unit", "x=pg/mL"]) == 2
    assert "DVID=unit" in capsys.readouterr().err
