"""Exposure/response metrics on profiles whose answers are known in closed form."""

import doctest
import math
import re

import numpy as np
import pytest

import il2pkpd.simulate.metrics as metrics_module
from il2pkpd.errors import InputError, OptionError
from il2pkpd.simulate.metrics import (
    attainment,
    auc_cumulative,
    auc_windows,
    exposure_metrics,
    parse_target,
    response_metrics,
    summarize,
    time_above,
)


def bolus_profile(t, dose_times, dose, cl, v, *, post=None):
    """One-compartment IV bolus superposition, C in amount/L. At a repeated time the first copy is
    the value before the dose and the second the value after it."""
    k = cl / v
    c = np.zeros_like(t)
    seen = {}
    for j, tj in enumerate(t):
        n_copies_before = seen.get(tj, 0)
        seen[tj] = n_copies_before + 1
        for td in dose_times:
            is_jump = np.isclose(td, tj)
            if tj > td + 1e-12 or (is_jump and (n_copies_before >= 1 or post == "all")):
                c[j] += dose / v * math.exp(-k * (tj - td))
    return c


def grid_with_jumps(horizon, step, dose_times):
    base = np.arange(0.0, horizon + 1e-9, step)
    t = np.sort(np.concatenate([base, np.asarray(dose_times, float)]))
    return t


def test_auc_of_one_compartment_bolus_equals_dose_over_cl():
    dose, cl, v = 1000.0, 5.0, 20.0           # k = 0.25 /h
    t = np.array([0.0, 0.0, 0.5, 1.0, 3.0, 7.0, 20.0, 60.0, 200.0])  # a coarse, uneven grid
    c = bolus_profile(t, [0.0], dose, cl, v)
    auc = float(auc_cumulative(t, c[None, :])[0, -1])
    assert auc == pytest.approx(dose / cl, rel=1e-12)


def test_auc_per_interval_matches_superposition_formula():
    dose, cl, v, tau = 100.0, 2.0, 10.0, 12.0   # k = 0.2 /h
    k = cl / v
    doses = [tau * i for i in range(6)]
    t = grid_with_jumps(96.0, 1.0, doses)
    c = bolus_profile(t, doses, dose, cl, v)[None, :]
    tau_auc = np.asarray(auc_windows(t, c, doses + [72.0]))[0]
    # interval i carries the i+1 doses given so far: dose/CL * (1 - e^{-k tau}) * sum e^{-k tau j}
    expected = [dose / cl * (1 - math.exp(-k * tau)) * sum(math.exp(-k * tau * j)
                                                           for j in range(i + 1))
                for i in range(6)]
    np.testing.assert_allclose(tau_auc, expected, rtol=1e-12)
    m = exposure_metrics(t, c, dose_times=doses, tau_end=72.0, horizon=96.0, threshold=4.0)
    assert float(m["cmax"][0]) == pytest.approx(max(dose / v * sum(math.exp(-k * tau * j)
                                                                    for j in range(6)), 0))
    assert float(m["tmax"][0]) == pytest.approx(60.0)
    assert float(m["auc_tau_first"][0]) == pytest.approx(expected[0], rel=1e-12)
    assert float(m["auc_tau_max"][0]) == pytest.approx(expected[-1], rel=1e-12)
    total = dose / cl * sum(1 - math.exp(-k * (96.0 - td)) for td in doses)
    assert float(m["auc_course"][0]) == pytest.approx(total, rel=1e-12)
    day1 = dose / cl * ((1 - math.exp(-k * 24)) + (1 - math.exp(-k * 12)))
    assert float(m["auc_day_first"][0]) == pytest.approx(day1, rel=1e-12)


def test_auc_of_infusion_converges_to_dose_over_cl():
    dose, cl, v, dur = 600.0, 6.0, 3.0, 0.25    # k = 2 /h
    k = cl / v
    rate = dose / dur
    t = np.concatenate([np.linspace(0, dur, 51), np.linspace(dur, 30.0, 400)[1:]])
    c = np.where(t <= dur, rate / cl * (1 - np.exp(-k * t)),
                 rate / cl * (1 - math.exp(-k * dur)) * np.exp(-k * (t - dur)))
    auc = float(auc_cumulative(t, c[None, :])[0, -1])
    assert auc == pytest.approx(dose / cl * (1 - 1e-20), rel=1e-5)


def test_time_above_threshold_on_exact_shapes():
    t = np.linspace(0.0, 20.0, 21)
    tent = 100.0 - 10.0 * np.abs(t - 10.0)        # above 50 for exactly 10 h
    assert float(time_above(t, tent[None, :], 50.0)[0]) == pytest.approx(10.0)
    # exponential: ln(C0/thr)/k on a fine grid
    t = np.linspace(0.0, 24.0, 24 * 60 + 1)
    c = 1000.0 * np.exp(-0.5 * t)
    assert float(time_above(t, c[None, :], 250.0)[0]) == pytest.approx(math.log(4) / 0.5,
                                                                       rel=1e-6)
    assert float(time_above(t, c[None, :], 2000.0)[0]) == 0.0


def test_daily_auc_of_constant_concentration():
    t = np.arange(0.0, 72.0 + 1e-9, 0.5)
    c = np.full((2, t.size), 3.0)
    c[1] *= 2
    m = exposure_metrics(t, c, dose_times=[0.0], tau_end=24.0, horizon=72.0)
    np.testing.assert_allclose(m["auc_day_first"], [72.0, 144.0])
    np.testing.assert_allclose(m["auc_day_max"], [72.0, 144.0])
    np.testing.assert_allclose(m["auc_course"], [216.0, 432.0])
    np.testing.assert_allclose(m["time_above"], [0.0, 0.0])


def test_response_metrics_fold_change_time_to_peak_and_selectivity():
    t = np.arange(0.0, 28 * 24 + 1e-9, 12.0)
    bump_t = np.where(t < 288.0, np.sin(np.pi * t / 288.0) ** 2, 0.0)   # 1 at day 6, 0 at t 0
    bump_n = np.where(t < 432.0, np.sin(np.pi * t / 432.0) ** 2, 0.0)   # 1 at day 9
    treg = 40.0 * (1 + 1.5 * bump_t)
    nk = 200.0 * (1 + 0.25 * bump_n)
    m = response_metrics(t, treg[None, :], nk[None, :])
    assert float(m["treg_fold"][0]) == pytest.approx(2.5, rel=1e-9)
    assert float(m["treg_tpeak"][0]) == pytest.approx(6.0)
    assert float(m["nk_fold"][0]) == pytest.approx(1.25, rel=1e-9)
    assert float(m["nk_tpeak"][0]) == pytest.approx(9.0)
    assert float(m["selectivity"][0]) == pytest.approx(2.0, rel=1e-9)
    # an explicit baseline is used instead of the first sample
    m2 = response_metrics(t, treg[None, :], nk[None, :], treg_baseline=np.array([50.0]),
                          nk_baseline=np.array([250.0]))
    assert float(m2["treg_fold"][0]) == pytest.approx(2.0)
    assert float(m2["nk_fold"][0]) == pytest.approx(1.0)


def test_target_expressions_are_parsed_without_eval():
    metrics = {"treg_fold": np.array([2.5, 2.5, 1.5, 3.0]),
               "nk_fold": np.array([1.2, 1.6, 1.0, 1.5]),
               "cmax": np.array([10.0, 300.0, 5.0, 20.0])}
    names = metrics.keys()
    np.testing.assert_array_equal(parse_target("treg_fold>=2 and nk_fold<=1.5", names)(metrics),
                                  [True, False, False, True])
    np.testing.assert_array_equal(parse_target("treg >= 2 && !(cmax > 250)", names)(metrics),
                                  [True, False, False, True])
    np.testing.assert_array_equal(parse_target("2 <= treg_fold or cmax<6", names)(metrics),
                                  [True, True, True, True])
    np.testing.assert_array_equal(parse_target("not treg_fold>2.5 and nk_fold!=1", names)(
        metrics), [True, True, False, False])
    assert parse_target("treg>=2 and nk<=1.5").names == {"treg_fold", "nk_fold"}


@pytest.mark.parametrize(
    "text, column, expected",
    [
        ("treg_fold>=", 12, "a number"),
        ("tregfold>=2", 1, "a metric name"),
        ("treg_fold>=2 and", 17, "a metric name, a number"),
        ("treg_fold>=2 nk_fold<1", 14, "'and', 'or'"),
        ("(treg_fold>=2", 14, r"'\)'"),
        ("treg_fold=>2", 10, "a comparison"),
        ("__import__('os')", 12, "a metric name, a number, a comparison"),
        ("treg_fold >= 2; rm", 15, "a metric name, a number"),
    ],
)
def test_bad_target_shows_position(text, column, expected):
    with pytest.raises(OptionError) as info:
        parse_target(text)
    assert isinstance(info.value, InputError)
    message = str(info.value)
    assert f"at character {column}:" in message
    assert re.search(expected, message)
    assert message.splitlines()[2] == "  " + " " * (column - 1) + "^"


def test_attainment_interval_from_draws_or_wilson():
    hit = np.array([True] * 30 + [False] * 70)
    one = attainment(hit)
    # Wilson 90% interval for 30/100
    z, n, p = 1.6448536269514722, 100, 0.3
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert one["median"] == pytest.approx(0.3)
    assert one["q5"] == pytest.approx(centre - half)
    assert one["q95"] == pytest.approx(centre + half)
    # with posterior draws: 5-95% range of the per-draw proportions
    draw = np.repeat(np.arange(10), 10)
    hit = np.concatenate([np.arange(10) < k for k in range(10)])   # draw k hits k/10
    two = attainment(hit, draw)
    per = np.arange(10) / 10
    assert two["median"] == pytest.approx(per.mean())
    assert two["q5"] == pytest.approx(np.quantile(per, 0.05))
    assert two["q95"] == pytest.approx(np.quantile(per, 0.95))


def test_summarize_pools_and_ignores_nan():
    values = np.concatenate([np.arange(1.0, 102.0), [np.nan]])
    s = summarize(values)
    assert s == {"q5": pytest.approx(6.0), "median": pytest.approx(51.0),
                 "q95": pytest.approx(96.0)}


def test_metrics_module_doctests():
    result = doctest.testmod(metrics_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
