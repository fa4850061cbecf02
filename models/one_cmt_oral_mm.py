"""One-compartment model, first-order absorption, Michaelis-Menten elimination.

Units: time h, amounts mg, volume L, VMAX mg/h, KM mg/L, KA 1/h. Used by
``models/one_cmt_oral_mm.toml``; the engine adds infusion inputs and doses itself.
"""

import jax.numpy as jnp


def rhs(t, y, p):
    """Derivatives (mg/h) of the depot and central amounts (mg)."""
    conc = y["central"] / p["V"]
    elimination = p["VMAX"] * conc / (p["KM"] + conc)
    absorption = p["KA"] * y["depot"]
    return {"depot": -absorption, "central": absorption - elimination}


def outputs(y, p):
    """Central concentration (mg/L)."""
    return {"CP": y["central"] / p["V"] + jnp.zeros(())}
