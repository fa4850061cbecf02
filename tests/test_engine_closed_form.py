"""Closed-form predictions against hand-written textbook formulas."""

import math

import numpy as np
import pandas as pd
import pytest

from il2pkpd.engine import build_events, make_predict_fn, predict
from il2pkpd.models import load_model

CL, V = 5.0, 50.0
K = CL / V


def _data(rows, obs_times, cmt_obs=1):
    """rows: list of dose dicts; observation records at obs_times (after doses at equal time)."""
    recs = []
    for r in rows:
        recs.append({"ID": 1, "EVID": 1, "AMT": 0.0, "RATE": 0.0, "II": 0.0, "ADDL": 0, "SS": 0,
                     "CMT": 1, **r})
    for t in obs_times:
        recs.append({"ID": 1, "TIME": t, "EVID": 0, "AMT": 0.0, "RATE": 0.0, "II": 0.0,
                     "ADDL": 0, "SS": 0, "CMT": cmt_obs})
    df = pd.DataFrame(recs)
    return df.sort_values("TIME", kind="stable").reset_index(drop=True)


T = np.array([0.5, 1.0, 2.0, 7.5, 13.0, 30.0])


def test_one_cmt_bolus_is_exponential_decay():
    out = predict("one_cmt_iv", {"CL": CL, "V": V}, _data([{"TIME": 0.0, "AMT": 100.0}], T))
    np.testing.assert_allclose(out["PRED"], 100 / V * np.exp(-K * T), rtol=1e-12)


def test_one_cmt_infusion_rises_and_decays():
    rate, dur = 25.0, 4.0
    out = predict("one_cmt_iv", {"CL": CL, "V": V},
                  _data([{"TIME": 0.0, "AMT": rate * dur, "RATE": rate}], T))
    during = rate / CL * (1 - np.exp(-K * np.minimum(T, dur)))
    after = np.where(T > dur, np.exp(-K * (T - dur)), 1.0)
    np.testing.assert_allclose(out["PRED"], during * after, rtol=1e-12)


def test_bateman_first_order_absorption():
    ka = 1.3
    out = predict("one_cmt_oral", {"CL": CL, "V": V, "KA": ka},
                  _data([{"TIME": 0.0, "AMT": 100.0, "CMT": 1}], T, cmt_obs=2))
    expected = 100 * ka / (V * (ka - K)) * (np.exp(-K * T) - np.exp(-ka * T))
    np.testing.assert_allclose(out["PRED"], expected, rtol=1e-12)


def test_bateman_limit_when_ka_equals_k():
    out = predict("one_cmt_oral", {"CL": CL, "V": V, "KA": K},
                  _data([{"TIME": 0.0, "AMT": 100.0, "CMT": 1}], T, cmt_obs=2))
    expected = 100 / V * K * T * np.exp(-K * T)
    np.testing.assert_allclose(out["PRED"], expected, rtol=1e-6)


def test_superposition_of_two_doses():
    out = predict("one_cmt_iv", {"CL": CL, "V": V},
                  _data([{"TIME": 0.0, "AMT": 100.0}, {"TIME": 6.0, "AMT": 50.0}], T))
    expected = 100 / V * np.exp(-K * T) + np.where(T >= 6, 50 / V * np.exp(-K * (T - 6)), 0)
    np.testing.assert_allclose(out["PRED"], expected, rtol=1e-12)


def test_steady_state_bolus_accumulation_factor():
    tau = 12.0
    out = predict("one_cmt_iv", {"CL": CL, "V": V},
                  _data([{"TIME": 0.0, "AMT": 100.0, "SS": 1, "II": tau}], [0.0, 3.0, 11.9]))
    t = np.array([0.0, 3.0, 11.9])
    np.testing.assert_allclose(out["PRED"], 100 / V * np.exp(-K * t) / (1 - np.exp(-K * tau)),
                               rtol=1e-12)


def test_two_cmt_biexponential_matches_textbook_macro_constants():
    p = {"CL": 4.0, "V1": 70.0, "Q": 4.0, "V2": 50.0}
    k10, k12, k21 = 4 / 70, 4 / 70, 4 / 50
    a = k10 + k12 + k21
    alpha = (a + math.sqrt(a * a - 4 * k10 * k21)) / 2
    beta = (a - math.sqrt(a * a - 4 * k10 * k21)) / 2
    A = (alpha - k21) / (alpha - beta) / 70
    B = (k21 - beta) / (alpha - beta) / 70
    out = predict("two_cmt_iv", p, _data([{"TIME": 0.0, "AMT": 10.0}], T))
    np.testing.assert_allclose(out["PRED"], 10 * (A * np.exp(-alpha * T) + B * np.exp(-beta * T)),
                               rtol=1e-12)


def test_three_cmt_exponents_match_matrix_eigenvalues():
    m = load_model("three_cmt_iv")
    p = {"CL": 4.0, "V1": 20.0, "Q2": 8.0, "V2": 30.0, "Q3": 1.0, "V3": 100.0}
    v = np.array([20.0, 30.0, 100.0])
    A = np.array([[4 + 8 + 1, -8, -1], [-8, 8, 0], [-1, 0, 1.0]])   # clearance matrix, L/h
    Kmat = -A / v[None, :]
    t = np.array([0.1, 1.0, 5.0, 50.0, 200.0])
    expected = np.array([(np.real(_expm(Kmat * ti)) @ np.array([10.0, 0, 0]))[0] / 20.0
                         for ti in t])
    out = predict(m, p, _data([{"TIME": 0.0, "AMT": 10.0}], t))
    np.testing.assert_allclose(out["PRED"], expected, rtol=1e-10)


def _expm(a):
    w, vecs = np.linalg.eig(a)
    return vecs @ np.diag(np.exp(w)) @ np.linalg.inv(vecs)


def test_padding_is_finite_and_zero():
    df = pd.concat([_data([{"TIME": 0.0, "AMT": 100.0}], [1.0, 2.0, 3.0]),
                    _data([{"TIME": 0.0, "AMT": 100.0}], [1.0]).assign(ID=2)])
    m = load_model("one_cmt_iv")
    ev = build_events(df, m)
    pred, ok = make_predict_fn(m, ev)({"CL": np.array([5.0, 6.0]), "V": np.array([50.0, 40.0])})
    assert bool(np.all(ok))
    assert np.asarray(pred)[1, 1:].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", ["one_cmt_iv", "one_cmt_oral", "two_cmt_iv", "two_cmt_oral",
                                  "three_cmt_iv"])
def test_bundled_models_predict_positive_concentrations(name):
    m = load_model(name)
    dose_cmt = m.dosing_cmts[0]
    out = predict(m, m.defaults(), _data([{"TIME": 0.0, "AMT": 100.0, "CMT": dose_cmt}], T,
                                         cmt_obs=m.central_cmt))
    assert np.all(out["PRED"] > 0)


def test_two_cmt_infusion_matches_matrix_exponential_into_the_far_tail():
    """A 2-hour infusion, observed before, during, at the end and long after (down to 1e-30
    of the peak): the relative accuracy holds in the tail (the log-normal error needs it);
    reference: the ODE solution by eigen-decomposition, (integral of exp(A s) ds) applied to
    the rate while the infusion runs."""
    p = {"CL": 4.0, "V1": 70.0, "Q": 4.0, "V2": 50.0}
    rate, dur, t_dose = 25.0, 2.0, 1.0
    A = np.array([[-(4 + 4) / 70, 4 / 50], [4 / 70, -4 / 50]])     # amounts, 1/h
    w, vecs = np.linalg.eig(A)
    inv = np.linalg.inv(vecs)

    def central(t):
        s = t - t_dose
        if s <= 0:
            return 0.0
        tin = min(s, dur)
        # amount at the end of the running part: vecs diag((exp(w tin) - 1)/w) inv [rate, 0]
        x = vecs @ np.diag(np.expm1(w * tin) / w) @ inv @ np.array([rate, 0.0])
        x = vecs @ np.diag(np.exp(w * (s - tin))) @ inv @ x
        return x[0] / 70.0

    t = np.array([0.5, 1.0, 1.001, 2.0, 3.0, 3.5, 10.0, 100.0, 1000.0, 6000.0])
    out = predict("two_cmt_iv", p, _data([{"TIME": t_dose, "AMT": rate * dur, "RATE": rate}],
                                         t))
    expected = np.array([central(ti) for ti in t])
    assert expected[-1] < 1e-30 * expected.max()
    np.testing.assert_allclose(out["PRED"], expected, rtol=1e-10, atol=0.0)


def test_infusion_and_bolus_in_two_dosing_compartments_superpose():
    """two_cmt_oral: a bolus into the depot and an infusion into the central compartment of
    the same subject add up to the sum of the two predicted separately."""
    m = load_model("two_cmt_oral")
    p = {**m.defaults()}
    t = np.array([0.25, 1.0, 2.5, 6.0, 24.0])
    bolus = {"TIME": 0.0, "AMT": 100.0, "CMT": m.dosing_cmts[0]}
    inf = {"TIME": 0.5, "AMT": 50.0, "RATE": 25.0, "CMT": m.central_cmt}
    obs_cmt = m.central_cmt
    both = predict(m, p, _data([bolus, inf], t, cmt_obs=obs_cmt))["PRED"]
    one = predict(m, p, _data([bolus], t, cmt_obs=obs_cmt))["PRED"]
    two = predict(m, p, _data([inf], t, cmt_obs=obs_cmt))["PRED"]
    np.testing.assert_allclose(np.asarray(both), np.asarray(one) + np.asarray(two), rtol=1e-12)
