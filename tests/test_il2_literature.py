"""DOMAIN.md section 6: literature checks of the canonical IL-2 model with default parameters.

Each test asserts the literature criterion and that the solver reproduces the reference value
DOMAIN.md gives (from an independent scipy solution) to its printed precision.
"""

import numpy as np
import pytest

from il2pkpd.solve import Doses, solve_population
from il2pkpd.solve.il2 import il2_system

WT = 70.0                      # kg
HIGH_DOSE = 600000.0 * WT      # IU per 15-min infusion


@pytest.fixture(scope="module")
def system():
    return il2_system()


def run(system, doses, t_out):
    sol = solve_population(system, {}, doses, t_out, rtol=1e-7)
    assert int(sol.status[0]) == 0
    return np.asarray(sol.outputs[0])


def test_high_dose_half_life(system):
    t = np.arange(0.0, 4.0001, 0.05)
    conc = run(system, Doses([0.0], [HIGH_DOSE], [2], [0.25]), t)[0]
    win = (t >= 2.0 - 1e-9) & (t <= 4.0 + 1e-9)
    k = -np.polyfit(t[win], np.log(conc[win]), 1)[0]
    half_life_min = np.log(2.0) / k * 60.0
    assert 60.0 <= half_life_min <= 100.0
    assert half_life_min == pytest.approx(70.0, abs=3.0)   # DOMAIN.md: 70 min


def test_clearance_rises_under_continuous_infusion(system):
    rate = 4e6 / 24.0                                     # IU/h
    t = np.array([0.0, 24.0, 168.0])
    conc = run(system, Doses([0.0], [rate * 168.0], [2], [168.0]), t)[0]
    cl_app = rate / (conc[1:] * 1000.0)                   # L/h
    ratio = cl_app[1] / cl_app[0]
    assert ratio >= 2.0
    assert ratio == pytest.approx(2.8, abs=0.05)          # DOMAIN.md: 2.8


def test_sc_cmax(system):
    t = np.arange(0.0, 24.0001, 0.02)
    cmax = run(system, Doses([0.0], [15e6], [1]), t)[0].max()
    assert 20.0 <= cmax <= 150.0
    assert cmax == pytest.approx(133.0, rel=0.06)         # DOMAIN.md: 133 IU/mL


def test_low_dose_selectivity_and_margination(system):
    t = np.arange(0.0, 672.0001, 0.25)
    out = run(system, Doses(24.0 * np.arange(5), np.full(5, 1e6), np.full(5, 1)), t)
    treg = out[1] / system.defaults["TREG0"]
    nk = out[2] / system.defaults["NK0"]
    day_peak = t[np.argmax(treg)] / 24.0
    assert 1.5 <= treg.max() <= 4.0 and 5.0 <= day_peak <= 10.0
    assert nk.max() < treg.max()
    assert treg.max() == pytest.approx(1.8, abs=0.05)     # DOMAIN.md: 1.8x at day 5.8
    assert day_peak == pytest.approx(5.8, abs=0.1)
    assert nk.max() == pytest.approx(1.06, abs=0.01)      # DOMAIN.md: NK 1.06x
    nadir = treg[t <= 8.0].min()
    assert nadir < 0.85
    assert nadir == pytest.approx(0.67, abs=0.01)         # DOMAIN.md: 0.67x


def test_high_dose_expansion(system):
    t = np.arange(0.0, 672.0001, 1.0)
    doses = Doses(8.0 * np.arange(14), np.full(14, HIGH_DOSE), np.full(14, 2), np.full(14, 0.25))
    out = run(system, doses, t)
    treg = out[1].max() / system.defaults["TREG0"]
    nk = out[2].max() / system.defaults["NK0"]
    assert treg >= 1.5 and nk >= 1.5
    assert treg == pytest.approx(3.7, abs=0.05)           # DOMAIN.md: 3.7x
    assert nk == pytest.approx(2.2, abs=0.05)             # DOMAIN.md: 2.2x
