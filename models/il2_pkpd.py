"""Canonical IL-2 PK/PD model (DOMAIN.md section 5) as a user ODE model.

Time in h, amounts in IU, volumes in L, concentration in IU/mL, cell counts in cells/uL.
The equations are written once here; ``il2pkpd.solve`` has a hand-structured fast path for the
same equations (``il2pkpd.solve.il2``) that is tested against this file.
"""

import jax.numpy as jnp


def concentration(central, p):
    """IL-2 serum concentration (IU/mL) from the central amount (IU) and V1 (L)."""
    return central / p["V1"] / 1000.0


def rhs(t, y, p):
    """Right-hand side: dict state -> d state/dt (per h)."""
    c = concentration(y["central"], p)
    sink = p["VMAX"] * (y["treg"] / p["TREG0"]) * c / (p["KM"] + c)
    k10 = p["CL"] / p["V1"]
    k12 = p["Q"] / p["V1"]
    k21 = p["Q"] / p["V2"]
    c_pos = jnp.where(c > 0.0, c, 1.0)  # c**HILL safe at c <= 0 (value and gradients)
    ch = jnp.where(c > 0.0, c_pos ** p["HILL"], 0.0)
    s_t = p["EMAX_T"] * ch / (p["EC50_T"] ** p["HILL"] + ch)
    ktr_t = 3.0 / p["MTT_T"]
    s_n = p["EMAX_N"] * c / (p["EC50_N"] + c)
    ktr_n = 3.0 / p["MTT_N"]
    return {
        "depot": -p["KA"] * y["depot"],
        "central": p["KA"] * y["depot"] - (k10 + k12) * y["central"]
        + k21 * y["peripheral"] - sink,
        "peripheral": k12 * y["central"] - k21 * y["peripheral"],
        "tr1": ktr_t * (s_t - y["tr1"]),
        "tr2": ktr_t * (y["tr1"] - y["tr2"]),
        "tr3": ktr_t * (y["tr2"] - y["tr3"]),
        "treg": p["KOUT_T"] * p["TREG0"] * (1.0 + y["tr3"]) - p["KOUT_T"] * y["treg"],
        "nk1": ktr_n * (s_n - y["nk1"]),
        "nk2": ktr_n * (y["nk1"] - y["nk2"]),
        "nk3": ktr_n * (y["nk2"] - y["nk3"]),
        "nk": p["KOUT_N"] * p["NK0"] * (1.0 + y["nk3"]) - p["KOUT_N"] * y["nk"],
    }


def outputs(y, p):
    """Observed outputs: IL2 (IU/mL), TREG and NK blood counts (cells/uL)."""
    c = concentration(y["central"], p)
    blood = 1.0 - p["IMAX"] * c / (p["IC50"] + c)
    return {"IL2": c, "TREG": y["treg"] * blood, "NK": y["nk"] * blood}


def initial(p):
    """Baseline: no drug, cells at their baseline counts."""
    return {"treg": jnp.asarray(p["TREG0"], dtype=float),
            "nk": jnp.asarray(p["NK0"], dtype=float)}
