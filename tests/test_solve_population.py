"""The batched Rodas4 population solver: references, events, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_il2_model import DEFAULTS, rel_err, scipy_il2

from il2pkpd.errors import ParameterError
from il2pkpd.solve import Doses, from_functions, solve_population
from il2pkpd.solve.il2 import il2_system


def one_cmt_system():
    """One compartment with first-order absorption: closed forms exist."""

    def rhs(t, y, p):
        return {"depot": -p["KA"] * y["depot"],
                "central": p["KA"] * y["depot"] - p["CL"] / p["V"] * y["central"]}

    def outputs(y, p):
        return {"CP": y["central"] / p["V"]}

    return from_functions(rhs, outputs, None, state_names=["depot", "central"],
                          param_names=["CL", "V", "KA", "F1", "TLAG1"], name="one_cmt",
                          defaults=dict(CL=2.0, V=10.0, KA=1.3, F1=0.7, TLAG1=0.3))


def one_cmt_closed_form(p, t, sc, iv_inf):
    k, ka = p["CL"] / p["V"], p["KA"]
    c = np.zeros_like(t)
    for t0, amt in sc:
        tau = t - t0 - p["TLAG1"]
        on = tau > 0
        c[on] += (p["F1"] * amt * ka / (p["V"] * (ka - k))
                  * (np.exp(-k * tau[on]) - np.exp(-ka * tau[on])))
    for t0, amt, dur in iv_inf:
        rate = amt / dur
        tau = t - t0
        during = (tau > 0) & (tau <= dur)
        after = tau > dur
        c[during] += rate / (k * p["V"]) * (1 - np.exp(-k * tau[during]))
        c[after] += (rate / (k * p["V"]) * (1 - np.exp(-k * dur))
                     * np.exp(-k * (tau[after] - dur)))
    return c


def test_generic_path_closed_form_sc_lag_bioavailability_and_infusion():
    system = one_cmt_system()
    p = system.defaults
    t = np.linspace(0.0, 48.0, 97)
    doses = Doses(np.array([0.0, 12.0, 20.0]), np.array([100.0, 100.0, 50.0]),
                  np.array([1, 1, 2]), np.array([0.0, 0.0, 2.0]))
    sol = solve_population(system, {}, doses, t, rtol=1e-8, atol=1e-12)
    ref = one_cmt_closed_form(p, t, [(0.0, 100.0), (12.0, 100.0)], [(20.0, 50.0, 2.0)])
    np.testing.assert_allclose(np.asarray(sol.outputs[0, 0]), ref, rtol=1e-6, atol=1e-10)


def test_per_patient_schedules_match_individual_solves():
    system = one_cmt_system()
    t = np.linspace(0.0, 36.0, 13)
    times = np.array([[0.0, 12.0, np.inf], [1.0, 5.0, 9.0]])
    amts = np.array([[100.0, 80.0, 0.0], [40.0, 40.0, 40.0]])
    cmts = np.ones((2, 3), int)
    params = {"CL": np.array([2.0, 3.0]), "KA": np.array([1.3, 0.6])}
    both = solve_population(system, params, Doses(times, amts, cmts), t, rtol=1e-8,
                            atol=1e-12)
    for i in range(2):
        p = {**system.defaults, "CL": params["CL"][i], "KA": params["KA"][i]}
        doses = [(tt, a) for tt, a in zip(times[i], amts[i], strict=True) if np.isfinite(tt)]
        ref = one_cmt_closed_form(p, t, doses, [])
        np.testing.assert_allclose(np.asarray(both.outputs[i, 0]), ref, rtol=1e-6, atol=1e-10)


def varied_il2_params(n, seed=7):
    """*n* patients with log-normal variability (SD 0.3) around the IL-2 defaults."""
    rng = np.random.default_rng(seed)
    params = {k: v * np.exp(0.3 * rng.standard_normal(n)) for k, v in DEFAULTS.items()}
    params["F1"] = np.minimum(params["F1"], 1.0)
    params["IMAX"] = np.minimum(params["IMAX"], 0.95)
    return params


def test_il2_population_with_variability_matches_scipy():
    system = il2_system()
    n = 3
    params = varied_il2_params(n)
    t = np.arange(0.0, 672.0001, 12.0)
    regimen = [(24.0 * k, 1e6, "sc", 0.0) for k in range(5)]
    doses = Doses(24.0 * np.arange(5), np.full(5, 1e6), np.ones(5, int))
    sol = solve_population(system, params, doses, t, rtol=3e-6)
    assert np.all(np.asarray(sol.status) == 0)
    for i in range(n):
        ref = scipy_il2({k: v[i] for k, v in params.items()}, regimen, t)
        err = rel_err(np.asarray(sol.outputs[i]), ref)
        assert err.max() < 1e-4, (i, err.max(axis=1))


def test_forward_mode_gradient_matches_finite_differences():
    system = one_cmt_system()
    t = np.linspace(0.0, 24.0, 9)
    doses = Doses(np.array([0.0, 8.0]), np.array([100.0, 100.0]), np.array([1, 1]))

    def total(log_cl, log_tlag):
        params = {"CL": jnp.exp(log_cl), "TLAG1": jnp.exp(log_tlag)}
        sol = solve_population(system, params, doses, t, rtol=1e-10, atol=1e-13)
        return jnp.sum(sol.outputs)

    x = (jnp.log(2.0), jnp.log(0.3))
    grad = jax.jacfwd(total, argnums=(0, 1))(*x)
    eps = 1e-5
    for i in range(2):
        hi = list(x)
        lo = list(x)
        hi[i] = hi[i] + eps
        lo[i] = lo[i] - eps
        fd = (total(*hi) - total(*lo)) / (2 * eps)
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-5)


def test_bad_input_and_status():
    system = one_cmt_system()
    doses = Doses(np.array([0.0]), np.array([100.0]), np.array([1]))
    with pytest.raises(ParameterError, match="unknown parameter"):
        solve_population(system, {"CLX": 1.0}, doses, [0.0, 1.0])
    with pytest.raises(ParameterError, match="compartment"):
        solve_population(system, {}, Doses([0.0], [1.0], [7]), [0.0, 1.0])
    with pytest.raises(ParameterError, match="length"):
        solve_population(system, {"CL": np.ones(2), "V": np.ones(3)}, doses, [0.0, 1.0])
    sol = solve_population(system, {}, doses, np.linspace(0, 48, 5), max_steps=5)
    assert int(sol.status[0]) == 1


def test_lane_refill_gives_the_same_results_as_one_lane_per_patient():
    """Lanes that take the next patient (refill) change only the speed, not the results (up to
    rounding: the vector width can change the last bits)."""
    system = one_cmt_system()
    rng = np.random.default_rng(11)
    n = 23
    params = {"CL": 2.0 * np.exp(0.5 * rng.standard_normal(n)),
              "KA": 1.3 * np.exp(0.5 * rng.standard_normal(n))}
    times = np.sort(rng.uniform(0.0, 30.0, (n, 3)), axis=1)
    times[3, 1:] = np.inf   # one patient with a single dose
    doses = Doses(times, np.full((n, 3), 100.0), np.ones((n, 3), int))
    t = np.linspace(0.0, 48.0, 25)
    ref = solve_population(system, params, doses, t, rtol=1e-6, chunk_size=n, lanes=None)
    ref_outputs = np.asarray(ref.outputs)
    for lanes in (1, 4, 7):
        sol = solve_population(system, params, doses, t, rtol=1e-6, chunk_size=n, lanes=lanes)
        np.testing.assert_allclose(np.asarray(sol.outputs), ref_outputs, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(np.asarray(sol.n_steps), np.asarray(ref.n_steps))
        np.testing.assert_array_equal(np.asarray(sol.status), np.asarray(ref.status))
    for i in (0, 3, n - 1):   # and the reference itself is right (closed form)
        p = {**system.defaults, "CL": params["CL"][i], "KA": params["KA"][i]}
        sc = [(tt, 100.0) for tt in times[i] if np.isfinite(tt)]
        np.testing.assert_allclose(ref_outputs[i, 0], one_cmt_closed_form(p, t, sc, []),
                                   rtol=1e-5, atol=1e-9)
    capped = solve_population(system, params, doses, t, max_steps=30, chunk_size=n, lanes=4)
    assert np.all(np.asarray(capped.status) == 1)


def test_float32_il2_population_matches_scipy_and_decays_without_underflow():
    """Single precision: the #4 regimen within 1e-4 of scipy, and no step-size failure when
    IL-2 decays to subnormal float32 values weeks after the last dose (a fast-clearing patient
    measured to fail before the Jacobian's concentration threshold)."""
    system = il2_system()
    n = 3
    params = varied_il2_params(n)
    fast = {'CL': 6.248133523741239, 'V1': 5.605459600898081, 'Q': 1.3159521979821092,
            'V2': 3.2468782072454796, 'KA': 0.39014156131723093, 'F1': 0.4076073103375477,
            'TLAG1': 0.3364322669291428, 'VMAX': 34275.617577108875, 'KM': 2.3962935643448238,
            'EMAX_T': 6.128029095753491, 'EC50_T': 0.7315145886409183,
            'HILL': 1.4531688254621828, 'MTT_T': 52.69357135392944,
            'KOUT_T': 0.01745188306058548, 'TREG0': 61.1592854856857,
            'EMAX_N': 3.631910400473071, 'EC50_N': 14.0843076793844,
            'MTT_N': 64.28971479128654, 'KOUT_N': 0.010507924535224646,
            'NK0': 295.87817561005465, 'IMAX': 0.6963234405431342, 'IC50': 5.681073929155272}
    params = {k: np.append(v, fast[k]) for k, v in params.items()}
    t = np.arange(0.0, 672.0001, 12.0)
    regimen = [(24.0 * k, 1e6, "sc", 0.0) for k in range(5)]
    doses = Doses(24.0 * np.arange(5), np.full(5, 1e6), np.ones(5, int))
    sol = solve_population(system, params, doses, t, rtol=2e-5, dtype="float32")
    assert sol.outputs.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(sol.status), 0)
    for i in range(n + 1):
        ref = scipy_il2({k: v[i] for k, v in params.items()}, regimen, t)
        err = rel_err(np.asarray(sol.outputs[i], dtype=float), ref)
        assert err.max() < 1e-4, (i, err.max(axis=1))
    with pytest.raises(ParameterError, match="dtype"):
        solve_population(system, {}, doses, t, dtype="float16")
