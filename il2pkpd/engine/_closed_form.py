"""Closed-form linear mammillary models (NONMEM ADVAN 1-4, 11, 12) by superposition.

The central concentration after a unit amount put into the central compartment at time 0 is
a sum of exponentials ``h(t) = sum_j c_j exp(-lambda_j t)``; a depot adds the absorption mode
``KA``. Every dose kind then has an exact expression in terms of ``(w_m, mu_m)``:

- bolus: ``F*AMT * sum_m w_m exp(-mu_m s)`` for ``s >= 0``, where ``s = t - TIME - TLAG``;
- infusion at rate ``R`` for duration ``D``:
  ``R * sum_m w_m / mu_m * (exp(-mu_m max(s - D, 0)) - exp(-mu_m max(s, 0)))``;
- steady state (SS=1/2) with interval ``II``: the geometric series over past doses
  ``s + k*II``, ``k >= 0``, summed exactly (any lag, any infusion duration, including
  ``D > II``);
- constant infusion at steady state: ``R * sum_m w_m / mu_m``.

All branches are finite for every input (padding included) so gradients stay finite.
"""

from __future__ import annotations

import jax.numpy as jnp

from il2pkpd.engine._events import DoseKind
from il2pkpd.models import Model

__all__ = ["disposition", "input_modes", "closed_form_predict"]


def disposition(structure: str, p: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Eigenvalues and central-concentration coefficients of a unit central bolus.

    Parameters
    ----------
    structure : str
        ``one_cmt``, ``two_cmt`` or ``three_cmt``.
    p : dict of arrays (S,)
        ``CL, V`` / ``CL, V1, Q, V2`` / ``CL, V1, Q2, V2, Q3, V3`` (L/h, L).

    Returns
    -------
    lam : (S, n) array, 1/time
        Disposition rate constants (positive).
    coef : (S, n) array, 1/volume
        ``h(t) = sum_j coef_j exp(-lam_j t)`` is the central concentration per unit amount.
    """
    if structure == "one_cmt":
        k = p["CL"] / p["V"]
        return k[..., None], (1.0 / p["V"])[..., None]
    if structure == "two_cmt":
        v1 = p["V1"]
        k10, k12, k21 = p["CL"] / v1, p["Q"] / v1, p["Q"] / p["V2"]
        a = k10 + k12 + k21
        disc = jnp.sqrt((k10 + k12 - k21) ** 2 + 4.0 * k12 * k21)
        alpha = 0.5 * (a + disc)
        beta = k10 * k21 / alpha  # = (a - disc)/2 without cancellation
        c_alpha = (alpha - k21) / (alpha - beta) / v1
        c_beta = (k21 - beta) / (alpha - beta) / v1
        return jnp.stack([alpha, beta], -1), jnp.stack([c_alpha, c_beta], -1)
    if structure == "three_cmt":
        v1 = p["V1"]
        k10, k12, k13 = p["CL"] / v1, p["Q2"] / v1, p["Q3"] / v1
        k21, k31 = p["Q2"] / p["V2"], p["Q3"] / p["V3"]
        a2 = k10 + k12 + k13 + k21 + k31
        a1 = k10 * k21 + k13 * k21 + k10 * k31 + k12 * k31 + k21 * k31
        a0 = k10 * k21 * k31
        pp = a1 - a2 ** 2 / 3.0
        qq = -2.0 * a2 ** 3 / 27.0 + a1 * a2 / 3.0 - a0
        pneg = jnp.maximum(-pp, 1e-300)
        arg = jnp.clip(1.5 * qq / (-pneg) * jnp.sqrt(3.0 / pneg), -1.0 + 1e-15, 1.0 - 1e-15)
        phi = jnp.arccos(arg) / 3.0
        r = 2.0 * jnp.sqrt(pneg / 3.0)
        roots = [r * jnp.cos(phi - 2.0 * jnp.pi * k / 3.0) + a2 / 3.0 for k in range(3)]
        coefs = []
        for j in range(3):
            lj = roots[j]
            den = (roots[(j + 1) % 3] - lj) * (roots[(j + 2) % 3] - lj)
            coefs.append((k21 - lj) * (k31 - lj) / den / v1)
        return jnp.stack(roots, -1), jnp.stack(coefs, -1)
    raise ValueError(f"unknown closed-form structure {structure!r}")


def input_modes(model: Model, p: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Modes and per-dosing-compartment weights of the central concentration response.

    Returns
    -------
    mu : (S, M) array, 1/time
    w : (S, n_slots, M) array, 1/volume
        Response to a unit amount into dosing compartment ``model.dosing_cmts[i]``:
        ``sum_m w[:, i, m] exp(-mu[:, m] t)``.
    """
    lam, coef = disposition(model.structure, p)
    if not model.depot:
        mu = lam
        w_central = coef
        w_depot = None
    else:
        ka = p["KA"]
        # move KA off an eigenvalue it coincides with (relative shift 1e-7): the limit
        # t*exp(-k t) is then reproduced to about 1e-7 relative
        for j in range(lam.shape[-1]):
            lj = lam[..., j]
            tiny = 1e-7 * (ka + lj)
            ka = jnp.where(jnp.abs(ka - lj) < tiny, lj + tiny, ka)
        wd = coef * (ka[..., None] / (ka[..., None] - lam))
        mu = jnp.concatenate([lam, ka[..., None]], -1)
        w_depot = jnp.concatenate([wd, -jnp.sum(wd, -1, keepdims=True)], -1)
        w_central = jnp.concatenate([coef, jnp.zeros_like(coef[..., :1])], -1)
    rows = []
    for n in model.dosing_cmts:
        rows.append(w_depot if model.compartments[n] == "depot" else w_central)
    return mu, jnp.stack(rows, -2)


def closed_form_predict(model: Model, ev, p: dict, dose: dict, kinds: frozenset) -> jnp.ndarray:
    """Central concentration at every observation, shape (S, O).

    Parameters
    ----------
    model : Model
    ev : EventArrays (as jnp arrays)
    p : dict of (S,) arrays
        Model parameters.
    dose : dict of (S, D) arrays
        Per-dose ``lag``, ``amt`` (F*AMT), ``rate``, ``dur`` from :func:`dose_quantities`.
    kinds : frozenset of (kind, ss)
        The (DoseKind, SS) pairs present (static: absent branches are not computed).

    Notes
    -----
    The work is on (S, O, D) arrays, one per mode (a Python loop over the at most four modes):
    the mode axis stays out of the arrays' minor dimension, and a plain infusion costs one
    exponential per (observation, dose, mode), ``exp(-mu (s - D))`` after the infusion (times
    the per-dose ``1 - exp(-mu D)``) or ``exp(-mu s)`` during it.
    """
    mu, w_slot = input_modes(model, p)                          # (S,M), (S,K,M)
    n_modes = mu.shape[-1]
    if w_slot.shape[1] == 1:                                    # one dosing compartment
        w = jnp.broadcast_to(w_slot, (w_slot.shape[0], ev.dose_slot.shape[1], n_modes))
    else:
        w = jnp.take_along_axis(w_slot, ev.dose_slot[..., None].astype(jnp.int32), axis=1)
    s = ev.obs_time[:, :, None] - ev.dose_time[:, None, :] - dose["lag"][:, None, :]  # (S,O,D)
    ii = ev.dose_ii[:, None, :]
    kind = ev.dose_kind[:, None, :]
    ss = ev.dose_ss[:, None, :]
    amt = dose["amt"][:, None, :]
    rate = dose["rate"][:, None, :]
    dur = dose["dur"][:, None, :]
    is_inf_kind = ((kind == DoseKind.INFUSION) | (kind == DoseKind.RATE_PARAM)
                   | (kind == DoseKind.DURATION_PARAM))
    kset = {(k, (1 if s_ > 0 else 0)) for k, s_ in kinds}
    inf_kinds = {int(DoseKind.INFUSION), int(DoseKind.RATE_PARAM), int(DoseKind.DURATION_PARAM)}
    has_bolus = (int(DoseKind.BOLUS), 0) in kset
    has_inf = any((k, 0) in kset for k in inf_kinds)
    has_ss_bolus = (int(DoseKind.BOLUS), 1) in kset
    has_ss_inf = any((k, 1) in kset for k in inf_kinds)
    has_const = any(k == int(DoseKind.CONSTANT_INFUSION) for k, _ in kset)
    pos = s >= 0
    if has_bolus:
        s_safe = jnp.where(pos, s, 0.0)
        bolus_on = (kind == DoseKind.BOLUS) & (ss == 0) & pos
    if has_inf:
        after = s >= dur
        # the time the exponential decays over: since the end of the infusion, or since
        # its start while it runs (0 before it)
        a_inf = jnp.where(after, s - dur, jnp.maximum(s, 0.0))
        inf_on = is_inf_kind & (ss == 0)
    if has_ss_bolus or has_ss_inf:
        k0 = jnp.maximum(0.0, jnp.ceil(-s / ii))                # first past dose with s>=0
        sk0 = s + k0 * ii
    if has_ss_inf:
        k1 = jnp.maximum(k0, jnp.ceil((dur - s) / ii))          # first completed infusion
        n_p = k1 - k0                                           # infusions still running
        sk1 = s + k1 * ii
    total = jnp.zeros(s.shape, dtype=s.dtype)
    for m in range(n_modes):
        mu_m = mu[:, m][:, None, None]                          # (S,1,1)
        w_m = w[:, :, m][:, None, :]                            # (S,1,D)
        if has_bolus:
            val = amt * w_m * jnp.exp(-mu_m * s_safe)
            total = total + jnp.where(bolus_on, val, 0.0)
        if has_inf:
            e = jnp.exp(-mu_m * a_inf)
            frac_done = -jnp.expm1(-mu_m * dur)                 # (S,1,D): per dose
            val = rate * w_m / mu_m * jnp.where(after, e * frac_done, 1.0 - e)
            total = total + jnp.where(inf_on, val, 0.0)
        if has_ss_bolus or has_ss_inf:
            one_minus_q = -jnp.expm1(-mu_m * ii)                # (S,1,D)
        if has_ss_bolus:
            val = amt * w_m * jnp.exp(-mu_m * sk0) / one_minus_q
            total = total + jnp.where((kind == DoseKind.BOLUS) & (ss > 0), val, 0.0)
        if has_ss_inf:
            running = n_p - jnp.exp(-mu_m * sk0) * (-jnp.expm1(-mu_m * ii * n_p)) / one_minus_q
            done = (jnp.exp(-mu_m * (sk1 - dur)) - jnp.exp(-mu_m * sk1)) / one_minus_q
            val = rate * w_m / mu_m * (running + done)
            total = total + jnp.where(is_inf_kind & (ss > 0), val, 0.0)
        if has_const:
            val = rate * w_m / mu_m * jnp.ones_like(s)
            total = total + jnp.where(kind == DoseKind.CONSTANT_INFUSION, val, 0.0)
    return jnp.sum(jnp.where(ev.contrib, total, 0.0), -1)
