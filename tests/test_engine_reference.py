"""The engine against the committed table of event scenarios (tests/reference/).

The expected values come from tests/reference/make_event_scenarios.py, an independent
sequential simulator (matrix exponentials, steady state by 400 simulated intervals). Any
change of the engine that alters a NONMEM event semantic fails here.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from il2pkpd.engine import predict
from il2pkpd.models import load_model

REF = Path(__file__).resolve().parent / "reference"
SCENARIOS = json.loads((REF / "event_scenarios.json").read_text())
EXPECTED = pd.read_csv(REF / "event_scenarios.csv")
MODELS = sorted({s["model"] for s in SCENARIOS})
ODE_UNSUPPORTED: set[str] = set()


def _dataset(model_name, skip=()):
    m = load_model(model_name)
    frames, params, names = [], [], []
    for i, sc in enumerate(SCENARIOS):
        if sc["model"] != model_name or sc["name"] in skip:
            continue
        rows = [{"ID": i + 1, "AMT": 0.0, "RATE": 0.0, "II": 0.0, "ADDL": 0, "SS": 0, "CMT": 1,
                 **r} for r in sc["records"]]
        frames.append(pd.DataFrame(rows))
        defaults = {p.name: (p.default if p.default is not None else 1.0) for p in m.parameters}
        params.append({"ID": i + 1, **defaults, **sc["params"]})
        names.append(sc["name"])
    return m, pd.concat(frames, ignore_index=True), pd.DataFrame(params), names


def _expected(names):
    return pd.concat([EXPECTED[EXPECTED["scenario"] == n] for n in names], ignore_index=True)


def test_reference_table_covers_the_event_semantics():
    assert len(SCENARIOS) >= 20
    assert set(EXPECTED["scenario"]) == {s["name"] for s in SCENARIOS}


@pytest.mark.parametrize("model_name", MODELS)
def test_closed_form_reproduces_reference_scenarios(model_name):
    m, df, params, names = _dataset(model_name)
    got = predict(m, params, df)
    exp = _expected(names)
    np.testing.assert_array_equal(got["TIME"], exp["TIME"])
    np.testing.assert_allclose(got["PRED"], exp["expected"], rtol=1e-9, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", MODELS)
def test_ode_reproduces_reference_scenarios(model_name):
    _check_ode(model_name)


def test_ode_reproduces_reference_scenarios_one_model():
    """The fast subset of the slow test above (one model: resets, infusions, SS=1/2)."""
    _check_ode("two_cmt_iv")


def _check_ode(model_name):
    m, df, params, names = _dataset(model_name, skip=ODE_UNSUPPORTED)
    got = predict(m, params, df, method="ode", rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got["PRED"], _expected(names)["expected"], rtol=1e-6,
                               atol=1e-12)
