"""The units layer: conversions against hand-derived references, per-size doses, refusals."""

import numpy as np
import pandas as pd
import pytest

from il2pkpd.data import read_dataset
from il2pkpd.errors import UnitError
from il2pkpd.units import (
    DataUnits,
    MolecularWeight,
    SpecificActivity,
    bsa,
    convert,
    dose_amount,
    parse_unit,
    split_per_size,
)

SA = SpecificActivity()  # aldesleukin label: 18 MIU per 1.1 mg
MW = MolecularWeight()  # 15.3 kDa


@pytest.mark.parametrize(
    ("value", "src", "dst", "expected"),
    [
        (1.0, "MIU", "IU", 1e6),
        (250.0, "kIU", "MIU", 0.25),
        (1.0, "mg", "ug", 1000.0),
        (1.0, "mg", "µg", 1000.0),
        (1.0, "mg", "μg", 1000.0),  # Greek mu as well as the micro sign
        (90.0, "min", "h", 1.5),
        (2.0, "day", "h", 48.0),
        (1.0, "ng/mL", "pg/mL", 1000.0),
        (1.0, "IU/mL", "IU/L", 1000.0),
        (5.0, "L/h", "mL/min", 5000.0 / 60.0),
    ],
)
def test_convert_matches_hand_values(value, src, dst, expected):
    assert convert(value, src, dst) == pytest.approx(expected, rel=1e-12)


def test_specific_activity_label_values():
    # 18 MIU per 1.1 mg: 16.36 MIU/mg, 61.1 pg per IU (DOMAIN.md section 1).
    assert SA.iu_per_mg == pytest.approx(18e6 / 1.1, rel=1e-12)
    assert convert(1.1, "mg", "MIU", specific_activity=SA) == pytest.approx(18.0, rel=1e-12)
    assert convert(1.0, "IU/mL", "pg/mL", specific_activity=SA) == pytest.approx(
        1.1e9 / 18e6, rel=1e-12)  # 1.1 mg = 1.1e9 pg per 18e6 IU
    assert convert(22.0, "MIU", "mg", specific_activity=SA) == pytest.approx(22 * 1.1 / 18)


def test_molar_conversion_through_molecular_weight():
    # 1 pM of a 15.3 kDa protein = 1e-12 mol/L * 15300 g/mol = 15.3 pg/mL.
    assert convert(1.0, "pM", "pg/mL", molecular_weight=MW) == pytest.approx(15.3, rel=1e-12)
    # 1 IU/mL = 61.1 pg/mL = about 4 pM (DOMAIN.md: "about 4 pM").
    pm = convert(1.0, "IU/mL", "pM", specific_activity=SA, molecular_weight=MW)
    assert pm == pytest.approx(1.1e9 / 18e6 / 15.3, rel=1e-12)
    assert 3.9 < pm < 4.1


def test_custom_specific_activity_changes_the_factor():
    other = SpecificActivity(activity=3.0, activity_unit="MIU", mass=1.0, mass_unit="mg")
    assert convert(2.0, "mg", "MIU", specific_activity=other) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("src", "dst", "kw"),
    [
        ("MIU", "IU", {}),
        ("day", "min", {}),
        ("ug", "mg", {}),
        ("mg", "IU", {"specific_activity": SA}),
        ("IU/mL", "pg/mL", {"specific_activity": SA}),
        ("pM", "pg/mL", {"molecular_weight": MW}),
        ("pM", "IU/mL", {"specific_activity": SA, "molecular_weight": MW}),
    ],
)
def test_round_trips(src, dst, kw):
    x = np.array([0.0, 1e-3, 2.5, 7e5])
    back = convert(convert(x, src, dst, **kw), dst, src, **kw)
    np.testing.assert_allclose(back, x, rtol=1e-13)


def test_incompatible_units_refused_naming_both():
    with pytest.raises(UnitError, match=r"cannot convert IU/mL to h"):
        convert(1.0, "IU/mL", "h")
    with pytest.raises(UnitError, match=r"IU.*min"):
        convert(1.0, "IU", "min")


def test_mass_to_activity_never_silent():
    with pytest.raises(UnitError, match=r"converting mg to IU needs a specific activity"):
        convert(1.0, "mg", "IU")
    with pytest.raises(UnitError, match=r"molecular weight"):
        convert(1.0, "pM", "pg/mL")


def test_unknown_unit():
    with pytest.raises(UnitError, match="unknown unit 'blorps'"):
        parse_unit("blorps")
    with pytest.raises(UnitError):
        parse_unit("")


def test_split_per_size():
    assert split_per_size("MIU/m2") == ("MIU", "m2")
    assert split_per_size("ug/kg") == ("ug", "kg")
    assert split_per_size("IU/mL") == ("IU/mL", None)
    assert split_per_size("mg") == ("mg", None)


def test_bsa_formulas_against_published_coefficients():
    wt, ht = 70.0, 170.0
    assert bsa(wt, ht) == pytest.approx(np.sqrt(wt * ht / 3600.0), rel=1e-12)
    assert bsa(wt, ht, "dubois") == pytest.approx(0.007184 * wt**0.425 * ht**0.725, rel=1e-12)
    assert bsa(wt, ht, "haycock") == pytest.approx(0.024265 * wt**0.5378 * ht**0.3964, rel=1e-12)
    assert bsa(wt, ht, "gehan-george") == pytest.approx(0.0235 * wt**0.51456 * ht**0.42246,
                                                         rel=1e-12)
    # Textbook value for a 70 kg, 170 cm adult: about 1.81-1.83 m2 with every formula.
    for formula in ("mosteller", "dubois", "haycock", "gehan_george"):
        assert 1.80 < bsa(wt, ht, formula) < 1.84
    with pytest.raises(UnitError, match="unknown BSA formula"):
        bsa(wt, ht, "boyd")


def test_iu_per_kg_dose():
    # High-dose IV: 600,000 IU/kg for a 70 kg patient is 42 MIU.
    assert dose_amount(600_000, "IU/kg", to="MIU", wt_kg=70.0) == pytest.approx(42.0)
    np.testing.assert_allclose(dose_amount(600_000, "IU/kg", wt_kg=[50.0, 100.0]), [3e7, 6e7])


def test_miu_per_m2_dose_from_bsa_or_height_and_weight():
    assert dose_amount(1.0, "MIU/m2", bsa_m2=1.8) == pytest.approx(1.8e6)
    expected = 0.26e6 * np.sqrt(80.0 * 180.0 / 3600.0)  # Mosteller
    assert dose_amount(0.26, "MIU/m2", wt_kg=80.0, ht_cm=180.0) == pytest.approx(expected)
    dubois = 0.26e6 * 0.007184 * 80.0**0.425 * 180.0**0.725
    assert dose_amount(0.26, "MIU/m2", wt_kg=80.0, ht_cm=180.0,
                       bsa_formula="dubois") == pytest.approx(dubois)


def test_ug_per_kg_to_iu_needs_specific_activity():
    with pytest.raises(UnitError, match="specific activity"):
        dose_amount(10.0, "ug/kg", to="IU", wt_kg=70.0)
    got = dose_amount(10.0, "ug/kg", to="IU", wt_kg=70.0, specific_activity=SA)
    assert got == pytest.approx(700e-3 * 18e6 / 1.1)


def test_per_size_dose_without_body_size_names_both_units():
    with pytest.raises(UnitError, match=r"IU/kg cannot be converted to IU without body weight"):
        dose_amount(1.0, "IU/kg")
    with pytest.raises(UnitError, match=r"MIU/m2 cannot be converted to MIU.*BSA"):
        dose_amount(1.0, "MIU/m2", to="MIU", wt_kg=70.0)


# --------------------------------------------------------------------------- dataset boundary


def _frame(**extra):
    d = {"ID": [1, 1, 1, 2, 2], "TIME": [0.0, 0.5, 1.0, 0.0, 2.0],
         "AMT": [2.0, 0.0, 0.0, 1.0, 0.0], "RATE": [4.0, 0.0, 0.0, 0.0, 0.0],
         "DV": [None, 122.0, 61.0, None, 30.5], "LLOQ": [10.0] * 5}
    d.update(extra)
    return pd.DataFrame(d)


def test_no_conversion_by_default():
    ds = read_dataset(_frame())
    assert ds.df["TIME"].tolist() == [0.0, 0.5, 1.0, 0.0, 2.0]
    assert not ds.units.declared


def test_dataset_units_converted_to_target():
    declared = DataUnits(time="day", amount="MIU", concentration="pg/mL")
    target = DataUnits(time="h", amount="IU", concentration="IU/mL", specific_activity=SA)
    raw = _frame()
    ds = read_dataset(raw, units=declared, target_units=target)
    pg_per_iu = 1.1e9 / 18e6
    np.testing.assert_allclose(ds.df["TIME"], raw["TIME"] * 24.0)
    np.testing.assert_allclose(ds.df["AMT"], raw["AMT"] * 1e6)
    np.testing.assert_allclose(ds.df["RATE"], raw["RATE"] * 1e6 / 24.0)  # MIU/day -> IU/h
    np.testing.assert_allclose(ds.df["DV"], raw["DV"] / pg_per_iu)
    np.testing.assert_allclose(ds.df["LLOQ"], raw["LLOQ"] / pg_per_iu)
    assert ds.units.time == "h" and ds.units.amount == "IU"
    assert ds.units.concentration == "IU/mL"


def test_dataset_iu_per_kg_doses_use_weight_covariate():
    raw = _frame(WT=[70.0, None, None, 55.0, 56.0])
    ds = read_dataset(raw, units=DataUnits(amount="IU/kg"), target_units=DataUnits(amount="MIU"))
    np.testing.assert_allclose(ds.df["AMT"], [2.0 * 70 / 1e6, 0, 0, 1.0 * 55 / 1e6, 0])
    np.testing.assert_allclose(ds.df["RATE"], [4.0 * 70 / 1e6, 0, 0, 0, 0])
    assert ds.units.amount == "MIU"


def test_dataset_miu_per_m2_doses_from_weight_and_height():
    raw = _frame(WT=[70.0] * 3 + [90.0] * 2, HT=[170.0] * 3 + [185.0] * 2)
    ds = read_dataset(raw, units=DataUnits(amount="MIU/m2", bsa_formula="haycock"))
    b1 = 0.024265 * 70.0**0.5378 * 170.0**0.3964
    b2 = 0.024265 * 90.0**0.5378 * 185.0**0.3964
    np.testing.assert_allclose(ds.df["AMT"], [2.0 * b1, 0, 0, 1.0 * b2, 0])
    assert ds.units.amount == "MIU"  # resolved to an absolute amount


def test_dataset_per_m2_prefers_bsa_covariate():
    raw = _frame(BSA=[1.5] * 3 + [2.0] * 2, WT=[70.0] * 5, HT=[170.0] * 5)
    ds = read_dataset(raw, units=DataUnits(amount="MIU/m2"), target_units=DataUnits(amount="IU"))
    np.testing.assert_allclose(ds.df["AMT"], [3e6, 0, 0, 2e6, 0])


def test_dataset_per_kg_without_weight_refused():
    with pytest.raises(UnitError, match=r"IU/kg cannot be converted to IU.*WT"):
        read_dataset(_frame(), units=DataUnits(amount="IU/kg"),
                     target_units=DataUnits(amount="IU"))


def test_dataset_target_from_model_units():
    class Out:
        def __init__(self, cmt, unit):
            self.cmt, self.unit = cmt, unit

    class Model:
        compartments = {1: "central"}
        outputs = {1: Out(1, "ng/mL")}
        time_unit = "h"
        amount_unit = "mg"

    ds = read_dataset(_frame(), model=Model(),
                      units=DataUnits(time="min", amount="ug", concentration="pg/mL"))
    np.testing.assert_allclose(ds.df["TIME"], _frame()["TIME"] / 60.0)
    np.testing.assert_allclose(ds.df["AMT"], _frame()["AMT"] / 1000.0)
    np.testing.assert_allclose(ds.df["RATE"], [4.0 / 1000.0 * 60.0, 0, 0, 0, 0])
    np.testing.assert_allclose(ds.df["DV"], _frame()["DV"] / 1000.0)


def test_dataset_conversion_mismatch_refused():
    with pytest.raises(UnitError, match=r"cannot convert pg/mL to h"):
        read_dataset(_frame(), units=DataUnits(concentration="pg/mL"),
                     target_units=DataUnits(concentration="h"))


def test_rate_codes_not_converted():
    raw = _frame(RATE=[-2.0, 0, 0, 0, 0])
    ds = read_dataset(raw, units=DataUnits(time="day", amount="MIU"),
                      target_units=DataUnits(time="h", amount="IU"))
    assert ds.df["RATE"].iloc[0] == -2.0


def test_per_dvid_concentration_units():
    raw = _frame(DVID=[1, 1, 2, 1, 2])
    units = DataUnits(concentration={1: "pg/mL", 2: "cells/uL"})
    target = DataUnits(concentration={1: "ng/mL", 2: "cells/mL"})
    ds = read_dataset(raw, units=units, target_units=target)
    np.testing.assert_allclose(ds.df["DV"], [np.nan, 0.122, 61000.0, np.nan, 30500.0])
