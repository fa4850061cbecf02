"""The engine's Rodas4 path (method="rodas") against the diffrax ODE path and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from il2pkpd import OptionError
from il2pkpd.data import read_dataset
from il2pkpd.engine import build_events, make_predict_fn
from il2pkpd.models import load_model


@pytest.fixture(scope="module")
def setup():
    model = load_model("il2_pkpd")
    ds = read_dataset("datasets/il2_lowdose_sc.csv", model=model)
    df = ds.df[ds.df.ID.isin([13, 37]) & (ds.df.TIME <= 150)]
    return model, build_events(df, model)


def test_rodas_matches_tight_diffrax_solution(setup):
    model, ev = setup
    p = {"CL": jnp.array([7.2, 6.0]), "VMAX": jnp.array([40000.0, 30000.0])}
    pr, okr = make_predict_fn(model, ev, method="rodas", rtol=1e-8)(p)
    po, oko = make_predict_fn(model, ev, method="ode", solver="kvaerno5", rtol=1e-10,
                              atol=1e-12, max_steps=100000)(p)
    mask = np.asarray(ev.obs_mask)
    assert bool(okr.all()) and bool(oko.all())
    rel = np.abs(np.asarray(pr) - np.asarray(po)) / np.maximum(np.abs(np.asarray(po)), 1e-3)
    assert rel[mask].max() < 1e-5


@pytest.mark.parametrize("gradient", ["adjoint", "forward"])
def test_rodas_reverse_gradient_matches_finite_differences(setup, gradient):
    model, ev = setup
    mask = jnp.asarray(ev.obs_mask)
    f = make_predict_fn(model, ev, method="rodas", rtol=1e-9, gradient=gradient)

    def loss(x):
        pred, _ = f({"CL": x[0], "KA": x[1], "TLAG1": x[2], "F1": x[3]})
        return jnp.sum(jnp.where(mask, jnp.log1p(pred), 0.0))

    x = jnp.array([[7.2, 6.5], [0.25, 0.3], [0.45, 0.3], [0.4, 0.5]])
    g = np.asarray(jax.grad(loss)(x))
    eps = 1e-3
    fd = np.zeros_like(g)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            fd[i, j] = (loss(x.at[i, j].add(eps)) - loss(x.at[i, j].add(-eps))) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=2e-4, atol=1e-6)


def test_rodas_rejects_steady_state_doses():
    model = load_model("il2_pkpd")
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 2.0], "AMT": [1e6, 0.0], "II": [24.0, 0.0],
                       "SS": [1, 0], "EVID": [1, 0], "CMT": [1, 2], "DV": [np.nan, 1.0],
                       "MDV": [1, 0], "DVID": [1, 1]})
    ev = build_events(read_dataset(df, model=model), model)
    with pytest.raises(OptionError, match="steady-state"):
        make_predict_fn(model, ev, method="rodas")


def test_rodas_diff_params_restricts_the_jacobian_to_listed_columns(setup):
    model, ev = setup
    mask = jnp.asarray(ev.obs_mask)
    f_all = make_predict_fn(model, ev, method="rodas", rtol=1e-8)
    f_sub = make_predict_fn(model, ev, method="rodas", rtol=1e-8, diff_params=("CL", "KA"))

    def loss(f, x):
        pred, _ = f({"CL": x[0], "KA": x[1], "V1": x[2]})
        return jnp.sum(jnp.where(mask, jnp.log1p(pred), 0.0))

    x = jnp.array([[7.2, 6.5], [0.25, 0.3], [3.0, 3.3]])
    g_all = np.asarray(jax.grad(lambda x: loss(f_all, x))(x))
    g_sub = np.asarray(jax.grad(lambda x: loss(f_sub, x))(x))
    np.testing.assert_allclose(g_sub[:2], g_all[:2], rtol=1e-10)
    assert np.all(g_sub[2] == 0.0) and np.all(g_all[2] != 0.0)
    with pytest.raises(OptionError, match="NOPE"):
        make_predict_fn(model, ev, method="rodas", diff_params=("CL", "NOPE"))



def test_predict_functions_name_their_solver_path_for_the_chain_method(setup):
    """NUTS runs chains in parallel on the Rodas4 path and closed forms; only diffrax's loops
    (which fail under pmap in this stack) force sequential chains on CPU."""
    from types import SimpleNamespace

    from test_inference_model import make_df

    from il2pkpd.inference.samplers import _uses_diffrax, choose_chain_method

    model, ev = setup
    paths = {m: make_predict_fn(model, ev, method=m) for m in ("rodas", "ode")}
    assert paths["rodas"].solver_path == "rodas" and paths["ode"].solver_path == "diffrax"
    two = load_model("two_cmt_iv")
    closed = make_predict_fn(two, build_events(read_dataset(make_df(n=2), model=two), two))
    assert closed.solver_path == "closed_form"
    assert not _uses_diffrax(SimpleNamespace(predict_fn=paths["rodas"]), is_ode=True)
    assert _uses_diffrax(SimpleNamespace(predict_fn=paths["ode"]), is_ode=True)
    assert _uses_diffrax(SimpleNamespace(predict_fn=lambda p: p), is_ode=True)  # unknown
    assert not _uses_diffrax(SimpleNamespace(predict_fn=closed), is_ode=False)
    assert choose_chain_method(4, None, True) == "sequential"      # CPU, diffrax
