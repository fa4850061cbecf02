"""Batched Rodas4 solves of virtual populations with dose events.

Each patient is integrated with its own adaptive step size inside one ``lax.while_loop``
(vmapped over a chunk of patients). The step size is carried across dose events and output
times; the integration stops exactly at dose (and infusion start/stop) times, which are known
in advance, and the outputs come from the method's continuous extension (at most
``outputs_per_step`` output times fall inside one step). Outputs at a time equal to a dose time
are the values just before the dose.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from il2pkpd.errors import ParameterError
from il2pkpd.solve._rodas import GAMMA, ORDER, dense, rodas4_step
from il2pkpd.solve.system import OdeSystem

__all__ = ["Doses", "PopulationSolution", "solve_population", "solve_patient", "STATUS"]

STATUS = {0: "ok", 1: "max_steps reached", 2: "step size underflow", 3: "non-finite state"}


@dataclass(frozen=True)
class Doses:
    """A dosing schedule, shared by all patients (1-D arrays) or per patient (2-D, n x n_doses).

    Parameters
    ----------
    time : array
        Dose times (model time unit), before the lag time ``TLAG<cmt>`` is added. Padding
        entries: ``inf``.
    amount : array
        Amounts (model amount unit) before bioavailability ``F<cmt>`` is applied.
    cmt : array of int
        NONMEM compartment numbers (model ``[compartments]``).
    duration : array, optional
        Infusion durations (time unit); 0 for a bolus. The infusion rate is
        ``F * amount / duration`` (the NONMEM ``RATE = -2`` convention).
    """

    time: np.ndarray
    amount: np.ndarray
    cmt: np.ndarray
    duration: np.ndarray | None = None


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class PopulationSolution:
    """Outputs of a batched solve.

    Attributes
    ----------
    outputs : Array (n, n_outputs, n_times)
        Model outputs at the output times.
    status : Array (n,) int
        0 ok, 1 max_steps reached, 2 step size underflow, 3 non-finite state (see ``STATUS``).
    n_steps, n_rejected : Array (n,) int
        Accepted steps (plus event iterations) and rejected steps per patient.
    """

    outputs: jax.Array
    status: jax.Array
    n_steps: jax.Array
    n_rejected: jax.Array


def _events(system: OdeSystem, p, time, amount, state, duration, has_infusion):
    """Per-patient event arrays (sorted): times, state jumps and infusion-rate changes."""
    n_s = system.n_states
    lag = jnp.zeros(n_s, p.dtype)
    bio = jnp.ones(n_s, p.dtype)
    for cmt, idx in system.compartments.items():
        i_f = system.param_index(f"F{cmt}")
        i_l = system.param_index(f"TLAG{cmt}")
        if i_f is not None:
            bio = bio.at[idx].set(p[i_f])
        if i_l is not None:
            lag = lag.at[idx].set(p[i_l])
    onehot = jax.nn.one_hot(state, n_s, dtype=p.dtype)           # (n_d, n_s)
    start = jnp.where(jnp.isfinite(time), time + lag[state], jnp.inf)
    amt = bio[state] * amount
    if has_infusion:
        is_inf = duration > 0
        safe_dur = jnp.where(is_inf, duration, 1.0)
        rate = jnp.where(is_inf, amt / safe_dur, 0.0)
        jump = jnp.where(is_inf, 0.0, amt)
        stop = jnp.where(is_inf, start + duration, jnp.inf)
        ev_t = jnp.concatenate([start, stop])
        ev_dy = jnp.concatenate([jump[:, None] * onehot, jnp.zeros_like(onehot)])
        ev_dr = jnp.concatenate([rate[:, None] * onehot, -rate[:, None] * onehot])
    else:
        ev_t = start
        ev_dy = amt[:, None] * onehot
        ev_dr = None
    order = jnp.argsort(ev_t)
    ev_t = jnp.concatenate([ev_t[order], jnp.full((1,), jnp.inf, p.dtype)])
    ev_dy = jnp.concatenate([ev_dy[order], jnp.zeros((1, n_s), p.dtype)])
    if ev_dr is not None:
        ev_dr = jnp.concatenate([ev_dr[order], jnp.zeros((1, n_s), p.dtype)])
    return ev_t, ev_dy, ev_dr


def solve_patient(system: OdeSystem, p, time, amount, state, duration, t_out, *, rtol, atol,
                  h0, max_steps, outputs_per_step, has_infusion, safety=0.9):
    """Solve one patient (vmap this). See :func:`solve_population` for the arguments."""
    dtype = p.dtype
    n_t = t_out.shape[0]
    n_o = len(system.output_names)
    ev_t, ev_dy, ev_dr = _events(system, p, time, amount, state, duration, has_infusion)
    y0 = system.initial(p)
    t0 = jnp.minimum(t_out[0], ev_t[0])
    t_end = t_out[-1]
    buf = jnp.zeros((n_t, n_o), dtype)
    first = t_out[0] <= t0
    buf = buf.at[0].set(jnp.where(first, system.outputs(y0, p), 0.0))
    iout0 = first.astype(jnp.int32)
    rate0 = jnp.zeros_like(y0)
    lin = system.linear_solver
    atol = jnp.asarray(atol, dtype)
    step_factor_max, step_factor_min = 6.0, 0.2

    def body(s):
        t, y, r, h, iev, iout, buf, nst, nrej, status = s
        t_ev = ev_t[iev]
        pending = t_ev <= t
        # apply one pending event (state jump and infusion-rate change)
        y_ev = y + ev_dy[iev]
        r_ev = r + ev_dr[iev] if ev_dr is not None else r
        # one step (wasted when an event was pending)
        j_cap = jnp.minimum(iout + outputs_per_step - 1, n_t - 1)
        t_target = jnp.minimum(jnp.minimum(t + h, t_ev), jnp.minimum(t_end, t_out[j_cap]))
        hs = t_target - t
        hs = jnp.where(pending | (hs <= 0), jnp.maximum(h, 1e-12), hs)
        if ev_dr is not None:
            def rhs(yy):
                return system.rhs(yy, p) + r
        else:
            def rhs(yy):
                return system.rhs(yy, p)
        f0 = rhs(y)
        factor = lin.prepare(system.rhs, y, p, 1.0 / (hs * GAMMA))
        y1, err_vec, k2, k3 = rodas4_step(rhs, lin.solve, factor, y, f0, hs)
        scale = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y1))
        err = jnp.sqrt(jnp.mean((err_vec / scale) ** 2))
        err = jax.lax.stop_gradient(err)
        finite = jnp.isfinite(err) & jnp.all(jnp.isfinite(y1))
        accept = (err <= 1.0) & finite & ~pending
        # outputs inside (t, t_target]
        n_written = jnp.zeros((), jnp.int32)
        for k in range(outputs_per_step):
            j = iout + k
            jc = jnp.minimum(j, n_t - 1)
            inside = accept & (j < n_t) & (t_out[jc] <= t_target)
            theta = (t_out[jc] - t) / hs
            yk = dense(y, y1, k2, k3, theta)
            val = system.outputs(yk, p)
            buf = buf.at[jnp.where(inside, jc, n_t)].set(val, mode="drop")
            n_written = n_written + inside.astype(jnp.int32)
        # step size for the next step (the controller's factor is not differentiated)
        fac = jnp.where(finite, safety * jnp.maximum(err, 1e-10) ** (-1.0 / ORDER), 0.2)
        fac = jnp.clip(fac, step_factor_min, step_factor_max)
        fac = jnp.where(accept, fac, jnp.minimum(fac, 1.0))
        h_new = hs * jax.lax.stop_gradient(fac)
        clipped = hs < h
        h_new = jnp.where(accept & clipped, jnp.maximum(h_new, h), h_new)
        h_new = jnp.where(pending, h, h_new)
        t_next = jnp.where(accept, t_target, t)
        y_next = jnp.where(pending, y_ev, jnp.where(accept, y1, y))
        r_next = jnp.where(pending, r_ev, r)
        status = jnp.where((status == 0) & ~pending & (h_new < 1e-12 * jnp.maximum(1.0,
                           jnp.abs(t))), 2, status)
        status = jnp.where((status == 0) & ~pending & ~finite & (h_new < 1e-10), 3, status)
        return (t_next, y_next, r_next, h_new, iev + pending.astype(jnp.int32),
                iout + n_written, buf, nst + (accept | pending).astype(jnp.int32),
                nrej + (~accept & ~pending).astype(jnp.int32), status)

    def cond(s):
        t, _, _, _, iev, _, _, nst, nrej, status = s
        return (t < t_end) & (nst + nrej < max_steps) & (status == 0)

    init = (t0, y0, rate0, jnp.asarray(h0, dtype), jnp.zeros((), jnp.int32), iout0, buf,
            jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    t, y, r, h, iev, iout, buf, nst, nrej, status = jax.lax.while_loop(cond, body, init)
    status = jnp.where((status == 0) & (t < t_end), 1, status)
    return buf.T, status, nst, nrej


@partial(jax.jit, static_argnames=("system", "rtol", "h0", "max_steps", "outputs_per_step",
                                   "has_infusion", "shared_doses"))
def _solve_chunk(system, params, time, amount, state, duration, t_out, atol, *, rtol, h0,
                 max_steps, outputs_per_step, has_infusion, shared_doses):
    f = partial(solve_patient, system, rtol=rtol, atol=atol, h0=h0, max_steps=max_steps,
                outputs_per_step=outputs_per_step, has_infusion=has_infusion)
    dose_axis = None if shared_doses else 0
    return jax.vmap(f, in_axes=(0, dose_axis, dose_axis, dose_axis, dose_axis, None))(
        params, time, amount, state, duration, t_out)


def param_matrix(system: OdeSystem, params, n=None):
    """Stack a dict of parameter values (scalars or (n,) arrays) into an (n, n_params) array.

    Missing parameters take the model defaults (``F<n>`` 1, ``TLAG<n>`` 0 when undeclared);
    unknown names raise :class:`~il2pkpd.errors.ParameterError`.
    """
    unknown = sorted(set(params) - set(system.param_names))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for model {system.name!r}; "
                             f"the model has {list(system.param_names)}")
    sizes = {np.size(v) for v in params.values() if np.ndim(v) > 0}
    if n is None:
        n = max(sizes) if sizes else 1
    if any(s != n for s in sizes):
        raise ParameterError(f"parameter arrays must all have length {n} (one value per "
                             f"patient); got lengths {sorted(sizes)}")
    cols = []
    for name in system.param_names:
        if name in params:
            v = params[name]
        elif name in system.defaults:
            v = system.defaults[name]
        elif name.startswith("F") and name[1:].isdigit():
            v = 1.0
        elif name.startswith("TLAG") and name[4:].isdigit():
            v = 0.0
        else:
            raise ParameterError(f"parameter {name!r} of model {system.name!r} has no value "
                                 "and no default; pass it in params")
        cols.append(jnp.broadcast_to(jnp.asarray(v, dtype=jnp.float64), (n,)))
    return jnp.stack(cols, axis=1)


def solve_population(system: OdeSystem, params, doses: Doses, t_out, *, rtol=1e-6, atol=None,
                     h0=1e-2, max_steps=20000, outputs_per_step=2, chunk_size=4096):
    """Solve a virtual population of an autonomous ODE model with dose events (Rodas4).

    Parameters
    ----------
    system : OdeSystem
        From :func:`il2pkpd.solve.from_model_file`, :func:`~il2pkpd.solve.from_functions` or
        :func:`il2pkpd.solve.il2.il2_system` (structured fast path).
    params : dict[str, float or Array (n,)]
        Parameter values (model units); missing ones take the model defaults.
    doses : Doses
        Dosing schedule (shared or per patient); ``F<cmt>`` and ``TLAG<cmt>`` are applied.
    t_out : array (n_times,)
        Strictly increasing output times (model time unit), shared by all patients.
    rtol : float
        Relative tolerance of the local error control.
    atol : float or array (n_states,), optional
        Absolute tolerance per state (state units); defaults to ``system.atol`` or 1e-10.
    h0 : float
        First trial step (time unit); the step size is then carried across events.
    max_steps : int
        Cap on loop iterations per patient (status 1 when reached).
    outputs_per_step : int
        At most this many output times inside one step.
    chunk_size : int
        Patients per vmapped batch.

    Returns
    -------
    PopulationSolution
        ``outputs`` (n, n_outputs, n_times), ``status``, ``n_steps``, ``n_rejected``.

    Examples
    --------
    >>> import numpy as np
    >>> from il2pkpd.solve import Doses, solve_population
    >>> from il2pkpd.solve.il2 import il2_system
    >>> sol = solve_population(il2_system(), {}, Doses(np.array([0.0]), np.array([1e6]),
    ...                        np.array([1])), np.linspace(0.0, 48.0, 5))
    >>> sol.outputs.shape
    (1, 3, 5)
    """
    pm = param_matrix(system, params)
    n = pm.shape[0]
    time = np.asarray(doses.time, dtype=float)
    amount = np.asarray(doses.amount, dtype=float)
    cmt = np.asarray(doses.cmt)
    duration = (np.zeros_like(time) if doses.duration is None
                else np.asarray(doses.duration, dtype=float))
    bad = sorted(set(np.unique(cmt).tolist()) - set(system.compartments))
    if bad:
        raise ParameterError(f"dose compartment(s) {bad} not in model {system.name!r} "
                             f"(compartments {sorted(system.compartments)})")
    state = np.vectorize(lambda c: system.compartments[int(c)])(cmt).astype(np.int32)
    shared = time.ndim == 1
    has_infusion = bool(np.any(duration > 0))
    t_out = jnp.asarray(np.asarray(t_out, dtype=float))
    if atol is None:
        atol = system.atol if system.atol is not None else 1e-10
    atol = jnp.broadcast_to(jnp.asarray(atol, dtype=jnp.float64), (system.n_states,))
    outs, stats, nsts, nrejs = [], [], [], []
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        m = sl.stop - sl.start
        pchunk = pm[sl]
        if m < chunk_size and n > chunk_size:   # pad the last chunk: one compiled shape
            pchunk = jnp.concatenate([pchunk, jnp.repeat(pchunk[-1:], chunk_size - m, 0)])
        if shared:
            dchunk = (time, amount, state, duration)
        else:
            dchunk = tuple(np.concatenate([a[sl], np.repeat(a[sl][-1:], pchunk.shape[0] - m, 0)])
                           for a in (time, amount, state, duration))
        o, s, ns, nr = _solve_chunk(system, pchunk, *dchunk, t_out, atol, rtol=float(rtol),
                                    h0=float(h0), max_steps=int(max_steps),
                                    outputs_per_step=int(outputs_per_step),
                                    has_infusion=has_infusion, shared_doses=shared)
        outs.append(o[:m])
        stats.append(s[:m])
        nsts.append(ns[:m])
        nrejs.append(nr[:m])
    return PopulationSolution(jnp.concatenate(outs), jnp.concatenate(stats),
                              jnp.concatenate(nsts), jnp.concatenate(nrejs))
