"""IL-2 fast path: the canonical model with a structured Rosenbrock linear solve.

The Jacobian of ``models/il2_pkpd`` (DOMAIN.md section 5) is sparse with one loop: the depot
feeds the central compartment, the 2x2 central/peripheral block drives the Treg transit chain
(lower bidiagonal) whose end (treg) feeds back on the central compartment through the sink;
the NK chain is driven by the concentration and feeds nothing back. So
``(lam*I - J) u = b`` is solved exactly by eliminating the peripheral and Treg-chain unknowns
as affine functions of ``u_central``, solving one scalar equation, and substituting forward
into the NK chain: about 40 flops instead of an 11x11 Jacobian and LU.

The right-hand side and outputs are the model file's own functions (``models/il2_pkpd.py``),
so this path differs from the generic one only in how the linear systems are solved; tests
check the structured solve against a dense solve with the ``jax.jacfwd`` Jacobian.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from il2pkpd._paths import MODELS_DIR
from il2pkpd.solve.system import OdeSystem, from_model_file

__all__ = ["IL2StructuredSolver", "il2_system", "IL2_ATOL"]

STATES = ("depot", "central", "peripheral", "tr1", "tr2", "tr3", "treg",
          "nk1", "nk2", "nk3", "nk")
# absolute tolerances per state (IU for the amounts, 1 for the signals, cells/uL for counts)
IL2_ATOL = (1e-3, 1e-3, 1e-3, 1e-9, 1e-9, 1e-9, 1e-7, 1e-9, 1e-9, 1e-9, 1e-7)


class IL2StructuredSolver:
    """Exact structured solve of ``(lam*I - J) u = b`` for the canonical IL-2 model."""

    def prepare(self, system, y, p, lam):
        """Jacobian entries and reciprocals for this state (tuple) and ``lam = 1/(h*gamma)``."""
        g = p
        s = 1.0 / (1000.0 * g["V1"])
        c = y[1] * s
        km_c = g["KM"] + c
        sat = c / km_c
        dsat = g["KM"] / (km_c * km_c)
        k12 = g["Q"] / g["V1"]
        k21 = g["Q"] / g["V2"]
        kel = g["CL"] / g["V1"] + k12
        # d sink / d central and d sink / d treg
        sig = g["VMAX"] * (y[6] / g["TREG0"]) * dsat * s
        beta = g["VMAX"] / g["TREG0"] * sat
        # stimulation slopes d S / d central
        hill = g["HILL"]
        c_pos = jnp.where(c > 0.0, c, 1.0)
        ch = jnp.where(c > 0.0, c_pos ** hill, 0.0)
        e = g["EC50_T"] ** hill
        ds_t_c = jnp.where(c > 0.0, g["EMAX_T"] * e * hill * ch / (c_pos * (e + ch) ** 2),
                           jnp.where(hill == 1.0, g["EMAX_T"] / g["EC50_T"], 0.0))
        ds_n_c = g["EMAX_N"] * g["EC50_N"] / (g["EC50_N"] + c) ** 2
        ktt = 3.0 / g["MTT_T"]
        ktn = 3.0 / g["MTT_N"]
        r_a = 1.0 / (lam + g["KA"])
        r_p = 1.0 / (lam + k21)
        r_tt = 1.0 / (lam + ktt)
        r_t = 1.0 / (lam + g["KOUT_T"])
        r_tn = 1.0 / (lam + ktn)
        r_n = 1.0 / (lam + g["KOUT_N"])
        # Treg chain as affine functions of u_central: u = alpha + gam * u_c
        q = ktt * r_tt
        g1 = ktt * ds_t_c * s * r_tt
        g4 = g["KOUT_T"] * g["TREG0"] * r_t * q * q * g1
        diag_c = lam + kel + sig - k21 * k12 * r_p + beta * g4
        return dict(ka=g["KA"], r_a=r_a, r_p=r_p, k12=k12, k21=k21, beta=beta, q=q,
                    r_tt=r_tt, r_t=r_t, ktreg=g["KOUT_T"] * g["TREG0"], g1=g1,
                    inv_c=1.0 / diag_c, r_tn=r_tn, r_n=r_n, qn=ktn * r_tn,
                    gn=ktn * ds_n_c * s * r_tn, knk=g["KOUT_N"] * g["NK0"])

    def solve(self, f, b):
        """Solve with the coefficients from :meth:`prepare`."""
        u_a = b[0] * f["r_a"]
        a1 = b[3] * f["r_tt"]
        a2 = b[4] * f["r_tt"] + f["q"] * a1
        a3 = b[5] * f["r_tt"] + f["q"] * a2
        a4 = (b[6] + f["ktreg"] * a3) * f["r_t"]
        u_c = (b[1] + f["ka"] * u_a + f["k21"] * f["r_p"] * b[2] - f["beta"] * a4) * f["inv_c"]
        u_p = (b[2] + f["k12"] * u_c) * f["r_p"]
        t1 = a1 + f["g1"] * u_c
        t2 = b[4] * f["r_tt"] + f["q"] * t1
        t3 = b[5] * f["r_tt"] + f["q"] * t2
        tr = (b[6] + f["ktreg"] * t3) * f["r_t"]
        n1 = b[7] * f["r_tn"] + f["gn"] * u_c
        n2 = b[8] * f["r_tn"] + f["qn"] * n1
        n3 = b[9] * f["r_tn"] + f["qn"] * n2
        nk = (b[10] + f["knk"] * n3) * f["r_n"]
        return (u_a, u_c, u_p, t1, t2, t3, tr, n1, n2, n3, nk)


def il2_system(path=None, *, structured=True) -> OdeSystem:
    """The canonical IL-2 model as an :class:`OdeSystem` for :func:`solve_population`.

    Parameters
    ----------
    path : str or Path, optional
        Model TOML (default: the bundled ``il2_pkpd.toml``).
    structured : bool
        Use the structured linear solve (fast path); ``False`` gives the generic dense-LU path.

    Returns
    -------
    OdeSystem
    """
    path = MODELS_DIR / "il2_pkpd.toml" if path is None else path
    base = from_model_file(path, atol=IL2_ATOL)
    if tuple(base.state_names) != STATES:
        raise ValueError(f"il2_system expects states {STATES}, got {base.state_names}")
    if not structured:
        return base
    return dataclasses.replace(base, linear_solver=IL2StructuredSolver())
