"""IL-2 PK with the Treg sink and Treg expansion (DOMAIN.md section 5 without the NK arm).

Time in h, amounts in IU, volumes in L, concentration in IU/mL, Treg counts in cells/uL.
"""

import jax.numpy as jnp


def rhs(t, y, p):
    """Right-hand side: dict state -> d state/dt (per h)."""
    c = y["central"] / p["V1"] / 1000.0
    sink = p["VMAX"] * (y["treg"] / p["TREG0"]) * c / (p["KM"] + c)
    k12 = p["Q"] / p["V1"]
    k21 = p["Q"] / p["V2"]
    c_pos = jnp.where(c > 0.0, c, 1.0)  # c**HILL safe at c <= 0 (value and gradients)
    ch = jnp.where(c > 0.0, c_pos ** p["HILL"], 0.0)
    s_t = p["EMAX_T"] * ch / (p["EC50_T"] ** p["HILL"] + ch)
    ktr_t = 3.0 / p["MTT_T"]
    return {
        "depot": -p["KA"] * y["depot"],
        "central": p["KA"] * y["depot"] - (p["CL"] / p["V1"] + k12) * y["central"]
        + k21 * y["peripheral"] - sink,
        "peripheral": k12 * y["central"] - k21 * y["peripheral"],
        "tr1": ktr_t * (s_t - y["tr1"]),
        "tr2": ktr_t * (y["tr1"] - y["tr2"]),
        "tr3": ktr_t * (y["tr2"] - y["tr3"]),
        "treg": p["KOUT_T"] * p["TREG0"] * (1.0 + y["tr3"]) - p["KOUT_T"] * y["treg"],
    }


def outputs(y, p):
    """Observed outputs: IL2 (IU/mL) and blood Treg count (cells/uL)."""
    c = y["central"] / p["V1"] / 1000.0
    return {"IL2": c, "TREG": y["treg"] * (1.0 - p["IMAX"] * c / (p["IC50"] + c))}


def initial(p):
    """Baseline: no drug, Tregs at their baseline count."""
    return {"treg": jnp.asarray(p["TREG0"], dtype=float)}
