"""The regimen language: valid forms, their dose schedules, and errors with a caret."""

import doctest
import re

import numpy as np
import pytest

import il2pkpd.simulate.regimen as regimen_module
from il2pkpd.errors import InputError, RegimenError, UnitError
from il2pkpd.simulate import Phase, Regimen, Route, parse_regimen
from il2pkpd.units import SpecificActivity


def times(text):
    return list(parse_regimen(text).dose_table()["TIME"])


@pytest.mark.parametrize(
    "text, route, interval, n_doses, per, duration",
    [
        ("1 MIU SC daily x5", Route.SC, 24.0, 5, None, 0.0),
        ("600000 IU/kg IV 15min q8h x14", Route.IV, 8.0, 14, "kg", 0.25),
        ("600,000 IU/kg IV over 15 min q8h x14", Route.IV, 8.0, 14, "kg", 0.25),
        ("6e5 IU/kg IV 15 min infusion every 8 hours x14", Route.IV, 8.0, 14, "kg", 0.25),
        ("1 MIU/m2 SC qd x56", Route.SC, 24.0, 56, "m2", 0.0),
        ("0.26 MIU/m2 SC q3d x10", Route.SC, 72.0, 10, "m2", 0.0),
        ("1 MIU SC qod x7", Route.SC, 48.0, 7, None, 0.0),
        ("1 MIU SC every other day x7", Route.SC, 48.0, 7, None, 0.0),
        ("1 MIU SC q12h x10", Route.SC, 12.0, 10, None, 0.0),
        ("1 MIU SC bid x10", Route.SC, 12.0, 10, None, 0.0),
        ("1.5 MIU/m2 SC once", Route.SC, 0.0, 1, "m2", 0.0),
        ("1 miu sc DAILY X5", Route.SC, 24.0, 5, None, 0.0),
        ("1 MIU IV bolus once", Route.IV, 0.0, 1, None, 0.0),
        ("1 MIU IV q8h x3", Route.IV, 8.0, 3, None, 0.0),
        ("4 MIU IV 24h daily x7", Route.IV, 24.0, 7, None, 24.0),
        ("1 MIU/m2 SC daily for 8 weeks", Route.SC, 24.0, 56, "m2", 0.0),
        ("1 MIU SC bid for 5 days", Route.SC, 12.0, 10, None, 0.0),
        ("0.26 MIU/m2 SC q3d for 28 days", Route.SC, 72.0, 10, "m2", 0.0),
        ("1 MIU SC daily x5 days", Route.SC, 24.0, 5, None, 0.0),
        ("1 MIU SC weekly x4", Route.SC, 168.0, 4, None, 0.0),
        ("50 ug/kg SC q2w x3", Route.SC, 336.0, 3, "kg", 0.0),
    ],
)
def test_valid_single_phase_forms(text, route, interval, n_doses, per, duration):
    r = parse_regimen(text)
    assert len(r.phases) == 1
    p = r.phases[0]
    assert (p.route, p.interval, p.n_doses, p.per) == (route, interval, n_doses, per)
    assert p.duration == pytest.approx(duration)
    assert parse_regimen(r.to_text()) == r


def test_daily_x5_gives_five_doses_a_day_apart_in_iu():
    table = parse_regimen("1 MIU SC daily x5").dose_table()
    np.testing.assert_allclose(table["TIME"], [0, 24, 48, 72, 96])
    np.testing.assert_allclose(table["AMOUNT_IU"], 1e6)
    assert set(table["ROUTE"]) == {"SC"}


def test_high_dose_schedule_with_held_doses():
    r = parse_regimen("600000 IU/kg IV 15min q8h x14 hold 5,6,10-11")
    np.testing.assert_allclose(r.dose_table()["TIME"],
                               [8.0 * k for k in range(14) if k + 1 not in (5, 6, 10, 11)])
    assert r.n_doses == 10
    assert r.phases[0].hold == (5, 6, 10, 11)


def test_hold_days_skips_every_dose_on_those_days():
    assert times("1 MIU SC daily x7 hold days 3-4") == [0, 24, 96, 120, 144]
    # q8h: day 2 holds doses at 24, 32 and 40 h
    assert times("1 MIU IV q8h x9 hold day 2") == [0, 8, 16, 48, 56, 64]


def test_then_starts_where_the_previous_phase_ends():
    r = parse_regimen("0.33 MIU/m2 SC daily x14; then 1 MIU/m2 SC daily x14")
    assert [p.start for p in r.phases] == [0.0, 336.0]
    assert r.n_doses == 28
    t = r.dose_table()
    np.testing.assert_allclose(t["TIME"], 24.0 * np.arange(28))
    np.testing.assert_allclose(t["AMOUNT_IU"], [0.33e6] * 14 + [1e6] * 14)
    # 'then' without ';' reads the same
    assert parse_regimen("0.33 MIU/m2 SC daily x14 then 1 MIU/m2 SC daily x14") == r


def test_rest_and_start_day_shift_phases():
    r = parse_regimen("600000 IU/kg IV 15min q8h x14; rest 9 days; 600000 IU/kg IV 15min q8h x14")
    assert r.phases[1].start == pytest.approx(14 * 8 + 9 * 24)
    assert times("1 MIU SC daily x3 start day 3") == [48, 72, 96]
    assert times("1 MIU SC once start 6 h") == [6]
    assert parse_regimen("1 MIU SC once; 1 MIU SC once").phases[1].start == 24.0


def test_units_resolve_to_iu_and_mass_needs_a_specific_activity():
    assert parse_regimen("250 kIU SC once").phases[0].amount_iu() == 250e3
    mass = parse_regimen("1.1 mg SC once").phases[0]
    label = SpecificActivity()                     # 18 MIU per 1.1 mg (US label)
    assert mass.amount_iu(label) == pytest.approx(18e6)
    assert parse_regimen("110 µg SC once").phases[0].amount_iu(label) == pytest.approx(1.8e6)
    with pytest.raises(UnitError, match="specific_activity"):
        mass.amount_iu()


def test_python_api_builds_the_same_regimen():
    text = parse_regimen("1 MIU SC daily x5; then 2 MIU SC daily x5")
    built = Regimen((Phase(1.0, "MIU", "SC", interval=24, n_doses=5),)).then(
        Phase(2.0, "MIU", Route.SC, interval=24, n_doses=5))
    assert built == text


def test_phase_validation_rejects_impossible_values():
    with pytest.raises(RegimenError, match="positive"):
        Phase(-1.0, "MIU", "SC")
    with pytest.raises(RegimenError, match="longer than the dosing interval"):
        Phase(1.0, "MIU", "IV", interval=8, n_doses=3, duration=10)
    with pytest.raises(RegimenError, match="IV doses only"):
        Phase(1.0, "MIU", "SC", duration=1)
    with pytest.raises(RegimenError, match="outside 1..3"):
        Phase(1.0, "MIU", "SC", interval=24, n_doses=3, hold=(4,))


@pytest.mark.parametrize(
    "text, column, expected",
    [
        ("1 MIU SC dialy x5", 10, "a schedule"),
        ("1 MUI SC daily x5", 3, "a dose unit"),
        ("1 MIU PO daily x5", 7, "a route"),
        ("1 MIU SC daily", 15, "a count"),
        ("MIU SC daily x5", 1, "a dose amount"),
        ("1 MIU SC daily x5 hold 7", 24, "dose numbers within 1..5"),
        ("1 MIU SC daily x5;", 19, "another phase"),
        ("1 MIU/lb SC once", 6, "'/kg' or '/m2'"),
        ("1 MIU SC 15min once", 10, "IV doses only"),
        ("1 MIU IV 15 q8h x3", 13, "infusion duration unit"),
        ("1 MIU SC x5", 10, "a schedule"),
        ("1 MIU SC daily x5 foo", 19, "';' or 'then'"),
        ("1 MIU IV 10h q8h x3", 10, "no longer than the dosing interval"),
        ("1 MIU SC daily x5 hold days 9", 29, "days 1-5"),
        ("1 MIU SC once x3", 15, "no count after 'once'"),
        ("1 MIU SC daily x0", 17, "whole number"),
        ("1 MIU SC daily x5 hold 1-5", 16, "leaves at least one dose"),
        ("", 1, "a dosing phase"),
        ("rest 2 days", 1, "at least one dosing phase"),
    ],
)
def test_malformed_regimen_shows_position_and_expectation(text, column, expected):
    with pytest.raises(RegimenError) as info:
        parse_regimen(text)
    message = str(info.value)
    assert isinstance(info.value, InputError)
    assert f"at character {column}:" in message


    assert re.search(expected, message)
    lines = message.splitlines()
    # the text, then a caret under the reported column
    assert lines[1] == "  " + text
    assert lines[2] == "  " + " " * (column - 1) + "^"


def test_regimen_module_doctests():
    result = doctest.testmod(regimen_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
