"""Friberg-Karlsson myelosuppression driven by two-compartment oral PK.

Units: time h, amounts mg, volumes L, CL and Q L/h, KA 1/h, MTT h, CIRC0 and cell states 1/nL
(10^9 cells/L), ALPHA L/mg, GAMMA dimensionless. Used by ``models/friberg.toml``; the engine
adds doses and infusion inputs itself. The cell states start at CIRC0 (steady state without drug).
"""

import jax.numpy as jnp


def rhs(t, y, p):
    """Derivatives of the PK amounts (mg/h) and the cell pools (10^9/L per h)."""
    conc = y["central"] / p["V1"]
    k10 = p["CL"] / p["V1"]
    k12 = p["Q"] / p["V1"]
    k21 = p["Q"] / p["V2"]
    ktr = 4.0 / p["MTT"]
    edrug = jnp.minimum(p["ALPHA"] * conc, 1.0)
    # (CIRC0 / circ)^GAMMA, kept finite if circ reaches 0
    feedback = jnp.exp(p["GAMMA"] * (jnp.log(p["CIRC0"]) - jnp.log(jnp.maximum(y["circ"],
                                                                                1e-12))))
    absorption = p["KA"] * y["depot"]
    return {
        "depot": -absorption,
        "central": absorption - (k10 + k12) * y["central"] + k21 * y["peripheral"],
        "peripheral": k12 * y["central"] - k21 * y["peripheral"],
        "prol": ktr * y["prol"] * ((1.0 - edrug) * feedback - 1.0),
        "transit1": ktr * (y["prol"] - y["transit1"]),
        "transit2": ktr * (y["transit1"] - y["transit2"]),
        "transit3": ktr * (y["transit2"] - y["transit3"]),
        "circ": ktr * (y["transit3"] - y["circ"]),
    }


def outputs(y, p):
    """Central concentration (mg/L) and circulating neutrophils (10^9/L)."""
    return {"CP": y["central"] / p["V1"], "NEUT": y["circ"] + jnp.zeros(())}


def initial(p):
    """Cell pools at their baseline CIRC0; PK compartments empty."""
    c0 = p["CIRC0"]
    return {"prol": c0, "transit1": c0, "transit2": c0, "transit3": c0, "circ": c0}
