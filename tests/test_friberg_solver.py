"""The Friberg model on the engine's Rodas4 path: sparse linear solve, discrete adjoint.

References: scipy's Radau at tight tolerances on equations written here by hand (not the model
file), forward-mode derivatives of the same discrete solution, and finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from il2pkpd._paths import MODELS_DIR
from il2pkpd.data import read_dataset
from il2pkpd.engine import build_events, make_predict_fn
from il2pkpd.engine._rodas import make_rodas_predict
from il2pkpd.models import load_model
from il2pkpd.solve import Doses, from_functions, make_population_fn
from il2pkpd.solve.population import make_population_vjp_fn
from il2pkpd.solve.system import DenseLU, SparseLU, from_model_file, jacobian_pattern

# two subjects of the public benchmark (friberg_true_params.csv, IDs 1 and 2)
TRUTH = {"CL": [3.02418, 3.4285], "V1": [63.3645, 39.7723], "Q": [4.43291, 5.60045],
         "V2": [45.6859, 47.9469], "KA": [0.86701, 1.00335], "MTT": [185.137, 89.4504],
         "CIRC0": [4.11802, 4.70348], "ALPHA": [3.40878e-4, 2.74044e-4],
         "GAMMA": [0.264972, 0.102002]}
OBS_CP = [24.0, 72.0, 72.5, 73.0, 74.0, 76.0, 80.0, 96.0, 144.5, 146.0, 168.0, 216.0]
OBS_NEUT = [0.0, 48.0, 120.0, 192.0, 264.0, 336.0, 408.0, 480.0, 552.0, 672.0]
ATOL = [1e-3] * 3 + [1e-6] * 5


def friberg_dataset(model):
    rows = []
    for i in (1, 2):
        rows.append(dict(ID=i, TIME=0.0, AMT=10000.0, II=24.0, ADDL=6, EVID=1, CMT=1, MDV=1))
        rows += [dict(ID=i, TIME=t, EVID=0, CMT=2, MDV=0, DV=1.0) for t in OBS_CP]
        rows += [dict(ID=i, TIME=t, EVID=0, CMT=8, MDV=0, DV=1.0) for t in OBS_NEUT]
    df = pd.DataFrame(rows).fillna(0.0).sort_values(["ID", "TIME"], kind="stable")
    return read_dataset(df, model=model)


def scipy_friberg(p, t_obs):
    """Radau, rtol 1e-11, with the doses applied between integrations (hand-written RHS)."""
    k10, k12, k21 = p["CL"] / p["V1"], p["Q"] / p["V1"], p["Q"] / p["V2"]
    ktr = 4.0 / p["MTT"]

    def rhs(t, y):
        a, c, pe, pr, t1, t2, t3, ci = y
        e = min(p["ALPHA"] * c / p["V1"], 1.0)
        fb = (p["CIRC0"] / ci) ** p["GAMMA"]
        return [-p["KA"] * a, p["KA"] * a - (k10 + k12) * c + k21 * pe, k12 * c - k21 * pe,
                ktr * pr * ((1 - e) * fb - 1), ktr * (pr - t1), ktr * (t1 - t2),
                ktr * (t2 - t3), ktr * (t3 - ci)]

    y = np.array([0.0, 0.0, 0.0] + [p["CIRC0"]] * 5)
    out = {}
    t_obs = np.asarray(sorted(set(t_obs)))
    edges = [0.0] + [24.0 * k for k in range(1, 7)] + [t_obs[-1]]
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        if k < 7:
            y = y + np.array([10000.0] + [0.0] * 7)   # dose into the depot at t = a
        inside = t_obs[(t_obs >= a) & (t_obs <= b)]
        sol = solve_ivp(rhs, (a, b), y, method="Radau", rtol=1e-11, atol=1e-12,
                        t_eval=inside, dense_output=True)
        for t, col in zip(sol.t, sol.y.T, strict=True):
            out.setdefault(float(t), col)
        y = sol.y[:, -1] if inside.size and inside[-1] == b else sol.sol(b)
    return out


@pytest.fixture(scope="module")
def friberg():
    model = load_model("friberg")
    ds = friberg_dataset(model)
    return model, ds, build_events(ds, model)


def test_sparse_lu_matches_dense_lu_and_pattern_covers_the_jacobian():
    system = from_model_file(MODELS_DIR / "friberg.toml")
    pattern = jacobian_pattern(system)
    rng = np.random.default_rng(3)
    p = system.param_dict(jnp.asarray([system.defaults[k] for k in system.param_names]))
    for _ in range(3):
        y = tuple(jnp.asarray(v) for v in rng.uniform(0.1, 5.0, 8) * np.r_[[1e3] * 3, [1.0] * 5])
        jac = np.asarray(jax.jacfwd(lambda v: jnp.stack(system.rhs_t(tuple(v), p)))(
            jnp.stack(y)))
        outside = [(i, j) for i in range(8) for j in range(8) if j not in pattern[i]]
        assert all(jac[i, j] == 0.0 for i, j in outside)
        assert all(jac[i, j] != 0.0 for i in range(8) for j in pattern[i])
        for lam in (1e-3, 0.3, 50.0):
            b = tuple(jnp.asarray(v) for v in rng.normal(size=8))
            dense = np.asarray(DenseLU().solve(DenseLU().prepare(system, y, p, lam), b))
            sparse = np.asarray(SparseLU().solve(SparseLU().prepare(system, y, p, lam), b))
            np.testing.assert_allclose(sparse, dense, rtol=1e-10, atol=1e-14)


def test_friberg_rodas_matches_scipy_radau(friberg):
    model, ds, ev = friberg
    f = make_predict_fn(model, ev, method="rodas", rtol=1e-8, atol=[1e-6] * 3 + [1e-10] * 5)
    pred, ok = f({k: jnp.asarray(v) for k, v in TRUTH.items()})
    assert bool(ok.all())
    rows, mask = np.asarray(ev.obs_row), np.asarray(ev.obs_mask)
    for s in range(2):
        p = {k: v[s] for k, v in TRUTH.items()}
        recs = ds.df.iloc[rows[s][mask[s]]]
        ref = scipy_friberg(p, recs.TIME.to_numpy())
        want = np.array([ref[float(t)][1] / p["V1"] if c == 2 else ref[float(t)][7]
                         for t, c in zip(recs.TIME, recs.CMT, strict=True)])
        np.testing.assert_allclose(np.asarray(pred[s])[mask[s]], want, rtol=2e-6)


def test_friberg_adjoint_gradient_matches_forward_mode_and_finite_differences(friberg):
    model, ds, ev = friberg
    names = list(TRUTH)
    mask = jnp.asarray(ev.obs_mask)
    w = jnp.asarray(np.random.default_rng(0).normal(size=mask.shape))

    def loss_of(solve):
        def loss(x):
            pred, _ = solve({k: x[i] for i, k in enumerate(names)})
            return jnp.sum(jnp.where(mask, w * jnp.log(jnp.abs(pred) + 1e-3), 0.0))
        return loss

    x = jnp.asarray([TRUTH[k] for k in names])
    kw = dict(rtol=1e-9, atol=[1e-6] * 3 + [1e-10] * 5, diff_params=names)
    loss_a = jax.jit(loss_of(make_rodas_predict(model, ev, gradient="adjoint", **kw)))
    g_adj = np.asarray(jax.jit(jax.grad(loss_of(make_rodas_predict(
        model, ev, gradient="adjoint", **kw))))(x))
    g_fwd = np.asarray(jax.jit(jax.grad(loss_of(make_rodas_predict(
        model, ev, gradient="forward", **kw))))(x))
    np.testing.assert_allclose(g_adj, g_fwd, rtol=1e-9, atol=1e-12 * np.abs(g_fwd).max())
    # central differences in log parameters
    fd = np.zeros_like(g_adj)
    h = 1e-4
    for i in range(x.shape[0]):
        for s in range(x.shape[1]):
            up = float(loss_a(x.at[i, s].multiply(np.exp(h))))
            dn = float(loss_a(x.at[i, s].multiply(np.exp(-h))))
            fd[i, s] = (up - dn) / (2 * h)
    np.testing.assert_allclose(g_adj * np.asarray(x), fd, rtol=1e-4,
                               atol=1e-6 * np.abs(fd).max())


def two_cmt_oral_system():
    """Two compartments, first-order absorption, lag and bioavailability (small, fast)."""

    def rhs(t, y, p):
        c1, c2 = y["central"] / p["V1"], y["periph"] / p["V2"]
        flow = p["Q"] * (c1 - c2)
        return {"depot": -p["KA"] * y["depot"],
                "central": p["KA"] * y["depot"] - p["CL"] * c1 - flow, "periph": flow}

    def outputs(y, p):
        return {"CP": y["central"] / p["V1"]}

    return from_functions(rhs, outputs, None, state_names=["depot", "central", "periph"],
                          param_names=["CL", "V1", "Q", "V2", "KA", "F1", "TLAG1"],
                          name="two_cmt_oral",
                          defaults=dict(CL=2.0, V1=10.0, Q=3.0, V2=20.0, KA=1.3, F1=0.7,
                                        TLAG1=0.4))


def test_adjoint_with_lag_bioavailability_infusions_and_per_patient_doses():
    system = two_cmt_oral_system()
    t_out = np.array([0.5, 1.0, 2.0, 3.0, 6.0, 12.0, 13.0, 20.0, 24.0, 30.0])
    doses = Doses(np.array([[0.0, 12.0, 20.0], [1.0, 13.0, np.inf]]),
                  np.array([[100.0, 80.0, 50.0], [120.0, 60.0, 0.0]]),
                  np.array([[1, 1, 2], [1, 2, 1]]), np.array([[0.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    pm = jnp.asarray([[2.0, 10.0, 3.0, 20.0, 1.3, 0.7, 0.4], [1.5, 12.0, 2.0, 15.0, 0.8, 0.9,
                                                               0.25]])
    w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 1, t_out.size)))
    kw = dict(rtol=1e-8, atol=1e-10)
    f_fwd = make_population_fn(system, doses, t_out, **kw)
    f_rev = make_population_vjp_fn(system, doses, t_out, **kw)
    np.testing.assert_array_equal(np.asarray(f_rev(pm).outputs), np.asarray(f_fwd(pm).outputs))

    def loss(f):
        return lambda x: jnp.sum(w * f(x).outputs ** 2)

    g_rev = np.asarray(jax.jit(jax.grad(loss(f_rev)))(pm))
    g_fwd = np.asarray(jax.jit(jax.jacfwd(loss(f_fwd)))(pm))
    np.testing.assert_allclose(g_rev, g_fwd, rtol=1e-9, atol=1e-12 * np.abs(g_fwd).max())
    assert np.all(np.abs(g_rev) > 0)      # every parameter, lag and F included, matters


def test_history_bounds_the_iterations_and_fails_cleanly():
    system = two_cmt_oral_system()
    t_out = np.linspace(0.0, 48.0, 25)
    doses = Doses(np.array([0.0, 24.0]), np.array([100.0, 100.0]), np.array([1, 1]))
    pm = jnp.asarray([[2.0, 10.0, 3.0, 20.0, 1.3, 0.7, 0.4]])
    full = make_population_vjp_fn(system, doses, t_out, rtol=1e-8, atol=1e-10)(pm)
    assert int(full.status[0]) == 0
    short = make_population_vjp_fn(system, doses, t_out, rtol=1e-8, atol=1e-10,
                                   history=int(full.n_steps[0]) // 2)
    sol = short(pm)
    assert int(sol.status[0]) == 1
    g = jax.grad(lambda x: jnp.sum(short(x).outputs))(pm)
    assert bool(jnp.all(jnp.isfinite(g)))
