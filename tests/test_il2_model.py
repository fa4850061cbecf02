"""The IL-2 model files against an independent scipy implementation of DOMAIN.md section 5."""

import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from il2pkpd._paths import MODELS_DIR
from il2pkpd.solve import Doses, from_model_file, solve_population
from il2pkpd.solve.il2 import il2_system

DEFAULTS = dict(CL=7.2, V1=3.0, Q=1.4, V2=2.3, KA=0.25, F1=0.4, TLAG1=0.45, VMAX=40000.0,
                KM=2.0, EMAX_T=4.0, EC50_T=1.0, HILL=1.0, MTT_T=48.0, KOUT_T=0.015,
                TREG0=40.0, EMAX_N=3.0, EC50_N=20.0, MTT_N=72.0, KOUT_N=0.01, NK0=200.0,
                IMAX=0.6, IC50=5.0)


def scipy_il2(p, doses, t_out, rtol=1e-10):
    """DOMAIN.md section 5 written out again, integrated piecewise between dose events.

    doses: list of (time, amount, 'sc' | 'iv', duration) with amounts in IU.
    Returns (3, n_times): C (IU/mL), blood Treg and NK (cells/uL); at a time equal to a dose
    time the values just before the dose.
    """
    ev = []   # (time, kind, value): bolus into state index, or rate change into central
    for t, amt, route, dur in doses:
        if route == "sc":
            ev.append((t + p["TLAG1"], "bolus", 0, p["F1"] * amt))
        elif dur == 0:
            ev.append((t, "bolus", 1, amt))
        else:
            ev.append((t, "rate", 1, amt / dur))
            ev.append((t + dur, "rate", 1, -amt / dur))
    ev.sort(key=lambda e: e[0])

    def f(t, y, rate):
        a, c, q, t1, t2, t3, treg, n1, n2, n3, nk = y
        conc = c / p["V1"] / 1000.0
        sink = p["VMAX"] * (treg / p["TREG0"]) * conc / (p["KM"] + conc)
        cp = max(conc, 0.0) ** p["HILL"]
        st = p["EMAX_T"] * cp / (p["EC50_T"] ** p["HILL"] + cp)
        sn = p["EMAX_N"] * conc / (p["EC50_N"] + conc)
        kt, kn = 3.0 / p["MTT_T"], 3.0 / p["MTT_N"]
        return [-p["KA"] * a,
                p["KA"] * a - (p["CL"] + p["Q"]) / p["V1"] * c + p["Q"] / p["V2"] * q - sink
                + rate,
                p["Q"] / p["V1"] * c - p["Q"] / p["V2"] * q,
                kt * (st - t1), kt * (t1 - t2), kt * (t2 - t3),
                p["KOUT_T"] * (p["TREG0"] * (1 + t3) - treg),
                kn * (sn - n1), kn * (n1 - n2), kn * (n2 - n3),
                p["KOUT_N"] * (p["NK0"] * (1 + n3) - nk)]

    y = np.zeros(11)
    y[6], y[10] = p["TREG0"], p["NK0"]
    rate = 0.0
    t_out = np.asarray(t_out, float)
    res = np.full((11, t_out.size), np.nan)
    bounds = [0.0] + [e[0] for e in ev] + [t_out[-1]]
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        last = k == len(bounds) - 2
        sel = ((t_out >= lo) if k == 0 else (t_out > lo)) & (t_out <= hi)
        res[:, sel & (t_out == lo)] = y[:, None]
        if hi > lo:
            sol = solve_ivp(f, (lo, hi), y, method="Radau", rtol=rtol, atol=1e-12,
                            dense_output=True, args=(rate,))
            if sel.any():
                res[:, sel] = sol.sol(t_out[sel])
            y = sol.y[:, -1].copy()
        if not last:
            _, kind, idx, val = ev[k]
            if kind == "bolus":
                y[idx] += val
            else:
                rate += val
    conc = res[1] / p["V1"] / 1000.0
    blood = 1.0 - p["IMAX"] * conc / (p["IC50"] + conc)
    return np.stack([conc, res[6] * blood, res[10] * blood])


def rel_err(out, ref, conc_floor=1e-3):
    """Relative error; IL-2 below conc_floor IU/mL (far below any assay LLOQ) is compared
    against the floor."""
    floor = np.array([conc_floor, 0.0, 0.0])[: len(out), None]
    return np.abs(out - ref) / np.maximum(np.abs(ref), floor)


def test_model_file_units_defaults_and_outputs():
    with (MODELS_DIR / "il2_pkpd.toml").open("rb") as fh:
        spec = tomllib.load(fh)
    params = spec["parameters"]
    assert {k: v["default"] for k, v in params.items()} == DEFAULTS
    assert all(v.get("unit") for v in params.values())
    assert [spec["outputs"][k]["name"] for k in ("1", "2", "3")] == ["IL2", "TREG", "NK"]
    assert [spec["outputs"][k]["unit"] for k in ("1", "2", "3")] == ["IU/mL", "cells/uL",
                                                                     "cells/uL"]
    assert spec["compartments"]["1"] == "depot" and spec["compartments"]["2"] == "central"
    system = from_model_file(MODELS_DIR / "il2_pkpd.toml")
    assert system.defaults == DEFAULTS


def test_structured_solve_matches_dense_jacobian():
    structured = il2_system()
    rng = np.random.default_rng(0)
    p = jnp.asarray([DEFAULTS[k] * np.exp(0.3 * rng.standard_normal())
                     for k in structured.param_names])
    for conc in (0.0, 0.3, 40.0):
        y = jnp.asarray(np.abs(rng.standard_normal(11)) * 5.0).at[1].set(conc * 3000.0)
        lam = 1.0 / (0.37 * 0.25)
        jac = jax.jacfwd(structured.rhs)(y, p)
        b = jnp.asarray(rng.standard_normal(11))
        dense = np.linalg.solve(lam * np.eye(11) - np.asarray(jac), np.asarray(b))
        yt, pd_ = tuple(y[i] for i in range(11)), structured.param_dict(p)
        fac = structured.linear_solver.prepare(structured, yt, pd_, lam)
        fast = np.asarray(jnp.stack(structured.linear_solver.solve(fac, tuple(b))))
        np.testing.assert_allclose(fast, dense, rtol=1e-10, atol=1e-12)


REGIMENS = {
    "sc_1miu_daily_x5": ([(24.0 * k, 1e6, "sc", 0.0) for k in range(5)],
                         np.arange(0.0, 672.0001, 6.0)),
    "iv_bolus_1miu": ([(0.0, 1e6, "iv", 0.0)], np.concatenate([[0.0, 0.1, 0.5, 1, 2, 4, 8],
                                                               np.arange(12.0, 336.1, 12.0)])),
    "iv_infusion_q8h": ([(8.0 * k, 600000.0 * 70, "iv", 0.25) for k in range(3)],
                        np.concatenate([[0.0, 0.1, 0.25, 0.5, 1, 2, 4, 8.1, 16.2, 20],
                                        np.arange(24.0, 240.1, 12.0)])),
}


@pytest.mark.parametrize("regimen,structured", [(r, True) for r in REGIMENS]
                         + [("sc_1miu_daily_x5", False)])
def test_il2_pkpd_matches_scipy(regimen, structured):
    doses, t_out = REGIMENS[regimen]
    system = il2_system(structured=structured)
    sched = Doses(np.array([d[0] for d in doses]), np.array([d[1] for d in doses]),
                  np.array([1 if d[2] == "sc" else 2 for d in doses]),
                  np.array([d[3] for d in doses]))
    sol = solve_population(system, {}, sched, t_out, rtol=1e-6)
    assert int(sol.status[0]) == 0
    ref = scipy_il2(DEFAULTS, doses, t_out)
    err = rel_err(np.asarray(sol.outputs[0]), ref)
    assert err.max() < 1e-4, err.max(axis=1)


def test_fast_path_equations_match_model_file():
    fast = il2_system()
    generic = il2_system(structured=False)
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = jnp.asarray([DEFAULTS[k] * np.exp(0.3 * rng.standard_normal())
                         for k in fast.param_names])
        y = jnp.asarray(np.abs(rng.standard_normal(11)) * [1e5, 3e3, 1e3, 1, 1, 1, 40, 1, 1, 1,
                                                          200])
        for yy in (y, y.at[1].set(0.0)):
            np.testing.assert_allclose(fast.rhs(yy, p), generic.rhs(yy, p), rtol=1e-12,
                                       atol=1e-12)
            np.testing.assert_allclose(fast.outputs(yy, p), generic.outputs(yy, p), rtol=1e-13)
