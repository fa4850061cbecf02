"""ODE path: against the closed forms of the same models and against scipy's solve_ivp."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.test_util import check_grads
from scipy.integrate import solve_ivp

from il2pkpd.engine import build_events, make_predict_fn, predict
from il2pkpd.models import load_model

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def rec(time, evid=0, amt=0.0, rate=0.0, ii=0.0, addl=0, ss=0, cmt=1, id_=1):
    return {"ID": id_, "TIME": float(time), "EVID": evid, "AMT": float(amt), "RATE": float(rate),
            "II": float(ii), "ADDL": addl, "SS": ss, "CMT": cmt}


def subject(id_, doses, obs_times, cmt_obs):
    df = pd.DataFrame(doses + [rec(t, cmt=cmt_obs) for t in obs_times]).assign(ID=id_)
    return df.sort_values("TIME", kind="stable")


def mixed_regimen(central, depot, resets=True):
    """Bolus, infusion, RATE -1, resets, ADDL, into the depot (if any) and the central cmt."""
    first = depot if depot is not None else central
    obs = [0.25, 1.0, 2.0, 5.0, 11.0, 12.5, 18.0, 30.0]
    s1 = subject(1, [rec(0, 1, 100, cmt=first), rec(6, 1, 60, rate=20, cmt=central)], obs,
                 central)
    s2 = subject(2, [rec(0, 1, 50, ii=8, addl=2, cmt=first), rec(3, 1, 40, rate=-1,
                                                                    cmt=central)], obs, central)
    parts = [s1, s2]
    if resets:
        s3 = pd.DataFrame([rec(0, 1, 80, rate=10, cmt=central), rec(4, cmt=central),
                           rec(5, 3, cmt=central), rec(6, cmt=central),
                           rec(7, 4, 30, cmt=first), rec(9, cmt=central),
                           rec(9.5, cmt=central)]).assign(ID=3)
        parts.append(s3)
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("name", ["one_cmt_iv", "one_cmt_oral", "two_cmt_iv", "two_cmt_oral",
                                  "three_cmt_iv"])
def test_ode_matches_closed_form_of_the_same_model(name):
    m = load_model(name)
    central = m.central_cmt
    depot = next((n for n, s in m.compartments.items() if s == "depot"), None)
    df = mixed_regimen(central, depot)
    params = {**m.defaults(), f"R{central}": 15.0, f"TLAG{m.dosing_cmts[0]}": 0.35,
              f"F{m.dosing_cmts[0]}": 0.7}
    params = {k: v for k, v in params.items() if k in m.parameter_names}
    closed = predict(m, params, df)["PRED"].to_numpy()
    ode = predict(m, params, df, method="ode", **TIGHT)["PRED"].to_numpy()
    assert np.all(closed[closed != 0] > 0)
    np.testing.assert_allclose(ode, closed, rtol=1e-6, atol=1e-12)


@pytest.mark.slow
def test_ode_steady_state_matches_closed_form():
    m = load_model("two_cmt_oral")
    obs = [0.0, 0.5, 1.0, 3.0, 7.0, 11.5, 20.0]
    df = pd.concat([
        subject(1, [rec(0, 1, 100, ii=12, ss=1, cmt=1)], obs, 2),                 # oral SS
        subject(2, [rec(0, 1, 100, rate=25, ii=12, ss=1, cmt=2)], obs, 2),        # infusion SS
        subject(3, [rec(0, 1, 0, rate=6, ss=1, cmt=2)], obs, 2),                  # constant inf.
        subject(4, [rec(0, 1, 30, cmt=2), rec(2, 1, 100, rate=10, ii=12, ss=2, cmt=2)], obs, 2),
    ], ignore_index=True)
    params = {**m.defaults(), "TLAG1": 0.6, "F1": 0.8, "TLAG2": 1.5, "F2": 0.9}
    closed = predict(m, params, df)["PRED"].to_numpy()
    ode = predict(m, params, df, method="ode", **TIGHT)["PRED"].to_numpy()
    np.testing.assert_allclose(ode, closed, rtol=1e-6)


MM = {"VMAX": 10.0, "KM": 2.0, "V": 50.0, "KA": 1.0, "TLAG1": 0.3, "F1": 0.8, "R2": 12.0}


def _mm_data():
    obs = [0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 13.0, 24.0, 36.0]
    return subject(1, [rec(0, 1, 100, cmt=1), rec(10, 1, 60, rate=-1, cmt=2),
                       rec(12, 1, 100, cmt=1)], obs, 2)


def _mm_scipy(times):
    """Michaelis-Menten model integrated piecewise by scipy (independent event handling)."""
    def f(t, y, rate):
        c = y[1] / MM["V"]
        return [-MM["KA"] * y[0], MM["KA"] * y[0] - MM["VMAX"] * c / (MM["KM"] + c) + rate]
    # breakpoints: lagged oral doses at 0.3 and 12.3 (80 mg each), infusion 10 -> 15 at 12 mg/h
    pieces = [(0.0, 0.3, 0.0), (0.3, 10.0, 0.0), (10.0, 12.3, 12.0), (12.3, 15.0, 12.0),
              (15.0, 40.0, 0.0)]
    y = np.zeros(2)
    out = {}
    for t0, t1, rate in pieces:
        if t0 in (0.3, 12.3):
            y[0] += 80.0
        sol = solve_ivp(f, (t0, t1), y, args=(rate,), method="LSODA", rtol=1e-12, atol=1e-12,
                        dense_output=True)
        for t in times:
            if t0 < t <= t1:
                out[t] = sol.sol(t)[1] / MM["V"]
        y = sol.y[:, -1]
    return np.array([out[t] for t in times])


def test_michaelis_menten_ode_matches_scipy_solve_ivp():
    df = _mm_data()
    got = predict("one_cmt_oral_mm", {k: v for k, v in MM.items()}, df, **TIGHT)
    expected = _mm_scipy(got["TIME"].to_numpy())
    np.testing.assert_allclose(got["PRED"], expected, rtol=1e-7)


@pytest.mark.parametrize("solver", ["kvaerno5", "dopri8"])
def test_other_solvers_agree(solver):
    df = _mm_data()
    got = predict("one_cmt_oral_mm", MM, df, solver=solver, rtol=1e-9, atol=1e-11)
    expected = _mm_scipy(got["TIME"].to_numpy())
    np.testing.assert_allclose(got["PRED"], expected, rtol=1e-6)


def test_ode_gradients_including_lag_and_f():
    m = load_model("one_cmt_oral_mm")
    f = make_predict_fn(m, build_events(_mm_data(), m), **TIGHT)
    names = list(MM)

    @jax.jit
    def total(x):
        return jnp.sum(f({n: x[i:i + 1] for i, n in enumerate(names)})[0] ** 2)

    check_grads(total, (jnp.asarray(list(MM.values())),), order=1, modes=["rev"], eps=1e-6,
                rtol=1e-4)


def test_ode_steady_state_of_a_nonlinear_model_equals_long_repeated_dosing():
    m = load_model("one_cmt_oral_mm")
    p = {**{k: v for k, v in MM.items() if k != "R2"}, "VMAX": 20.0}   # SS within 40 doses
    n_past = 40
    t_ss = n_past * 12.0
    obs = [t_ss + o for o in (0.0, 0.5, 2.0, 6.0, 11.0)]
    ss = subject(1, [rec(t_ss, 1, 100, ii=12, ss=1, cmt=1)], obs, 2)
    rep = subject(1, [rec(0, 1, 100, ii=12, addl=n_past, cmt=1)], obs, 2)
    a = predict(m, p, ss, rtol=1e-10, atol=1e-12)["PRED"].to_numpy()
    b = predict(m, p, rep, rtol=1e-10, atol=1e-12)["PRED"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_failed_solve_is_a_status_not_an_exception():
    m = load_model("one_cmt_oral_mm")
    ev = build_events(_mm_data(), m)
    f = jax.jit(make_predict_fn(m, ev, max_steps=2))
    pred, ok = f({k: jnp.asarray([v]) for k, v in MM.items()})
    assert not bool(ok[0])
    assert bool(jnp.all(jnp.isfinite(pred)))
    g = jax.grad(lambda v: jnp.sum(f({**{k: jnp.asarray([x]) for k, x in MM.items()},
                                      "V": v})[0]))(jnp.asarray([50.0]))
    assert bool(jnp.all(jnp.isfinite(g)))


def test_user_ode_model_with_initial_state_runs(tmp_path):
    """A user ODE with a baseline (turnover) state, against its analytic solution."""
    (tmp_path / "turn.toml").write_text("""
[model]
structure = "ode:turn.py"
[parameters.KIN]
default = 2.0
[parameters.KOUT]
default = 0.5
[states]
names = ["r"]
[compartments]
1 = "r"
[outputs.1]
name = "R"
cmt = 1
""")
    (tmp_path / "turn.py").write_text("""
def rhs(t, y, p):
    return {"r": p["KIN"] - p["KOUT"] * y["r"]}

def outputs(y, p):
    return {"R": y["r"]}

def initial(p):
    return {"r": p["KIN"] / p["KOUT"]}
""")
    df = subject(1, [rec(1.0, 1, 3.0, cmt=1)], [0.5, 1.0, 2.0, 5.0], 1)
    got = predict(tmp_path / "turn.toml", {"KIN": 2.0, "KOUT": 0.5}, df, **TIGHT)
    t = got["TIME"].to_numpy()
    expected = 4.0 + np.where(t >= 1.0, 3.0 * np.exp(-0.5 * (t - 1.0)), 0.0)
    np.testing.assert_allclose(got["PRED"], expected, rtol=1e-8)


@pytest.mark.slow
def test_ode_steady_state_gradient_matches_closed_form_gradient():
    """The implicit-function derivative of the ODE steady state against the closed form's."""
    m = load_model("one_cmt_oral")
    obs = [0.0, 1.0, 3.0, 7.0]
    df = pd.concat([subject(1, [rec(0, 1, 100, ii=12, ss=1, cmt=1)], obs, 2),
                    subject(2, [rec(0, 1, 100, rate=20, ii=12, ss=1, cmt=2)], obs, 2)],
                   ignore_index=True)
    ev = build_events(df, m)
    names = ["CL", "V", "KA", "TLAG1", "F1", "TLAG2", "F2"]
    x = jnp.asarray([[5.0, 50.0, 1.2, 0.7, 0.8, 0.5, 0.9]] * 2)

    def loss(f):
        return jax.jit(jax.grad(lambda x: jnp.sum(
            f({n: x[:, i] for i, n in enumerate(names)})[0] ** 2)))

    g_closed = loss(make_predict_fn(m, ev))(x)
    g_ode = loss(make_predict_fn(m, ev, method="ode", **TIGHT))(x)
    np.testing.assert_allclose(g_ode, g_closed, rtol=1e-6, atol=1e-10)


def test_ode_steady_state_outside_its_limits_is_a_clear_error():
    from il2pkpd.errors import ParameterError
    df = subject(1, [rec(0, 1, 100, ii=12, ss=1, cmt=1)], [1.0, 5.0], 2)
    p = {k: v for k, v in MM.items() if k != "R2"}
    with pytest.raises(ParameterError, match="at most 4 dosing intervals"):
        predict("one_cmt_oral_mm", {**p, "TLAG1": 12.0 * 5.5}, df)


def test_ode_time_restart_after_reset_matches_closed_form():
    df = pd.DataFrame([rec(0, 1, 100), rec(5), rec(0, 4, 50, rate=25), rec(1), rec(2),
                       rec(0, 3), rec(0, 1, 10), rec(3)])
    p = {"CL": 5.0, "V": 50.0, "TLAG1": 0.5}
    closed = predict("one_cmt_iv", p, df)["PRED"].to_numpy()
    ode = predict("one_cmt_iv", p, df, method="ode", **TIGHT)["PRED"].to_numpy()
    np.testing.assert_allclose(ode, closed, rtol=1e-8)
    assert closed[0] > 0 and closed[1] > 0 and closed[3] > 0
