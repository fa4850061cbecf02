"""Reading NONMEM-style datasets: canonical columns, defaults, BLQ conventions, covariates."""

import io

import numpy as np
import pandas as pd
import pytest

from il2pkpd.data import Dataset, read_dataset
from il2pkpd.data._columns import CANONICAL, CANONICAL_DTYPES
from il2pkpd.errors import DatasetError


def _csv(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_benchmark_single_dose_counts(shared_benchmarks):
    ds = read_dataset(shared_benchmarks / "iv_2cmt_single_dose.csv")
    assert ds.n_subjects == 120
    assert len(ds.observations) == 1800
    assert ds.df["ID"].nunique() == 120
    assert not ds.has_dvid
    assert ds.covariates == ("DVLN",)


def test_benchmark_friberg_counts(shared_benchmarks):
    ds = read_dataset(shared_benchmarks / "friberg_multiple_dose.csv")
    assert ds.n_subjects == 12
    assert len(ds.observations) == 816
    assert set(ds.observations["CMT"]) == {2, 8}
    assert len(ds.doses) == 12
    assert (ds.doses["ADDL"] == 6).all() and (ds.doses["II"] == 24).all()


def test_benchmark_multiple_dose_counts(shared_benchmarks):
    # ../shared/benchmarks/README.md: 120 subjects, 4,680 observations.
    ds = read_dataset(shared_benchmarks / "iv_2cmt_multiple_dose.csv")
    assert ds.n_subjects == 120 and len(ds.observations) == 4680


def test_canonical_columns_and_dtypes(shared_benchmarks):
    ds = read_dataset(shared_benchmarks / "friberg_multiple_dose.csv")
    assert tuple(ds.df.columns[: len(CANONICAL)]) == CANONICAL
    for name, dtype in CANONICAL_DTYPES.items():
        assert str(ds.df[name].dtype) == dtype, name
    for name in ds.covariates:
        assert ds.df[name].dtype == np.float64


def test_line_numbers_count_header_as_line_1(tmp_path):
    text = "ID,TIME,AMT,DV\n1,0,100,.\n\n# comment\n1,1,0,5.5\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["LINE"].tolist() == [2, 5]


def test_dataframe_lines_as_if_written_to_csv():
    ds = read_dataset(pd.DataFrame({"ID": [1, 1], "TIME": [0, 1], "DV": [1.0, 2.0]}))
    assert ds.df["LINE"].tolist() == [2, 3]
    assert ds.source == "<DataFrame>"


def test_missing_text_dot_empty_and_na(tmp_path):
    text = "ID,TIME,AMT,DV,WT\n1,0,100,.,70\n1,1,,NA,\n1,2,0,3.0,.\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["AMT"].tolist() == [100.0, 0.0, 0.0]
    assert np.isnan(ds.df["DV"].iloc[0]) and np.isnan(ds.df["DV"].iloc[1])
    assert ds.df["WT"].tolist() == [70.0, 70.0, 70.0]


def test_evid_mdv_derived_when_absent(tmp_path):
    text = "ID,TIME,AMT,DV\n1,0,100,.\n1,1,0,5.5\n1,2,0,.\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["EVID"].tolist() == [1, 0, 2]
    assert ds.df["MDV"].tolist() == [1, 0, 1]
    assert ds.df["CMT"].tolist() == [1, 1, 1]
    assert ds.df["DVID"].tolist() == [1, 1, 1]
    assert any("EVID derived" in n for n in ds.notes)


def test_evid_derived_from_given_mdv(tmp_path):
    text = "ID,TIME,AMT,DV,MDV\n1,0,0,.,1\n1,1,0,5.5,0\n1,2,0,4.0,1\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["EVID"].tolist() == [2, 0, 2]
    assert ds.df["MDV"].tolist() == [1, 0, 1]


def test_mdv_derived_when_evid_given(tmp_path):
    text = "ID,TIME,AMT,DV,EVID\n1,0,10,.,1\n1,1,0,5.5,0\n1,2,0,.,2\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["MDV"].tolist() == [1, 0, 1]


def test_dvid_kept_and_flagged(tmp_path):
    text = "ID,TIME,DV,DVID\n1,0,1,1\n1,0,2,2\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.has_dvid
    assert ds.df["DVID"].tolist() == [1, 2]


def test_blq_flag_with_lloq(tmp_path):
    text = "ID,TIME,DV,BLQ,LLOQ\n1,1,.,1,0.5\n1,2,3.0,0,0.5\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["BLQ"].tolist() == [True, False]
    assert ds.df["LLOQ"].tolist() == [0.5, 0.5]
    # A BLQ row with a limit is a used observation even without DV (M3).
    assert ds.df["MDV"].tolist() == [0, 0]
    assert ds.df["EVID"].tolist() == [0, 0]


def test_bloq_alias(tmp_path):
    text = "ID,TIME,DV,BLOQ,LLOQ\n1,1,0.2,1,0.5\n1,2,3.0,.,0.5\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["BLQ"].tolist() == [True, False]


def test_cens_limit_convention_takes_limit_from_dv(tmp_path):
    # Monolix/nlmixr2: CENS=1 and DV holds the LLOQ; LIMIT is the lower end (here 0).
    text = "ID,TIME,DV,CENS,LIMIT\n1,1,0.5,1,0\n1,2,3.0,0,.\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["BLQ"].tolist() == [True, False]
    assert ds.df["LLOQ"].iloc[0] == 0.5 and np.isnan(ds.df["LLOQ"].iloc[1])
    assert "CENS" not in ds.df.columns and "LIMIT" not in ds.covariates


def test_cens_with_missing_dv_uses_limit(tmp_path):
    text = "ID,TIME,DV,CENS,LIMIT\n1,1,.,1,0.25\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.df["LLOQ"].tolist() == [0.25]
    assert ds.df["MDV"].tolist() == [0]


def test_covariates_carried_forward_then_backward(tmp_path):
    text = ("ID,TIME,DV,WT,CRCL\n1,0,1,.,.\n1,1,1,70,90\n1,2,1,.,80\n"
            "2,0,1,55,.\n2,1,1,.,.\n")
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.covariates == ("WT", "CRCL")
    assert ds.df["WT"].tolist() == [70, 70, 70, 55, 55]
    assert ds.df["CRCL"].iloc[:3].tolist() == [90, 90, 80]
    # Never carried across subjects; all-missing stays missing, with a warning.
    assert ds.df["CRCL"].iloc[3:].isna().all()
    assert any("CRCL" in w and "subject 2" in w for w in ds.warnings)


def test_text_column_dropped_with_note(tmp_path):
    text = "ID,TIME,DV,SEX,NOTE\n1,0,1,1,first\n1,1,2,1,second\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.covariates == ("SEX",)
    assert "NOTE" not in ds.df.columns
    assert any("NOTE" in n and "dropped" in n for n in ds.notes)


def test_lowercase_nonmem_names_are_recognised(tmp_path):
    ds = read_dataset(_csv(tmp_path, "id,time,amt,dv\n1,0,5,.\n1,1,0,2\n"))
    assert ds.df["AMT"].tolist() == [5.0, 0.0]


def test_whitespace_separated_file(tmp_path):
    ds = read_dataset(_csv(tmp_path, "ID TIME AMT DV\n1 0 5 .\n1 1 0 2\n"))
    assert ds.df["DV"].iloc[1] == 2.0


def test_reappearing_id_is_a_separate_subject_with_warning(tmp_path):
    text = "ID,TIME,DV\n1,0,1\n1,1,1\n2,0,1\n1,0,1\n"
    ds = read_dataset(_csv(tmp_path, text))
    assert ds.n_subjects == 3
    assert ds.subject_index.tolist() == [0, 0, 1, 2]
    assert any("ID 1 reappears at line 5" in w for w in ds.warnings)


def test_dataframe_round_trip_keeps_lines_and_values(shared_benchmarks):
    ds = read_dataset(shared_benchmarks / "friberg_multiple_dose.csv")
    again = read_dataset(ds.df)
    pd.testing.assert_frame_equal(ds.df, again.df)


def test_dataset_source_passes_through():
    ds = read_dataset(pd.DataFrame({"ID": [1], "TIME": [0.0], "DV": [1.0]}))
    assert read_dataset(ds) is ds
    assert isinstance(ds, Dataset)


def test_stream_source():
    ds = read_dataset(io.StringIO("ID,TIME,DV\n1,0,1\n"))
    assert len(ds.df) == 1


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_dataset(tmp_path / "nope.csv")


def test_empty_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="empty"):
        read_dataset(_csv(tmp_path, "\n\n"))


def test_missing_cmt_follows_model_defaults(tmp_path):
    class Out:
        cmt = 2
        name = "CP"

    class OralModel:
        compartments = {1: "depot", 2: "central", 3: "peripheral"}
        dosing_cmts = (1, 2)
        outputs = {1: Out()}

    text = "ID,TIME,AMT,DV\n1,0,100,.\n1,1,0,5\n"
    ds = read_dataset(_csv(tmp_path, text), model=OralModel())
    assert ds.df["CMT"].tolist() == [1, 2]
    assert any("CMT missing" in n for n in ds.notes)
    # "." in a CMT column gets the same defaults
    ds = read_dataset(_csv(tmp_path, "ID,TIME,AMT,DV,CMT\n1,0,100,.,.\n1,1,0,5,.\n"),
                      model=OralModel())
    assert ds.df["CMT"].tolist() == [1, 2]


def test_unnamed_column_dropped(tmp_path):
    ds = read_dataset(_csv(tmp_path, ",ID,TIME,DV\n0,1,0,1\n1,1,1,2\n"))
    assert ds.covariates == ()
    assert any("no name" in n for n in ds.notes)


def test_units_with_a_dataset_source_refused():
    from il2pkpd.errors import OptionError
    from il2pkpd.units import DataUnits

    ds = read_dataset(pd.DataFrame({"ID": [1], "TIME": [0.0], "DV": [1.0]}))
    with pytest.raises(OptionError, match="units apply when a file"):
        read_dataset(ds, units=DataUnits(time="h"))


@pytest.mark.parametrize("module", ["il2pkpd.units", "il2pkpd.data._read",
                                    "il2pkpd.data._batch", "il2pkpd.data._violations"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_blq_flag_never_takes_dv_as_the_limit(tmp_path):
    # DV on BLQ rows is often an imputed LLOQ/2: without LLOQ the row is refused.
    with pytest.raises(DatasetError) as exc:
        read_dataset(_csv(tmp_path, "ID,TIME,DV,BLQ\n1,1,0.05,1\n"))
    v = exc.value.violations
    assert v[["rule", "column", "lines"]].values.tolist() == [["blq_without_lloq", "LLOQ", "2"]]


def test_steady_state_infusion_without_evid_is_a_dose(tmp_path):
    ds = read_dataset(_csv(tmp_path, "ID,TIME,AMT,RATE,SS,DV\n1,0,0,2,1,.\n1,1,0,0,0,4\n"))
    assert ds.df["EVID"].tolist() == [1, 0]


def test_line_column_in_file_is_ignored(tmp_path):
    ds = read_dataset(_csv(tmp_path, "LINE,ID,TIME,DV\n99,1,0,1\n"))
    assert ds.df["LINE"].tolist() == [2]
    assert any("LINE ignored" in n for n in ds.notes)
