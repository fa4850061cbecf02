"""Validation: every violation reported at once, with rule, column, subject ID and file lines."""

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from il2pkpd.data import RULES, format_lines, read_dataset, validate
from il2pkpd.errors import DatasetError, InputError

MALFORMED = Path(__file__).parent / "data" / "malformed"


@dataclass(frozen=True)
class _Out:
    name: str
    cmt: int | None = None


@dataclass(frozen=True)
class StandInModel:
    """The attributes read_dataset needs from a model (compartments, outputs)."""

    compartments: dict = field(default_factory=lambda: {1: "depot", 2: "central", 3: "periph"})
    outputs: dict = field(default_factory=lambda: {1: _Out("CP", 2), 2: _Out("NEUT", None)})
    name: str = "stand_in"


def _csv(tmp_path, text):
    path = tmp_path / "d.csv"
    path.write_text(text)
    return path


def _violations(source, **kw) -> pd.DataFrame:
    with pytest.raises(DatasetError) as exc:
        read_dataset(source, **kw)
    return exc.value.violations


def test_format_lines_groups_consecutive_numbers():
    assert format_lines([5, 6, 7, 8, 9, 12]) == "5-9, 12"
    assert format_lines([3]) == "3"
    assert format_lines([]) == ""
    assert format_lines(range(2, 100, 2), max_groups=3) == "2, 4, 6, ... (46 more lines)"


def test_every_violation_reported_at_once():
    v = _violations(MALFORMED / "combo_every_row_wrong.csv")
    assert list(v.columns) == ["rule", "column", "ID", "lines", "message"]
    assert {"amt_negative", "rate_invalid", "addl_without_ii", "ss_invalid", "time_decreasing",
            "obs_missing_dv", "evid_unknown"} <= set(v["rule"])
    assert set(v["ID"]) == {1}
    # ordered by file line
    firsts = [int(x.split(",")[0].split("-")[0]) for x in v["lines"]]
    assert firsts == sorted(firsts)


def test_violation_rows_group_lines_per_subject(tmp_path):
    text = "ID,TIME,AMT,DV\n" + "".join(f"1,{t},-1,.\n" for t in range(5)) + "1,5,0,2\n" \
        "1,6,-1,.\n2,0,-1,.\n"
    v = _violations(_csv(tmp_path, text))
    v = v[v["rule"] == "amt_negative"]
    assert v[["ID", "lines"]].values.tolist() == [[1, "2-6, 8"], [2, "9"]]


def test_dataset_error_is_an_input_error_and_renders_table(tmp_path):
    with pytest.raises(InputError) as exc:
        read_dataset(_csv(tmp_path, "ID,TIME,AMT,DV\n1,0,-5,.\n"))
    text = exc.value.render()
    assert "AMT, line 2 (ID 1): AMT -5 is negative" in text
    assert "amt_negative" in text


def test_one_typo_gives_one_violation(tmp_path):
    text = "ID,TIME,AMT,DV,MDV,EVID\n1,0,100,.,1,1\n1,1,0,5..2,0,0\n"
    v = _violations(_csv(tmp_path, text))
    assert v["rule"].tolist() == ["non_numeric"]


def test_validate_returns_table_without_raising(tmp_path, shared_benchmarks):
    assert validate(shared_benchmarks / "iv_2cmt_single_dose.csv").empty
    v = validate(_csv(tmp_path, "ID,TIME,AMT,DV\n1,0,-5,.\n"))
    assert v["rule"].tolist() == ["amt_negative"]


def test_constant_infusion_at_steady_state_needs_no_ii(tmp_path):
    text = "ID,TIME,AMT,RATE,SS,EVID,DV\n1,0,0,5,1,1,.\n1,1,0,0,0,0,2\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["SS"].tolist() == [1, 0]


def test_time_may_restart_at_reset_records(tmp_path):
    text = "ID,TIME,AMT,EVID,DV\n1,0,10,1,.\n1,5,0,0,2\n1,0,10,4,.\n1,2,0,0,3\n"
    assert len(read_dataset(_csv(tmp_path, text)).df) == 4
    bad = text.replace("1,0,10,4,.", "1,0,10,1,.")
    v = _violations(_csv(tmp_path, bad))
    assert v[["rule", "lines"]].values.tolist() == [["time_decreasing", "4"]]


def test_time_may_restart_across_subjects(tmp_path):
    read_dataset(_csv(tmp_path, "ID,TIME,DV\n1,0,1\n1,5,1\n2,0,1\n"))


def test_reappearing_id_warns_but_reads(tmp_path):
    ds = read_dataset(_csv(tmp_path, "ID,TIME,DV\n1,0,1\n1,5,1\n2,0,1\n1,0,1\n"))
    assert len(ds.warnings) == 1 and "line 5" in ds.warnings[0]
    # time restarts in the new block: not a decreasing-time violation
    assert ds.subject_index.tolist() == [0, 0, 1, 2]


def test_model_with_mapping_outputs_checks_cmt_and_output(tmp_path):
    model = StandInModel()
    text = "ID,TIME,AMT,DV,CMT\n1,0,100,.,1\n1,1,0,5,2\n1,2,0,6,3\n1,3,100,.,4\n"
    v = _violations(_csv(tmp_path, text), model=model)
    rows = v[["rule", "column", "lines"]].values.tolist()
    assert ["cmt_no_output", "CMT", "4"] in rows
    assert ["cmt_unknown", "CMT", "5"] in rows
    assert "depot" in v.loc[v["rule"] == "cmt_unknown", "message"].iloc[0]


def test_model_dvid_checked_when_data_has_dvid(tmp_path):
    text = "ID,TIME,AMT,DV,DVID,CMT\n1,0,100,.,1,1\n1,1,0,5,1,2\n1,2,0,6,3,2\n"
    v = _violations(_csv(tmp_path, text), model=StandInModel())
    assert v[["rule", "column", "lines"]].values.tolist() == [["dvid_unknown", "DVID", "4"]]
    good = text.replace("1,2,0,6,3,2", "1,2,0,6,2,2")
    assert read_dataset(_csv(tmp_path, good), model=StandInModel()).has_dvid


def test_model_with_sequence_outputs_and_dosing_cmts(tmp_path):
    @dataclass(frozen=True)
    class Spec:
        dvid: int
        name: str
        cmt: int | None

    @dataclass(frozen=True)
    class SeqModel:
        compartments: dict
        outputs: tuple
        dosing_cmts: tuple
        name: str = "seq"

    model = SeqModel({1: "depot", 2: "central"}, (Spec(1, "CP", 2),), (1,))
    text = "ID,TIME,AMT,DV,CMT\n1,0,100,.,2\n1,1,0,5,2\n"
    v = _violations(_csv(tmp_path, text), model=model)
    assert v[["rule", "lines"]].values.tolist() == [["cmt_unknown", "2"]]


def test_multi_output_model_without_dvid_column_is_ambiguous(tmp_path):
    model = StandInModel(outputs={1: _Out("A"), 2: _Out("B")})
    v = _violations(_csv(tmp_path, "ID,TIME,DV\n1,0,1\n1,1,2\n"), model=model)
    assert v["rule"].tolist() == ["cmt_no_output"]
    assert v["lines"].tolist() == ["2-3"]


def test_real_model_checks_benchmark(shared_benchmarks):
    from il2pkpd.models import load_model

    ds = read_dataset(shared_benchmarks / "iv_2cmt_single_dose.csv",
                      model=load_model("two_cmt_iv"))
    assert ds.n_subjects == 120


def test_rules_table_documents_every_rule_in_the_corpus():
    corpus_rules = set(pd.read_csv(MALFORMED / "expected.csv")["rule"])
    assert corpus_rules <= set(RULES)
