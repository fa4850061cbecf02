"""NONMEM event semantics on the closed-form path, each against an independent reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.test_util import check_grads

from il2pkpd.engine import build_events, make_predict_fn, predict
from il2pkpd.errors import DatasetError, ParameterError
from il2pkpd.models import load_model

P1 = {"CL": 5.0, "V": 50.0}
K = 0.1
P2 = {"CL": 4.0, "V1": 70.0, "Q": 4.0, "V2": 50.0}
P2O = {**P2, "KA": 0.7}


def rec(time, evid=0, amt=0.0, rate=0.0, ii=0.0, addl=0, ss=0, cmt=1, id_=1):
    return {"ID": id_, "TIME": float(time), "EVID": evid, "AMT": float(amt), "RATE": float(rate),
            "II": float(ii), "ADDL": addl, "SS": ss, "CMT": cmt}


def frame(doses, obs_times, cmt_obs=1):
    """Dose records first, then observations; sorted by time (stable: doses first at ties)."""
    df = pd.DataFrame(doses + [rec(t, cmt=cmt_obs) for t in obs_times])
    return df.sort_values("TIME", kind="stable").reset_index(drop=True)


def pred(model, params, df, **kw):
    return predict(model, params, df, **kw)["PRED"].to_numpy()


# -- ADDL ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model,params,dose_cmt,obs_cmt,rate", [
    ("one_cmt_iv", P1, 1, 1, 0.0),
    ("two_cmt_iv", P2, 1, 1, 30.0),
    ("two_cmt_oral", P2O, 1, 2, 0.0),
])
def test_addl_matches_explicit_dose_rows(model, params, dose_cmt, obs_cmt, rate):
    obs = np.linspace(0.5, 80, 23)
    implied = frame([rec(0, 1, 100, rate, ii=12, addl=5, cmt=dose_cmt)], obs, obs_cmt)
    explicit = frame([rec(12 * k, 1, 100, rate, cmt=dose_cmt) for k in range(6)], obs, obs_cmt)
    np.testing.assert_allclose(pred(model, params, implied), pred(model, params, explicit),
                               rtol=1e-13)


def test_implied_dose_comes_before_an_observation_at_the_same_time():
    out = pred("one_cmt_iv", P1, frame([rec(0, 1, 100, ii=12, addl=1)], [12.0]))
    assert out[0] == pytest.approx(2 * math.exp(-K * 12) + 2, rel=1e-13)


def test_observation_before_dose_record_at_same_time_does_not_see_it():
    df = pd.DataFrame([rec(0, 1, 100), rec(12), rec(12, 1, 100), rec(12)])
    out = pred("one_cmt_iv", P1, df)
    assert out[0] == pytest.approx(2 * math.exp(-K * 12), rel=1e-13)
    assert out[1] == pytest.approx(2 * math.exp(-K * 12) + 2, rel=1e-13)


# -- steady state = limit of long repeated dosing -----------------------------------------

N_PAST = 120   # doses before the steady-state time: 120*12 h = 144 half-lives for k = 0.1


def _ss_vs_repeated(model, params, dose, obs_offsets, obs_cmt=1, ii=12.0, extra=()):
    t_ss = N_PAST * ii
    obs = [t_ss + o for o in obs_offsets]
    ss = frame(list(extra) + [rec(t_ss, ii=ii, **dose, ss=1)], obs, obs_cmt)
    rep = frame(list(extra) + [rec(0.0, ii=ii, addl=N_PAST, **dose)], obs, obs_cmt)
    return pred(model, params, ss), pred(model, params, rep)


OFFSETS = [0.0, 0.5, 1.0, 3.0, 6.0, 11.99]


@pytest.mark.parametrize("model,params,dose,obs_cmt", [
    ("one_cmt_iv", P1, {"evid": 1, "amt": 100}, 1),                       # bolus
    ("two_cmt_iv", P2, {"evid": 1, "amt": 100, "rate": 50}, 1),           # 2 h infusion
    ("two_cmt_iv", P2, {"evid": 1, "amt": 100, "rate": 5}, 1),            # 20 h > II
    ("two_cmt_oral", P2O, {"evid": 1, "amt": 100}, 2),                    # oral
    ("one_cmt_oral", {**P1, "KA": 1.2, "TLAG1": 1.5}, {"evid": 1, "amt": 100}, 2),
])
def test_steady_state_equals_long_repeated_dosing(model, params, dose, obs_cmt):
    a, b = _ss_vs_repeated(model, params, dose, OFFSETS, obs_cmt)
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_steady_state_with_lag_longer_than_interval():
    params = {**P1, "KA": 1.2, "TLAG1": 15.0}
    a, b = _ss_vs_repeated("one_cmt_oral", params, {"evid": 1, "amt": 100}, OFFSETS, 2)
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_steady_state_infusion_with_lag_and_bioavailability():
    params = {**P2, "TLAG1": 2.0, "F1": 0.6}
    a, b = _ss_vs_repeated("two_cmt_iv", params, {"evid": 1, "amt": 100, "rate": 10},
                           OFFSETS + [9.5])
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_steady_state_accumulation_closed_form_bolus():
    tau = 8.0
    out = pred("one_cmt_iv", P1, frame([rec(0, 1, 100, ii=tau, ss=1)], [0.0, 2.0, 7.0]))
    t = np.array([0.0, 2.0, 7.0])
    np.testing.assert_allclose(out, 2 * np.exp(-K * t) / (1 - math.exp(-K * tau)), rtol=1e-13)


def test_constant_infusion_steady_state_equals_long_infusion():
    t0 = 4000.0   # 140 terminal half-lives
    obs = [t0, t0 + 5, t0 + 30]
    ss = frame([rec(t0, 1, 0, rate=7.0, ss=1)], obs)
    long = frame([rec(0, 1, 7.0 * 1e6, rate=7.0)], obs)   # never-ending infusion from 0
    np.testing.assert_allclose(pred("two_cmt_iv", P2, ss), pred("two_cmt_iv", P2, long),
                               rtol=1e-9)
    assert pred("one_cmt_iv", P1, ss)[1] == pytest.approx(7.0 / P1["CL"], rel=1e-13)


def test_ss2_adds_to_existing_amounts_without_reset():
    t_ss = N_PAST * 12.0
    earlier = rec(t_ss - 3.0, 1, 40.0)
    obs = [t_ss + o for o in OFFSETS]
    ss2 = frame([earlier, rec(t_ss, 1, 100, ii=12, ss=2)], obs)
    rep = frame([rec(0.0, 1, 100, ii=12, addl=N_PAST), earlier], obs)
    np.testing.assert_allclose(pred("two_cmt_iv", P2, ss2), pred("two_cmt_iv", P2, rep),
                               rtol=1e-9)
    ss1 = frame([earlier, rec(t_ss, 1, 100, ii=12, ss=1)], obs)
    only = frame([rec(0.0, 1, 100, ii=12, addl=N_PAST)], obs)
    np.testing.assert_allclose(pred("two_cmt_iv", P2, ss1), pred("two_cmt_iv", P2, only),
                               rtol=1e-9)


# -- lag, bioavailability, infusion codes -------------------------------------------------

def test_infusion_with_lag_is_a_shifted_infusion():
    obs = np.array([0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 10.0])
    out = pred("one_cmt_iv", {**P1, "TLAG1": 1.5}, frame([rec(0, 1, 60, rate=20)], obs))
    s = obs - 1.5
    expected = 20 / P1["CL"] * (np.exp(-K * np.clip(s - 3, 0, None)) - np.exp(-K * np.clip(s, 0,
                                                                                            None)))
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)


def test_bioavailability_scales_bolus_amount():
    obs = [1.0, 5.0]
    a = pred("one_cmt_iv", {**P1, "F1": 0.3}, frame([rec(0, 1, 100)], obs))
    b = pred("one_cmt_iv", P1, frame([rec(0, 1, 30)], obs))
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_bioavailability_scales_infusion_duration_not_rate():
    obs = np.array([1.0, 2.5, 4.0, 8.0])
    out = pred("one_cmt_iv", {**P1, "F1": 0.5}, frame([rec(0, 1, 100, rate=20)], obs))
    dur = 0.5 * 100 / 20  # 2.5 h at 20 mg/h
    expected = 20 / P1["CL"] * (np.exp(-K * np.clip(obs - dur, 0, None)) - np.exp(-K * obs))
    np.testing.assert_allclose(out, expected, rtol=1e-13)


def test_rate_minus_one_uses_model_rate_parameter():
    obs = [0.5, 2.0, 9.0]
    a = pred("two_cmt_iv", {**P2, "R1": 25.0, "F1": 0.8}, frame([rec(0, 1, 100, rate=-1)], obs))
    b = pred("two_cmt_iv", {**P2, "F1": 0.8}, frame([rec(0, 1, 100, rate=25)], obs))
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_rate_minus_two_uses_model_duration_parameter():
    obs = [0.5, 2.0, 9.0]
    a = pred("two_cmt_iv", {**P2, "D1": 4.0, "F1": 0.8}, frame([rec(0, 1, 100, rate=-2)], obs))
    b = pred("two_cmt_iv", P2, frame([rec(0, 1, 80, rate=20)], obs))   # 80 mg over 4 h
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_rate_code_without_its_parameter_is_a_parameter_error():
    with pytest.raises(ParameterError, match="R1"):
        predict("two_cmt_iv", P2, frame([rec(0, 1, 100, rate=-1)], [1.0]))


# -- resets ---------------------------------------------------------------------------------

def test_evid3_reset_empties_the_system():
    df = pd.DataFrame([rec(0, 1, 100), rec(5), rec(10, 3), rec(11), rec(12, 1, 50), rec(14)])
    out = pred("one_cmt_iv", P1, df)
    np.testing.assert_allclose(out, [2 * math.exp(-0.5), 0.0, 1 * math.exp(-0.2)], rtol=1e-13)


def test_evid4_resets_then_doses_and_cancels_running_infusion():
    df = pd.DataFrame([rec(0, 1, 1000, rate=10), rec(5), rec(10, 4, 100), rec(13)])
    out = pred("one_cmt_iv", P1, df)
    np.testing.assert_allclose(out, [10 / 5 * (1 - math.exp(-0.5)), 2 * math.exp(-0.3)],
                               rtol=1e-13)


def test_time_may_restart_after_a_reset():
    df = pd.DataFrame([rec(0, 1, 100), rec(5), rec(0, 4, 50), rec(2)])
    np.testing.assert_allclose(pred("one_cmt_iv", P1, df),
                               [2 * math.exp(-0.5), 1 * math.exp(-0.2)], rtol=1e-13)


def test_lagged_dose_before_a_reset_never_arrives():
    df = pd.DataFrame([rec(0, 1, 100), rec(1, 3), rec(5)])
    assert pred("one_cmt_iv", {**P1, "TLAG1": 2.0}, df)[0] == 0.0


# -- input checks ------------------------------------------------------------------------

def test_dose_into_a_non_dosing_compartment_is_reported_with_line():
    df = frame([rec(0, 1, 100, cmt=2)], [1.0])
    with pytest.raises(DatasetError) as err:
        build_events(df, load_model("two_cmt_iv"))
    assert err.value.violations["column"].tolist() == ["CMT"]


def test_zero_amount_infusion_without_ss_is_reported():
    with pytest.raises(DatasetError) as err:
        build_events(frame([rec(0, 1, 0, rate=5)], [1.0]), load_model("one_cmt_iv"))
    assert err.value.violations["rule"].tolist() == ["infusion_amt"]


def test_ss_without_interval_is_reported():
    with pytest.raises(DatasetError):
        build_events(frame([rec(0, 1, 100, ss=1)], [1.0]), load_model("one_cmt_iv"))


# -- JAX transformations -------------------------------------------------------------------

def _mixed_events():
    """Two subjects: oral with lag and F, and IV infusion + SS infusion + bolus."""
    s1 = frame([rec(0, 1, 100, cmt=1), rec(12, 1, 50, rate=25, cmt=2)],
               [0.5, 1, 2, 6, 12, 13, 20], cmt_obs=2)
    s2 = frame([rec(0, 1, 80, rate=10, ii=12, ss=1, cmt=2), rec(30, 1, 40, cmt=1, ii=24, ss=2)],
               [0.5, 3, 9, 14, 30.5, 40], cmt_obs=2).assign(ID=2)
    return pd.concat([s1, s2], ignore_index=True)


NAMES = ["CL", "V1", "Q", "V2", "KA", "TLAG1", "F1", "TLAG2", "F2"]
X0 = np.array([[4.0, 70.0, 4.0, 50.0, 0.7, 0.4, 0.8, 0.3, 0.9],
               [3.0, 60.0, 5.0, 40.0, 1.1, 0.2, 0.6, 0.45, 0.7]])


@pytest.fixture(scope="module")
def mixed_fn():
    m = load_model("two_cmt_oral")
    ev = build_events(_mixed_events(), m)
    f = make_predict_fn(m, ev)
    return lambda x: f({n: x[:, i] for i, n in enumerate(NAMES)})


def test_jit_equals_eager(mixed_fn):
    x = jnp.asarray(X0)
    with jax.disable_jit():
        eager, _ = mixed_fn(x)
    jitted, ok = jax.jit(mixed_fn)(x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-13)
    assert bool(jnp.all(ok))


def test_gradients_of_all_parameters_including_lag_and_f(mixed_fn):
    def total(x):
        return jnp.sum(mixed_fn(x)[0] ** 2)
    check_grads(jax.jit(total), (jnp.asarray(X0),), order=1, modes=["fwd", "rev"], eps=1e-5, rtol=1e-5)


def test_gradient_is_finite_on_padding_and_far_from_doses():
    m = load_model("one_cmt_oral")
    df = pd.concat([frame([rec(5, 1, 100)], [0.1, 1.0, 1e4], cmt_obs=2),
                    frame([rec(0, 1, 100)], [2.0], cmt_obs=2).assign(ID=2)], ignore_index=True)
    f = make_predict_fn(m, build_events(df, m))
    g = jax.jit(jax.grad(lambda ka: jnp.sum(f({"CL": jnp.ones(2), "V": jnp.ones(2) * 10,
                                       "KA": ka, "TLAG1": jnp.ones(2)})[0])))(jnp.ones(2))
    assert bool(jnp.all(jnp.isfinite(g)))


def test_observation_in_a_compartment_without_output_is_reported():
    df = frame([rec(0, 1, 100, cmt=1)], [1.0], cmt_obs=1)   # depot observation, oral model
    with pytest.raises(DatasetError) as err:
        build_events(df, load_model("one_cmt_oral"))
    assert err.value.violations["rule"].tolist() == ["unmapped_cmt"]


def test_vmap_over_parameter_sets_equals_a_loop(mixed_fn):
    xs = jnp.stack([jnp.asarray(X0), jnp.asarray(X0) * 1.1, jnp.asarray(X0) * 0.9])
    batched, ok = jax.jit(jax.vmap(mixed_fn))(xs)
    looped = jnp.stack([mixed_fn(x)[0] for x in xs])
    np.testing.assert_allclose(batched, looped, rtol=1e-13)
    assert bool(jnp.all(ok))


def test_constant_infusion_rate_from_model_parameter_and_f_not_applied():
    obs = [0.0, 5.0, 40.0]
    a = pred("two_cmt_iv", {**P2, "R1": 7.0, "F1": 0.5}, frame([rec(0, 1, 0, rate=-1, ss=1)],
                                                               obs))
    b = pred("two_cmt_iv", P2, frame([rec(0, 1, 0, rate=7.0, ss=1)], obs))
    np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(b, 7.0 / P2["CL"], rtol=1e-12)   # C_ss = rate / CL
