"""Regimen simulations over virtual populations against closed forms and an independent solver."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from il2pkpd.errors import OptionError, RegimenError, UnitError
from il2pkpd.models import load_model
from il2pkpd.simulate import parse_regimen
from il2pkpd.simulate.dosing import dose_schedule, regimen_to_dataset
from il2pkpd.simulate.population import default_population
from il2pkpd.simulate.runner import simulate, simulate_population, simulation_grid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def il2():
    return load_model("il2_pkpd")


def test_one_compartment_bolus_auc_equals_dose_over_cl():
    model = load_model("one_cmt_iv")
    pop = default_population(model, 6, seed=2, omega=0.3)
    res = simulate_population(model, ["100 mg IV bolus once", "100 mg IV q12h x6"], pop,
                              days=10, rtol=1e-7)
    cl, v = pop.params["CL"], pop.params["V"]
    k = cl / v
    one = res.patients["100 mg IV bolus once"]
    horizon = 240.0
    np.testing.assert_allclose(one["auc_course"], 100 / cl * (1 - np.exp(-k * horizon)),
                               rtol=1e-5)
    np.testing.assert_allclose(one["cmax"], 100 / v, rtol=1e-5)
    np.testing.assert_allclose(one["tmax"], 0.0, atol=1e-5)
    multi = res.patients["100 mg IV q12h x6"]
    first = 100 / cl * (1 - np.exp(-k * 12))
    np.testing.assert_allclose(multi["auc_tau_first"], first, rtol=1e-5)
    acc = sum(np.exp(-k * 12 * j) for j in range(6))
    np.testing.assert_allclose(multi["auc_tau_max"], first * acc, rtol=1e-5)
    np.testing.assert_allclose(multi["cmax"], 100 / v * acc, rtol=1e-5)
    assert res.metrics.query("metric == 'cmax'")["unit"].iloc[0] == "mg/L"


def test_one_compartment_infusion_auc_and_peak_at_end_of_infusion():
    model = load_model("one_cmt_iv")
    pop = default_population(model, 3, seed=5, omega=0.2)
    res = simulate_population(model, ["100 mg IV 2h once"], pop, days=20, rtol=1e-7)
    cl, v = pop.params["CL"], pop.params["V"]
    k = cl / v
    t = res.patients["100 mg IV 2h once"]
    np.testing.assert_allclose(t["auc_course"], 100 / cl * (1 - np.exp(-k * 480)) -
                               0 * k, rtol=2e-4)
    np.testing.assert_allclose(t["cmax"], 50 / cl * (1 - np.exp(-k * 2)), rtol=1e-5)
    np.testing.assert_allclose(t["tmax"], 2.0)


def il2_reference(p, dose_times, amount, t_eval):
    """DOMAIN.md section 5 equations, SC doses, solved by scipy (independent of il2pkpd)."""
    def rhs(t, y, r):
        depot, central, periph, tr1, tr2, tr3, treg, nk1, nk2, nk3, nk = y
        c = central / p["V1"] / 1000
        sink = p["VMAX"] * (treg / p["TREG0"]) * c / (p["KM"] + c)
        s_t = p["EMAX_T"] * c ** p["HILL"] / (p["EC50_T"] ** p["HILL"] + c ** p["HILL"])
        s_n = p["EMAX_N"] * c / (p["EC50_N"] + c)
        kt, kn = 3 / p["MTT_T"], 3 / p["MTT_N"]
        return [-p["KA"] * depot,
                p["KA"] * depot - (p["CL"] + p["Q"]) / p["V1"] * central
                + p["Q"] / p["V2"] * periph - sink,
                p["Q"] / p["V1"] * central - p["Q"] / p["V2"] * periph,
                kt * (s_t - tr1), kt * (tr1 - tr2), kt * (tr2 - tr3),
                p["KOUT_T"] * p["TREG0"] * (1 + tr3) - p["KOUT_T"] * treg,
                kn * (s_n - nk1), kn * (nk1 - nk2), kn * (nk2 - nk3),
                p["KOUT_N"] * p["NK0"] * (1 + nk3) - p["KOUT_N"] * nk]

    y = np.zeros(11)
    y[6], y[10] = p["TREG0"], p["NK0"]
    events = sorted(t + p["TLAG1"] for t in dose_times)
    out = np.zeros((3, len(t_eval)))
    bounds = [0.0] + events + [t_eval[-1] + 1e-9]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if a in events:
            y[0] += p["F1"] * amount
        sel = (t_eval >= a) & (t_eval < b)
        sol = solve_ivp(rhs, (a, b), y, method="Radau", rtol=1e-10, atol=1e-10,
                        t_eval=t_eval[sel], args=(None,))
        c = sol.y[1] / p["V1"] / 1000
        blood = 1 - p["IMAX"] * c / (p["IC50"] + c)
        out[:, sel] = [c, sol.y[6] * blood, sol.y[10] * blood]
        y = solve_ivp(rhs, (a, b), y, method="Radau", rtol=1e-10, atol=1e-10,
                      args=(None,)).y[:, -1]
    return out


def test_il2_metrics_match_an_independent_scipy_solution(il2):
    pop = default_population(il2, 1, seed=0, omega=0.0)
    res = simulate_population(il2, ["1 MIU SC daily x5"], pop, days=14, rtol=1e-7)
    got = res.patients["1 MIU SC daily x5"].iloc[0]
    p = {k: float(v[0]) for k, v in pop.params.items()}
    t = np.linspace(0.0, 14 * 24, 14 * 24 * 60 + 1)          # every minute
    c, treg, nk = il2_reference(p, [0, 24, 48, 72, 96], 1e6, t)
    assert got["cmax"] == pytest.approx(c.max(), rel=2e-4)
    # areas from the sampled grid: within about 1e-3 of the integral
    assert got["auc_course"] == pytest.approx(np.trapezoid(c, t), rel=1e-3)
    day1 = t <= 24
    assert got["auc_day_first"] == pytest.approx(np.trapezoid(c[day1], t[day1]), rel=1.5e-3)
    assert got["treg_fold"] == pytest.approx(treg.max() / treg[0], rel=1e-4)
    assert got["nk_fold"] == pytest.approx(nk.max() / nk[0], rel=1e-4)
    assert got["treg_tpeak"] == pytest.approx(t[treg.argmax()] / 24, abs=2 / 24)
    # the fast grid: within about 1%
    fast = simulate_population(il2, ["1 MIU SC daily x5"], pop, days=14, rtol=1e-7,
                               resolution="fast").patients["1 MIU SC daily x5"].iloc[0]
    assert fast["cmax"] == pytest.approx(c.max(), rel=1e-2)
    assert fast["auc_course"] == pytest.approx(np.trapezoid(c, t), rel=1e-2)
    # DOMAIN.md section 6 (scipy reference of the defaults): Treg 1.8x at day 5.8, NK 1.06x
    assert got["treg_fold"] == pytest.approx(1.8, abs=0.05)
    assert got["nk_fold"] == pytest.approx(1.06, abs=0.01)
    # single precision (float32 solves) against the same reference, at a float32-sized rtol
    single = simulate_population(il2, ["1 MIU SC daily x5"], pop, days=14, rtol=2e-5,
                                 precision="single").patients["1 MIU SC daily x5"].iloc[0]
    assert single["status"] == 0
    assert single["cmax"] == pytest.approx(c.max(), rel=3e-4)
    assert single["auc_course"] == pytest.approx(np.trapezoid(c, t), rel=1e-3)
    assert single["treg_fold"] == pytest.approx(treg.max() / treg[0], rel=1e-4)
    assert single["nk_fold"] == pytest.approx(nk.max() / nk[0], rel=1e-4)
    with pytest.raises(OptionError, match="precision"):
        simulate_population(il2, ["1 MIU SC once"], pop, days=2, precision="half")


def test_response_increases_with_dose_for_every_patient(il2):
    pop = default_population(il2, 24, seed=11)
    regimens = ["0.33 MIU SC daily x5", "1 MIU SC daily x5", "3 MIU SC daily x5"]
    res = simulate_population(il2, regimens, pop, days=21,
                              targets=["treg_fold>=1.5 and nk_fold<=1.3"])
    for metric in ("cmax", "auc_course", "treg_fold", "nk_fold", "cum_dose"):
        values = np.stack([res.patients[r][metric].to_numpy() for r in regimens])
        assert np.all(np.diff(values, axis=0) > 0), metric
    med = res.metrics.set_index(["regimen", "metric"])["median"]
    assert med[("0.33 MIU SC daily x5", "treg_fold")] < med[("3 MIU SC daily x5", "treg_fold")]
    pta = res.metrics[res.metrics["metric"].str.startswith("P(")]
    assert len(pta) == 3 and pta["median"].between(0, 1).all()
    assert (pta["q5"] <= pta["median"]).all() and (pta["median"] <= pta["q95"]).all()
    # profiles: one block per regimen and output, quantiles ordered
    prof = res.profiles
    assert set(prof["output"]) == {"IL2", "TREG", "NK"}
    assert (prof["q5"] <= prof["median"] + 1e-12).all()
    assert (prof["median"] <= prof["q95"] + 1e-12).all()


def test_same_seed_same_result_and_per_m2_doses_use_bsa(il2):
    kw = dict(n=5, days=7)
    a = simulate(il2, ["1 MIU/m2 SC once"], seed=4, **kw)
    b = simulate(il2, ["1 MIU/m2 SC once"], seed=4, **kw)
    c = simulate(il2, ["1 MIU/m2 SC once"], seed=5, **kw)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    pd.testing.assert_frame_equal(a.profiles, b.profiles)
    assert not np.allclose(a.patients["1 MIU/m2 SC once"]["cmax"],
                           c.patients["1 MIU/m2 SC once"]["cmax"])
    bsa = a.population.covariates["BSA"].to_numpy()
    np.testing.assert_allclose(a.patients["1 MIU/m2 SC once"]["cum_dose"], bsa)  # MIU


def test_sharded_over_two_devices_equals_unsharded():
    code = textwrap.dedent("""
        import jax, numpy as np
        import il2pkpd
        il2pkpd.enable_x64()
        from il2pkpd.models import load_model
        from il2pkpd.simulate.runner import simulate
        assert len(jax.devices()) == 2, jax.devices()
        m = load_model("il2_pkpd")
        kw = dict(n=13, days=3, seed=3, chunk_size=8)
        regs = ["600000 IU/kg IV 15min q8h x4"]
        a = simulate(m, regs, devices=jax.devices()[:1], **kw)
        b = simulate(m, regs, **kw)
        assert a.timing["devices"] == 1 and b.timing["devices"] == 2
        for k in a.patients:
            np.testing.assert_allclose(a.patients[k].to_numpy(float),
                                       b.patients[k].to_numpy(float), rtol=1e-12)
        np.testing.assert_allclose(a.profiles[["median", "q5", "q95"]].to_numpy(),
                                   b.profiles[["median", "q5", "q95"]].to_numpy(), rtol=1e-12)
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


def test_regimen_to_dataset_gives_the_canonical_event_table(il2):
    reg = parse_regimen("1 MIU SC daily x2; then 600000 IU/kg IV 15min q8h x2 hold 2")
    subjects = pd.DataFrame({"ID": [7, 8], "WT": [50.0, 100.0], "BSA": [1.5, 2.2]})
    ds = regimen_to_dataset(reg, subjects, [0.0, 24.0, 49.0], il2)
    df = ds.df
    doses = df[df["EVID"] == 1]
    assert list(doses["CMT"]) == [1, 1, 2] * 2
    assert list(doses["TIME"]) == [0.0, 24.0, 48.0] * 2
    sub8 = doses[doses["ID"] == 8]
    np.testing.assert_allclose(sub8["AMT"], [1e6, 1e6, 6e7])
    np.testing.assert_allclose(sub8["RATE"], [0.0, 0.0, 6e7 / 0.25])
    obs = df[df["EVID"] == 0]
    assert len(obs) == 2 * 3 * 3 and set(obs["DVID"]) == {1, 2, 3}
    # an observation at a dose time comes before the dose
    first = df[df["ID"] == 7].iloc[:4]
    assert list(first["EVID"]) == [0, 0, 0, 1]
    assert set(ds.covariates) >= {"WT", "BSA"}


def test_dose_schedule_errors_name_the_problem(il2):
    with pytest.raises(UnitError, match="body weight"):
        dose_schedule(parse_regimen("1 MIU/kg SC once"), il2, pd.DataFrame({"ID": [1]}))
    with pytest.raises(RegimenError, match="no 'depot' compartment"):
        dose_schedule(parse_regimen("1 mg SC once"), load_model("one_cmt_iv"), n=1)
    with pytest.raises(UnitError):
        dose_schedule(parse_regimen("1 mg SC once"), il2, n=1)   # mg -> IU needs a potency
    with pytest.raises(OptionError, match="target"):
        simulate(il2, ["1 MIU SC once"], n=2, days=2, targets=["treg_fold >>= 2"])


def test_simulation_grid_holds_doses_infusion_ends_days_and_bolus_jumps(il2):
    sched = dose_schedule(parse_regimen("1 MIU IV 15min q8h x2; then 1 MIU IV q12h x1"), il2,
                          n=1)
    grid = simulation_grid(sched, 48.0)
    for t in (0.0, 0.25, 8.0, 8.25, 16.0, 16.0 + 1e-6, 24.0, 48.0):
        assert np.isclose(grid, t, rtol=0, atol=1e-12).any(), t
    assert np.all(np.diff(grid) > 0)
    assert math.isclose(grid[-1], 48.0)


def test_models_without_nk_cells_get_treg_metrics_only():
    model = load_model("il2_pk_treg")
    res = simulate(model, ["1 MIU SC daily x5"], n=4, days=10, seed=1)
    table = res.patients["1 MIU SC daily x5"]
    assert {"treg_fold", "treg_tpeak"} <= set(table.columns)
    assert not {"nk_fold", "selectivity"} & set(table.columns)
    assert (table["treg_fold"] > 1).all()
