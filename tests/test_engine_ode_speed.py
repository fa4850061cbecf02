"""ODE path options that trade cost for accuracy: per-state absolute tolerances and the number
of reverse-pass checkpoints, against closed forms and the Friberg data's noise-free values."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from il2pkpd.engine import build_events, make_predict_fn, predict
from il2pkpd.errors import OptionError
from il2pkpd.models import load_model

NAMES = ["CL", "V1", "Q", "V2", "KA"]
#: depot, central, peripheral (mg): loose where the amounts are thousands of mg
PER_STATE = [1e-3, 1e-3, 1e-3]


def _oral_data():
    rows = [{"ID": i, "TIME": 0.0, "EVID": 1, "AMT": 1000.0 * i, "II": 24.0, "ADDL": 3,
             "CMT": 1} for i in (1, 2)]
    rows += [{"ID": i, "TIME": t, "EVID": 0, "AMT": 0.0, "CMT": 2} for i in (1, 2)
             for t in (0.5, 1.0, 2.0, 6.0, 12.0, 30.0, 49.0, 80.0, 120.0)]
    return pd.DataFrame(rows).sort_values(["ID", "TIME"], kind="stable")


def test_per_state_atol_matches_closed_form():
    """One absolute tolerance per state gives the closed form within what the tolerances allow
    (1e-3 mg on amounts above 100 mg: about 1e-5 relative); equal values per state act as the
    scalar, and a tight value on one state tightens the solution."""
    m = load_model("two_cmt_oral")
    df = _oral_data()
    params = {"CL": 4.0, "V1": 60.0, "Q": 3.0, "V2": 40.0, "KA": 1.2}
    closed = predict(m, params, df)["PRED"].to_numpy()
    ode = predict(m, params, df, method="ode", rtol=1e-7, atol=PER_STATE)["PRED"].to_numpy()
    scalar = predict(m, params, df, method="ode", rtol=1e-7, atol=1e-3)["PRED"].to_numpy()
    tight = predict(m, params, df, method="ode", rtol=1e-7,
                    atol=[1e-3, 1e-9, 1e-9])["PRED"].to_numpy()
    assert np.all(closed > 0)
    np.testing.assert_allclose(ode, closed, rtol=2e-5)
    np.testing.assert_array_equal(ode, scalar)
    err_loose = np.max(np.abs(ode / closed - 1))
    err_tight = np.max(np.abs(tight / closed - 1))
    assert err_tight < 1e-6 < err_loose


@pytest.mark.parametrize("atol", [[1e-6, 1e-6], [1e-6, -1.0, 1e-6], [[1e-6] * 3]])
def test_bad_atol_is_an_option_error(atol):
    m = load_model("two_cmt_oral")
    with pytest.raises(OptionError, match="atol"):
        make_predict_fn(m, build_events(_oral_data(), m), method="ode", atol=atol)


@pytest.mark.parametrize("checkpoints", [None, 4, 200])
def test_reverse_gradient_with_checkpoints_matches_closed_form(checkpoints):
    """Whatever the number of checkpoints, the reverse-mode gradient is the closed form's."""
    m = load_model("two_cmt_oral")
    ev = build_events(_oral_data(), m)
    x = jnp.asarray([[4.0, 60.0, 3.0, 40.0, 1.2], [3.0, 50.0, 5.0, 30.0, 0.7]])

    def grad_of(f):
        return jax.jit(jax.grad(lambda x: jnp.sum(jnp.log(
            f({n: x[:, i] for i, n in enumerate(NAMES)})[0] + 1.0))))(x)

    g_closed = grad_of(make_predict_fn(m, ev))
    g_ode = grad_of(make_predict_fn(m, ev, method="ode", rtol=1e-9, atol=1e-9,
                                    checkpoints=checkpoints))
    np.testing.assert_allclose(g_ode, g_closed, rtol=1e-6, atol=1e-10)


def test_friberg_benchmark_tolerances_reproduce_noise_free_values(shared_benchmarks):
    """The Friberg benchmark's loose settings (relative 1e-5, absolute 1e-3 mg on the drug
    amounts and 1e-6/nL on the cells) stay within 3e-5 of the simulator's noise-free values
    (the file's CP column, given to 6 digits)."""
    from il2pkpd.inference import prepare

    data = shared_benchmarks / "friberg_multiple_dose.csv"
    opts = {"rtol": 1e-5, "atol": [1e-3] * 3 + [1e-6] * 5}
    pm, *_ = prepare("friberg", data, solver_options=opts)
    truth = pd.read_csv(shared_benchmarks / "friberg_true_params.csv").rename(
        columns={"VC": "V1", "VP": "V2"}).set_index("ID").loc[pm.ids]
    pars = ["CL", "V1", "Q", "V2", "KA", "MTT", "CIRC0", "GAMMA", "ALPHA"]
    pred, ok = jax.jit(pm.predict_fn)({k: truth[k].to_numpy() for k in pars})
    assert np.all(ok)
    ref = pd.read_csv(data, na_values=["."])["CP"].to_numpy()[pm.obs.row]
    got = np.asarray(pred)[pm.obs.subject, pm.obs.column]
    np.testing.assert_allclose(got, ref, rtol=3e-5)
