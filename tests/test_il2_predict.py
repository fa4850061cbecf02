"""``il2pkpd.predict`` (the engine) on the three IL-2 model files, against scipy references."""

import numpy as np
import pandas as pd
import pytest
from test_il2_model import DEFAULTS, rel_err, scipy_il2

from il2pkpd.engine import predict
from il2pkpd.models import load_model

SC = [(24.0 * k, 1e6, "sc", 0.0) for k in range(3)]
IV = [(0.0, 2e6, "iv", 0.25), (8.0, 1e6, "iv", 0.0)]
TIMES = np.array([1.0, 2.0, 6.0, 12.0, 30.0, 50.0, 72.0, 120.0, 200.0])


def dataset(doses, n_dvid, amount_scale=1.0):
    rows = []
    for t, amt, route, dur in doses:
        rows.append(dict(ID=1, TIME=t, AMT=amt * amount_scale, RATE=amt * amount_scale / dur
                         if dur else 0.0, EVID=1, CMT=1 if route == "sc" else 2, DVID=1))
    for t in TIMES:
        for d in range(1, n_dvid + 1):
            rows.append(dict(ID=1, TIME=t, AMT=0.0, RATE=0.0, EVID=0, CMT=2, DVID=d))
    return pd.DataFrame(rows).sort_values("TIME", kind="stable").reset_index(drop=True)


def defaults(name):
    return {p.name: p.default for p in load_model(name).parameters if p.default is not None}


@pytest.mark.parametrize("doses", [SC, IV], ids=["sc", "iv"])
@pytest.mark.parametrize("name,n_out", [("il2_pkpd", 3), ("il2_pk_treg", 2),
                                        ("il2_pk_2cmt", 1)])
def test_predict_il2_models(name, n_out, doses):
    scale = 1e-3 if name == "il2_pk_2cmt" else 1.0          # il2_pk_2cmt doses in kIU
    out = predict(name, defaults(name), dataset(doses, n_out, scale))
    pred = out["PRED"].to_numpy().reshape(len(TIMES), n_out).T
    p = dict(DEFAULTS)
    if name == "il2_pk_2cmt":
        p["VMAX"] = 0.0                                     # no cellular sink
    ref = scipy_il2(p, doses, TIMES)[:n_out]
    assert rel_err(pred, ref).max() < 1e-4
