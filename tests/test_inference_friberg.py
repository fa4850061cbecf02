"""The Friberg benchmark model file (models/friberg.*) against the data's noise-free values."""

import jax
import numpy as np
import pandas as pd

from il2pkpd.inference import prepare

NAMES = ["CL", "V1", "Q", "V2", "KA", "MTT", "CIRC0", "GAMMA", "ALPHA"]


def test_friberg_model_reproduces_noise_free_values(shared_benchmarks):
    """At each subject's true parameters the model gives the file's CP column (the simulator's
    noise-free concentration and neutrophil count) to 1e-4."""
    data = shared_benchmarks / "friberg_multiple_dose.csv"
    pm, model, *_ = prepare("friberg", data, solver_options={"rtol": 1e-7, "atol": 1e-9})
    assert pm.spec.blocks == (tuple(NAMES),)
    assert [r.model for r in pm.spec.residuals] == ["lognormal", "lognormal"]
    assert len(pm.obs.dv) == 816
    truth = pd.read_csv(shared_benchmarks / "friberg_true_params.csv").rename(
        columns={"VC": "V1", "VP": "V2"}).set_index("ID").loc[pm.ids]
    pred, ok = jax.jit(pm.predict_fn)({k: truth[k].to_numpy() for k in NAMES})
    assert np.all(ok)
    ref = pd.read_csv(data, na_values=["."])["CP"].to_numpy()[pm.obs.row]
    got = np.asarray(pred)[pm.obs.subject, pm.obs.column]
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    # both outputs are present: drug concentrations and neutrophils
    assert set(np.unique(pm.obs.output)) == {0, 1}
