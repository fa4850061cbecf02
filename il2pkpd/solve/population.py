"""Batched Rodas4 solves of virtual populations with dose events.

Each patient is integrated with its own adaptive step size inside one ``lax.while_loop``
(vmapped over a chunk of patients). The step size is carried across dose events and output
times; the integration stops exactly at dose (and infusion start/stop) times, which are known
in advance, and the outputs come from the method's continuous extension (at most
``outputs_per_step`` output times fall inside one step). Outputs at a time equal to a dose time
are the values just before the dose.

Derivatives: :func:`make_population_fn` is forward-mode differentiable (``jax.jvp`` through
the loop: one pass per parameter direction); :func:`make_population_vjp_fn` is
reverse-differentiable by a discrete adjoint (the loop states are stored and the steps pulled
back in reverse order), about four solves per gradient whatever the number of parameters:
what fits use (``il2pkpd.engine``'s ``method="rodas"``).
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

__all__ = ["Doses", "PopulationSolution", "solve_population", "make_population_fn",
           "make_population_vjp_fn",
           "param_matrix", "solve_patient", "STATUS"]

DEFAULT_LANES = 1024   # patients advanced together in one batch loop (measured, see module doc)
REFILL_FRACTION = 0.125   # refill the lanes once this fraction of them is idle
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
    """Per-patient event list (sorted): times, target state, jump amount, rate change.

    ``F<cmt>`` scales the amount, ``TLAG<cmt>`` delays the dose; an infusion gives a start
    event (+rate) and a stop event (-rate). A final padding event at ``+inf`` is appended.
    """
    n_s = system.n_states
    time, amount, duration = (jnp.asarray(x, p.dtype) for x in (time, amount, duration))
    state = jnp.asarray(state, jnp.int32)
    lag = jnp.zeros(n_s, p.dtype)
    bio = jnp.ones(n_s, p.dtype)
    for cmt, idx in system.compartments.items():
        i_f = system.param_index(f"F{cmt}")
        i_l = system.param_index(f"TLAG{cmt}")
        if i_f is not None:
            bio = bio.at[idx].set(p[i_f])
        if i_l is not None:
            lag = lag.at[idx].set(p[i_l])
    start = jnp.where(jnp.isfinite(time), time + lag[state], jnp.inf)
    amt = bio[state] * amount
    if has_infusion:
        is_inf = duration > 0
        rate = jnp.where(is_inf, amt / jnp.where(is_inf, duration, 1.0), 0.0)
        ev_t = jnp.concatenate([start, jnp.where(is_inf, start + duration, jnp.inf)])
        ev_s = jnp.concatenate([state, state])
        ev_a = jnp.concatenate([jnp.where(is_inf, 0.0, amt), jnp.zeros_like(amt)])
        ev_r = jnp.concatenate([rate, -rate])
    else:
        ev_t, ev_s, ev_a, ev_r = start, state, amt, jnp.zeros_like(amt)
    order = jnp.argsort(ev_t)

    def pad(x, v):
        return jnp.concatenate([x[order], jnp.full((1,), v, x.dtype)])

    return pad(ev_t, jnp.inf), pad(ev_s, 0), pad(ev_a, 0.0), pad(ev_r, 0.0)


def _setup(system, p, time, amount, state, duration, t_out, *, has_infusion, dosed):
    """Per-patient constants, initial loop state and the first output row."""
    dtype = p.dtype
    pd_ = system.param_dict(p)
    ev = _events(system, p, time, amount, state, duration, has_infusion)
    y0 = system.initial_t(pd_)
    t0 = jnp.minimum(t_out[0], ev[0][0])
    first = t_out[0] <= t0
    out0 = jnp.where(first, jnp.stack(system.outputs_t(y0, pd_)), 0.0)
    rate0 = tuple(jnp.zeros((), dtype) for _ in dosed)
    return (pd_, ev), (t0, y0, rate0, first.astype(jnp.int32)), out0


def _step(system, consts, s, t_out, *, rtol, atol, max_steps, outputs_per_step, has_infusion,
          dosed, safety, h_event):
    """One loop iteration for one patient: a pending dose event or one Rodas4 step.

    Returns the next loop state and the output indices (``n_t`` when nothing is written) and
    values of the output times that fall inside the accepted step.
    """
    pd_, (ev_t, ev_s, ev_a, ev_r) = consts
    t, y, r, h, iev, iout, nst, nrej, status = s
    n_t = t_out.shape[0]
    n_s = system.n_states
    t_end = t_out[-1]
    lin = system.linear_solver
    step_factor_max, step_factor_min = 6.0, 0.2
    t_ev = ev_t[iev]
    pending = t_ev <= t
    # one pending event: state jump and infusion-rate change on the dosed states
    hit = tuple(pending & (ev_s[iev] == k) for k in dosed)
    y_ev = list(y)
    for k, hk in zip(dosed, hit, strict=True):
        y_ev[k] = y[k] + jnp.where(hk, ev_a[iev], 0.0)
    r_ev = tuple(rk + jnp.where(hk, ev_r[iev], 0.0) for rk, hk in zip(r, hit, strict=True))
    # one Rodas4 step (wasted when an event was pending)
    j_cap = jnp.minimum(iout + outputs_per_step - 1, n_t - 1)
    t_target = jnp.minimum(jnp.minimum(t + h, t_ev), jnp.minimum(t_end, t_out[j_cap]))
    hs = t_target - t
    hs = jnp.where(pending | (hs <= 0), jnp.maximum(h, 1e-12), hs)

    def rhs(yy):
        f = list(system.rhs_t(yy, pd_))
        if has_infusion:
            for k, rk in zip(dosed, r, strict=True):
                f[k] = f[k] + rk
        return tuple(f)

    factor = lin.prepare(system, y, pd_, 1.0 / (hs * GAMMA))
    y1, e, k2, k3 = rodas4_step(rhs, lin.solve, factor, y, rhs(y), hs)
    sq = sum(((ei / (ai + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b)))) ** 2)
             for ei, ai, a, b in zip(e, atol, y, y1, strict=True))
    err = jax.lax.stop_gradient(jnp.sqrt(sq / n_s))
    finite = jnp.isfinite(err)
    accept = (err <= 1.0) & finite & ~pending
    # outputs inside (t, t_target] from the continuous extension
    idx, vals = [], []
    n_written = jnp.zeros((), jnp.int32)
    for k in range(outputs_per_step):
        j = iout + k
        jc = jnp.minimum(j, n_t - 1)
        inside = accept & (j < n_t) & (t_out[jc] <= t_target)
        yk = dense(y, y1, k2, k3, (t_out[jc] - t) / hs)
        vals.append(tuple(system.outputs_t(yk, pd_)))
        idx.append(jnp.where(inside, jc, n_t))
        n_written = n_written + inside.astype(jnp.int32)
    # next step size (the controller's factor is not differentiated)
    # err**(1/4) by square roots (a float64 power is a scalar library call on CPU)
    err_c = jnp.maximum(err, 1e-10)
    root = jnp.sqrt(jnp.sqrt(err_c)) if ORDER == 4 else err_c ** (1.0 / ORDER)
    fac = jnp.where(finite, safety / root, 0.2)
    fac = jnp.clip(fac, step_factor_min, step_factor_max)
    fac = jnp.where(accept, fac, jnp.minimum(fac, 1.0))
    h_new = hs * jax.lax.stop_gradient(fac)
    h_new = jnp.where(accept & (hs < h), jnp.maximum(h_new, h), h_new)
    h_new = jnp.where(pending, jnp.minimum(h, h_event), h_new)
    t_next = jnp.where(accept, t_target, t)
    y_next = tuple(jnp.where(pending, a, jnp.where(accept, b, c))
                   for a, b, c in zip(y_ev, y1, y, strict=True))
    status = jnp.where((status == 0) & ~pending
                       & (h_new < 1e-12 * jnp.maximum(1.0, jnp.abs(t))), 2, status)
    status = jnp.where((status == 0) & ~pending & ~finite & (h_new < 1e-10), 3, status)
    s_next = (t_next, y_next, r_ev, h_new, iev + pending.astype(jnp.int32),
              iout + n_written, nst + (accept | pending).astype(jnp.int32),
              nrej + (~accept & ~pending).astype(jnp.int32), status)
    return s_next, tuple(idx), tuple(vals)


def _solve_batch(system, args, batched, size, *, rtol, atol, h0, max_steps, outputs_per_step,
                 has_infusion, dosed, safety, h_event, lanes=None, refill_fraction=None):
    """Solve ``size`` patients in one batch-level ``while_loop`` over ``lanes`` lanes.

    ``args`` = (p, time, amount, state, duration, t_out), each with a leading patient axis
    where ``batched`` says so. The loop state of every lane is small (time, state, step
    size, counters); the output buffer (size, n_t, n_outputs) is only written by a scatter at
    the indices of the outputs inside each accepted step, so the cost of an iteration does
    not depend on the number of output times (a vmapped ``while_loop`` would select the whole
    buffer of every patient at every iteration). With fewer lanes than patients, a lane whose
    patient has finished takes the next waiting patient; lanes are refilled together once at
    least ``refill_fraction`` of them are idle, so the batch does not wait for its slowest
    patient. Each patient's computation is the same whichever lane runs it.
    """
    p, time, amount, state, duration, t_out = args
    axes = tuple(0 if b else None for b in batched)
    dtype = p.dtype
    n_t = t_out.shape[-1]
    n_out = len(system.output_names)
    n_lanes = size if lanes is None else max(1, min(int(lanes), size))
    consts_all, (t0, y0, rate0, iout0), out0 = jax.vmap(
        partial(_setup, system, has_infusion=has_infusion, dosed=dosed), in_axes=axes,
        axis_size=size)(p, time, amount, state, duration, t_out)
    if axes[5] is not None:   # per-patient output times travel with the patient
        consts_all = (consts_all, t_out)
    zero_i = jnp.zeros((size,), jnp.int32)
    s0_all = (t0, y0, rate0, jnp.full((size,), h0, dtype), zero_i, iout0, zero_i, zero_i,
              zero_i)
    # output buffer with one row per (patient, output time), row patient * n_t + time: the
    # outputs of one time are scattered as one row (one index per row; measured 2.3x cheaper
    # than one scalar scatter per output in float32, a fifth of an iteration's cost)
    buf = jnp.zeros((size, n_t, n_out), dtype).at[:, 0, :].set(out0).reshape(size * n_t, n_out)
    oob = size * n_t
    kw = dict(rtol=rtol, atol=atol, max_steps=max_steps, outputs_per_step=outputs_per_step,
              has_infusion=has_infusion, dosed=dosed, safety=safety, h_event=h_event)
    if axes[5] is None:
        step = jax.vmap(lambda c, s: _step(system, c, s, t_out, **kw))
    else:
        step = jax.vmap(lambda c, s: _step(system, c[0], s, c[1], **kw))

    def take(tree, ids):
        ids = jnp.minimum(ids, size - 1)
        return jax.tree.map(lambda a: a[ids], tree)

    def running_lanes(s, consts):
        t, _, _, _, _, _, nst, nrej, status = s
        t_end = t_out[-1] if axes[5] is None else consts[1][:, -1]
        return (t < t_end) & (nst + nrej < max_steps) & (status == 0)


    def store(res, pid, s, mask):
        """Write the lanes' final time and counters for their patients where ``mask``."""
        t, _, _, _, _, _, nst, nrej, status = s
        rows = jnp.where(mask, pid, size)
        return tuple(r.at[rows].set(v, mode="drop", unique_indices=True)
                     for r, v in zip(res, (t, status, nst, nrej), strict=True))

    def live(s, consts, pid):
        return running_lanes(s, consts) & (pid < size)

    def advance(pid, s, consts, buf, stop):
        """Step the lanes until ``stop(n_idle)`` or no lane runs (inner loop)."""
        def one(s, buf):
            act = live(s, consts, pid)
            s_new, idx, vals = step(consts, s)
            s = jax.tree.map(lambda a, b: jnp.where(act, a, b), s_new, s)
            ids = jnp.concatenate([jnp.where(act & (j < n_t), pid * n_t + j, oob)
                                   for j in idx])
            ups = jnp.concatenate([jnp.stack(v, axis=-1) for v in vals])
            buf = buf.at[ids].set(ups, mode="drop", unique_indices=True)
            return s, buf

        def body(c):
            return one(*c)

        def cond(c):
            act = live(c[0], consts, pid)
            if stop is None:
                return jnp.any(act)
            return jnp.any(act) & ~stop(jnp.sum((~act).astype(jnp.int32)))

        return jax.lax.while_loop(cond, body, (s, buf))

    pid = jnp.arange(n_lanes, dtype=jnp.int32)
    s, consts = take(s0_all, pid), take(consts_all, pid)
    res = (jnp.zeros((size,), dtype), zero_i, zero_i, zero_i)   # t, status, nst, nrej
    if n_lanes == size:
        s, buf = advance(pid, s, consts, buf, None)
    else:
        frac = REFILL_FRACTION if refill_fraction is None else refill_fraction
        thr = max(1, int(frac * n_lanes))

        def outer(c):
            pid, nxt, s, consts, buf, res = c
            # run until enough lanes idle (or all waiting patients fit in the idle lanes)
            s, buf = advance(pid, s, consts, buf, lambda n_idle: (nxt < size) & (
                n_idle >= jnp.minimum(thr, size - nxt)))
            idle = ~live(s, consts, pid)
            res = store(res, pid, s, idle & (pid < size))
            rank = jnp.cumsum(idle.astype(jnp.int32)) - 1
            new = jnp.where(idle, nxt + rank, pid).astype(jnp.int32)
            new = jnp.where(idle & (new >= size), size, new)
            load = idle & (new < size)
            s = jax.tree.map(lambda a, b: jnp.where(load, a, b), take(s0_all, new), s)
            consts = jax.tree.map(
                lambda a, b: jnp.where(load.reshape(load.shape + (1,) * (a.ndim - 1)), a, b),
                take(consts_all, new), consts)
            nxt = jnp.minimum(nxt + jnp.sum(idle.astype(jnp.int32)), size).astype(jnp.int32)
            return new, nxt, s, consts, buf, res

        def outer_cond(c):
            pid, nxt, s, consts, _, _ = c
            return jnp.any(live(s, consts, pid)) | (nxt < size)

        pid, _, s, _, buf, res = jax.lax.while_loop(
            outer_cond, outer, (pid, jnp.asarray(n_lanes, jnp.int32), s, consts, buf, res))
    t, status, nst, nrej = store(res, pid, s, pid < size)
    t_end = t_out[..., -1]
    status = jnp.where((status == 0) & (t < t_end), 1, status)
    return jnp.swapaxes(buf.reshape(size, n_t, n_out), 1, 2), status, nst, nrej


def solve_patient(system: OdeSystem, p, time, amount, state, duration, t_out, *, rtol, atol,
                  h0, max_steps, outputs_per_step, has_infusion, dosed, safety=0.9,
                  h_event=None, lanes=DEFAULT_LANES):
    """Solve one patient; vmap this. See :func:`solve_population` for the arguments.

    ``dosed`` is the static tuple of state indices that receive doses. Under ``jax.vmap``
    (a ``custom_vmap`` rule) the whole batch runs in one batch-level loop whose cost per
    iteration does not grow with the number of output times, over at most ``lanes`` lanes
    (a lane takes the next patient when its own has finished; ``None``: one lane per
    patient); called directly it is a batch of one. Forward-mode derivatives (``jax.jvp``)
    pass through both. The results do not depend on ``lanes``.

    Returns
    -------
    outputs : Array (n_outputs, n_times)
    status, n_steps, n_rejected : Array () int
    """
    kw = dict(rtol=rtol, atol=tuple(float(a) for a in np.broadcast_to(
        np.asarray(atol, dtype=float), (system.n_states,))), h0=float(h0),
        max_steps=int(max_steps), outputs_per_step=int(outputs_per_step),
        has_infusion=bool(has_infusion), dosed=tuple(int(k) for k in dosed),
        safety=float(safety), h_event=float(h0 if h_event is None else h_event),
        lanes=None if lanes is None else int(lanes))

    @jax.custom_batching.custom_vmap
    def one(p, time, amount, state, duration, t_out):
        out = _solve_batch(system, (p, time, amount, state, duration, t_out), (False,) * 6, 1,
                           **kw)
        return tuple(x[0] for x in out)

    @one.def_vmap
    def _rule(axis_size, in_batched, p, time, amount, state, duration, t_out):
        out = _solve_batch(system, (p, time, amount, state, duration, t_out),
                           tuple(in_batched), axis_size, **kw)
        return out, (True, True, True, True)

    return one(jnp.asarray(p), jnp.asarray(time), jnp.asarray(amount),
               jnp.asarray(state, jnp.int32), jnp.asarray(duration), jnp.asarray(t_out))


@partial(jax.jit, static_argnames=("system", "rtol", "atol", "h0", "max_steps",
                                   "outputs_per_step", "has_infusion", "shared_doses", "dosed",
                                   "lanes"))
def _solve_chunk(system, params, time, amount, state, duration, t_out, *, atol, rtol, h0,
                 max_steps, outputs_per_step, has_infusion, shared_doses, dosed, lanes):
    f = partial(solve_patient, system, rtol=rtol, atol=atol, h0=h0, max_steps=max_steps,
                outputs_per_step=outputs_per_step, has_infusion=has_infusion, dosed=dosed,
                lanes=lanes)
    dose_axis = None if shared_doses else 0
    return jax.vmap(f, in_axes=(0, dose_axis, dose_axis, dose_axis, dose_axis, None))(
        params, time, amount, state, duration, t_out)


def make_population_fn(system: OdeSystem, doses: Doses, t_out, *, rtol=1e-6, atol=None,
                       h0=1e-2, max_steps=20000, outputs_per_step=2, dtype=None):
    """A pure JAX function ``f(pm) -> PopulationSolution`` for jit, vmap and forward-mode AD.

    Parameters
    ----------
    system, doses, t_out, rtol, atol, h0, max_steps, outputs_per_step, dtype
        As in :func:`solve_population`; the doses must be shared (1-D arrays) or have one row
        per patient of ``pm`` (which is cast to ``dtype``).

    Returns
    -------
    callable
        ``f(pm)`` with ``pm`` of shape (n, n_params) in ``system.param_names`` order (see
        :func:`param_matrix`). Differentiate with ``jax.jvp``/``jax.jacfwd``: the adaptive loop
        is a ``lax.while_loop``, which JAX cannot reverse-differentiate. Step-size decisions are
        not differentiated; dose times (``TLAG``) are.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from il2pkpd.solve import Doses, param_matrix
    >>> from il2pkpd.solve.il2 import il2_system
    >>> system = il2_system()
    >>> f = make_population_fn(system, Doses([0.0], [1e6], [1]), np.array([0.0, 24.0]))
    >>> pm = param_matrix(system, {}, n=2)
    >>> grad = jax.vmap(jax.jacfwd(lambda p: f(p[None]).outputs.sum()))(pm)
    >>> grad.shape
    (2, 22)
    """
    dtype = _dtype(dtype)
    time, amount, state, duration, shared, has_infusion, dosed = _dose_arrays(system, doses)
    time, amount, duration = (jnp.asarray(a, dtype) for a in (time, amount, duration))
    t_out = jnp.asarray(np.asarray(t_out, dtype=float), dtype)
    atol = _atol(system, atol)
    one = partial(solve_patient, system, rtol=float(rtol), atol=atol, h0=float(h0),
                  max_steps=int(max_steps), outputs_per_step=int(outputs_per_step),
                  has_infusion=has_infusion, dosed=dosed)
    axis = None if shared else 0

    def f(pm):
        o, st, ns, nr = jax.vmap(one, in_axes=(0, axis, axis, axis, axis, None))(
            jnp.asarray(pm, dtype), time, amount, state, duration, t_out)
        return PopulationSolution(o, st, ns, nr)

    return f


def _dose_arrays(system, doses):
    time = np.asarray(doses.time, dtype=float)
    amount = np.asarray(doses.amount, dtype=float)
    cmt = np.asarray(doses.cmt)
    duration = (np.zeros_like(time) if doses.duration is None
                else np.asarray(doses.duration, dtype=float))
    if not (time.shape == amount.shape == cmt.shape == duration.shape) or time.ndim > 2:
        raise ParameterError("dose arrays (time, amount, cmt, duration) must have the same "
                             f"shape, (n_doses,) or (n, n_doses); got {time.shape}, "
                             f"{amount.shape}, {cmt.shape}, {duration.shape}")
    bad = sorted(set(np.unique(cmt).tolist()) - set(system.compartments))
    if bad:
        raise ParameterError(f"dose compartment(s) {bad} not in model {system.name!r} "
                             f"(compartments {sorted(system.compartments)})")
    state = np.vectorize(lambda c: system.compartments[int(c)])(cmt).astype(np.int32)
    shared = time.ndim == 1
    has_infusion = bool(np.any(duration > 0))
    dosed = tuple(sorted(set(np.unique(state).tolist())))
    return time, amount, state, duration, shared, has_infusion, dosed


def _dtype(dtype):
    """The floating dtype of a solve: float64 (default; float32 when JAX runs without x64)."""
    if dtype is None:
        return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ParameterError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ParameterError("dtype float64 needs 64-bit JAX: call il2pkpd.enable_x64() "
                             "before creating arrays, or pass dtype='float32'")
    return dt


def _atol(system, atol):
    if atol is None:
        atol = system.atol if system.atol is not None else 1e-10
    return tuple(float(a) for a in np.broadcast_to(np.asarray(atol, dtype=float),
                                                  (system.n_states,)))


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
                     h0=1e-2, max_steps=20000, outputs_per_step=2, chunk_size=16384,
                     lanes=DEFAULT_LANES, devices=None, dtype=None):
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
        At most this many output times inside one step (each is interpolated and written at
        every iteration, so keep it small; a step that would span more output times is
        shortened).
    chunk_size : int
        Patients per compiled call (the last chunk is padded to this size); with several
        devices, at most ``n / n_devices`` so that every device gets work.
    lanes : int or None
        Patients advanced together inside a chunk; a lane whose patient has finished takes
        the next one (``None``: all patients of the chunk at once). Speed only: the results
        do not depend on it.
    devices : sequence of jax.Device, optional
        Devices that solve the chunks, in turn (default: ``jax.local_devices()``; on CPU run
        with ``jax.config.update("jax_num_cpu_devices", n_cores)`` at start-up to use every
        core). The results do not depend on it.
    dtype : {"float64", "float32"}, optional
        Floating-point precision of the whole solve (default float64). float32 halves the
        memory traffic and doubles the SIMD width (measured 1.75-1.9x the float64 rate on the
        IL-2 benchmark); its rounding (about 6e-8 relative per operation) limits useful
        ``rtol`` to about 1e-5, and the outputs come back as float32. Meant for simulating
        virtual populations; fits keep float64 (gradients, likelihoods).

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
    dtype = _dtype(dtype)
    pm = param_matrix(system, params).astype(dtype)
    n = pm.shape[0]
    time, amount, state, duration, shared, has_infusion, dosed = _dose_arrays(system, doses)
    time, amount, duration = (a.astype(dtype) for a in (time, amount, duration))
    if not shared and time.shape[0] != n:
        raise ParameterError(f"per-patient dose arrays have {time.shape[0]} rows for {n} "
                             "patients")
    t_out = np.asarray(t_out, dtype=float)
    if t_out.ndim != 1 or t_out.size < 1 or np.any(np.diff(t_out) <= 0):
        raise ParameterError("t_out must be a 1-D array of strictly increasing output times")
    t_out = jnp.asarray(t_out, dtype)
    atol = _atol(system, atol)
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) > 1:   # every device gets a chunk (chunks run concurrently)
        chunk_size = max(1, min(int(chunk_size), -(-n // len(devices))))
    outs, stats, nsts, nrejs = [], [], [], []
    for i_chunk, start in enumerate(range(0, n, chunk_size)):
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
        dev = devices[i_chunk % len(devices)]
        if len(devices) > 1:
            pchunk, t_dev = jax.device_put((pchunk, t_out), dev)
            dchunk = tuple(jax.device_put(jnp.asarray(a), dev) for a in dchunk)
        else:
            t_dev = t_out
        o, s, ns, nr = _solve_chunk(system, pchunk, *dchunk, t_dev, atol=atol, rtol=float(rtol),
                                    h0=float(h0), max_steps=int(max_steps),
                                    outputs_per_step=int(outputs_per_step),
                                    has_infusion=has_infusion, shared_doses=shared,
                                    dosed=dosed, lanes=None if lanes is None else int(lanes))
        outs.append(o[:m])
        stats.append(s[:m])
        nsts.append(ns[:m])
        nrejs.append(nr[:m])
    if len(devices) > 1:   # gather on the first device (after every chunk was dispatched)
        outs, stats, nsts, nrejs = jax.device_put((outs, stats, nsts, nrejs), devices[0])
    return PopulationSolution(jnp.concatenate(outs), jnp.concatenate(stats),
                              jnp.concatenate(nsts), jnp.concatenate(nrejs))


# -- reverse mode: discrete adjoint over a stored trajectory ----------------------------------

def _split_state(s):
    """Loop state -> (float part (t, y, r, h), int part (iev, iout, nst, nrej, status))."""
    t, y, r, h, iev, iout, nst, nrej, status = s
    return (t, y, r, h), (iev, iout, nst, nrej, status)


def _join_state(fs, is_):
    t, y, r, h = fs
    return (t, y, r, h, *is_)


def _split_consts(c):
    pd_, (ev_t, ev_s, ev_a, ev_r) = c
    return (pd_, ev_t, ev_a, ev_r), ev_s


def _join_consts(cf, ev_s):
    pd_, ev_t, ev_a, ev_r = cf
    return pd_, (ev_t, ev_s, ev_a, ev_r)


def _history_forward(system, p, time, amount, state, duration, t_out, *, batched_doses,
                     history, kw):
    """The batch loop of :func:`_solve_batch` (one lane per patient) that also stores the loop
    state before every iteration, for :func:`_history_backward`.

    Returns ``(outputs (n, n_outputs, n_t), status, n_steps, n_rejected)`` and the residuals.
    A patient still running after ``history`` iterations gets status 1 (max_steps reached).
    """
    size = p.shape[0]
    d_ax = 0 if batched_doses else None
    n_t = t_out.shape[-1]
    n_out = len(system.output_names)
    has_infusion, dosed = kw["has_infusion"], kw["dosed"]
    consts, (t0, y0, rate0, iout0), out0 = jax.vmap(
        partial(_setup, system, has_infusion=has_infusion, dosed=dosed),
        in_axes=(0, d_ax, d_ax, d_ax, d_ax, None))(p, time, amount, state, duration, t_out)
    zero_i = jnp.zeros((size,), jnp.int32)
    s0 = (t0, y0, rate0, jnp.full((size,), kw["h0"], p.dtype), zero_i, iout0, zero_i, zero_i,
          zero_i)
    buf = jnp.zeros((size, n_t, n_out), p.dtype).at[:, 0, :].set(out0).reshape(size * n_t,
                                                                                n_out)
    oob = size * n_t
    step_kw = {k: v for k, v in kw.items() if k not in ("h0", "lanes")}
    step = jax.vmap(lambda c, s: _step(system, c, s, t_out, **step_kw))
    pid = jnp.arange(size, dtype=jnp.int32)
    max_steps = kw["max_steps"]

    def live(s):
        t, _, _, _, _, _, nst, nrej, status = s
        return (t < t_out[-1]) & (nst + nrej < max_steps) & (status == 0)

    hist0 = jax.tree.map(lambda a: jnp.zeros((history,) + a.shape, a.dtype), s0)

    def body(c):
        k, s, buf, hist = c
        hist = jax.tree.map(lambda hh, a: hh.at[k].set(a), hist, s)
        act = live(s)
        s_new, idx, vals = step(consts, s)
        s = jax.tree.map(lambda a, b: jnp.where(act, a, b), s_new, s)
        ids = jnp.concatenate([jnp.where(act & (j < n_t), pid * n_t + j, oob) for j in idx])
        ups = jnp.concatenate([jnp.stack(v, axis=-1) for v in vals])
        buf = buf.at[ids].set(ups, mode="drop", unique_indices=True)
        return k + 1, s, buf, hist

    def cond(c):
        return (c[0] < history) & jnp.any(live(c[1]))

    k, s, buf, hist = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), s0, buf, hist0))
    t, _, _, _, _, _, nst, nrej, status = s
    status = jnp.where((status == 0) & (t < t_out[-1]), 1, status)
    outputs = jnp.swapaxes(buf.reshape(size, n_t, n_out), 1, 2)
    return (outputs, status, nst, nrej), (k, hist)


def _history_backward(system, p, time, amount, state, duration, t_out, k_end, hist, ct_out, *,
                      batched_doses, kw):
    """Reverse pass over the stored iterations: the exact gradient of the discrete solution.

    Each iteration's step is recomputed from its stored loop state and pulled back with
    ``jax.vjp`` (per patient, vmapped), accumulating the cotangents of the per-patient
    constants (parameters, dose times and amounts); the setup is pulled back last.
    """
    d_ax = 0 if batched_doses else None
    n_t = t_out.shape[-1]
    has_infusion, dosed = kw["has_infusion"], kw["dosed"]
    step_kw = {k: v for k, v in kw.items() if k not in ("h0", "lanes")}
    max_steps = kw["max_steps"]

    def setup_float(pp):
        consts, (t0, y0, rate0, _), out0 = jax.vmap(
            partial(_setup, system, has_infusion=has_infusion, dosed=dosed),
            in_axes=(0, d_ax, d_ax, d_ax, d_ax, None))(pp, time, amount, state, duration, t_out)
        cf, _ = _split_consts(consts)
        return (cf, (t0, y0, rate0), out0)

    (cf_all, _, _), setup_vjp = jax.vjp(setup_float, p)
    consts_ints = _split_consts(jax.vmap(
        partial(_setup, system, has_infusion=has_infusion, dosed=dosed),
        in_axes=(0, d_ax, d_ax, d_ax, d_ax, None))(p, time, amount, state, duration, t_out)[0])[1]
    ct_rows = jnp.swapaxes(ct_out, 1, 2)            # (size, n_t, n_outputs)

    def back_one(fs, is_, cf, ev_s, ct_next, ct_lane):
        def f(fs_, cf_):
            s_next, idx, vals = _step(system, _join_consts(cf_, ev_s), _join_state(fs_, is_),
                                      t_out, **step_kw)
            return (_split_state(s_next)[0], vals), idx

        (_, vjp_fn, idx) = jax.vjp(f, fs, cf, has_aux=True)
        ct_vals = tuple(
            tuple(jnp.where(j < n_t, ct_lane[jnp.minimum(j, n_t - 1), o], 0.0)
                  for o in range(ct_lane.shape[-1]))
            for j in idx)
        return vjp_fn((ct_next, ct_vals))

    back = jax.vmap(back_one)

    def live(s):
        t, _, _, _, _, _, nst, nrej, status = s
        return (t < t_out[-1]) & (nst + nrej < max_steps) & (status == 0)

    def body(c):
        k, ct_fs, ct_cf = c
        k = k - 1
        s_k = jax.tree.map(lambda hh: hh[k], hist)
        act = live(s_k)
        fs, is_ = _split_state(s_k)
        g_fs, g_cf = back(fs, is_, cf_all, consts_ints, ct_fs, ct_rows)

        def sel(a, b):
            return jnp.where(act.reshape(act.shape + (1,) * (a.ndim - 1)), a, b)

        ct_fs = jax.tree.map(sel, g_fs, ct_fs)
        ct_cf = jax.tree.map(lambda acc, g: acc + sel(g, jnp.zeros_like(g)), ct_cf, g_cf)
        return k, ct_fs, ct_cf

    fs0 = _split_state(jax.tree.map(lambda hh: hh[0], hist))[0]
    ct_fs0 = jax.tree.map(jnp.zeros_like, fs0)
    ct_cf0 = jax.tree.map(jnp.zeros_like, cf_all)
    _, ct_fs, ct_cf = jax.lax.while_loop(lambda c: c[0] > 0, body, (k_end, ct_fs0, ct_cf0))
    t_c, y_c, r_c, _ = ct_fs          # the first step size h0 is a constant
    (ct_p,) = setup_vjp((ct_cf, (t_c, y_c, r_c), ct_rows[:, 0, :]))
    return ct_p


def make_population_vjp_fn(system: OdeSystem, doses: Doses, t_out, *, rtol=1e-6, atol=None,
                           h0=1e-2, max_steps=20000, outputs_per_step=2, history=4096):
    """Like :func:`make_population_fn`, but reverse-differentiable (``jax.grad``, ``jax.vjp``).

    The gradient is the exact derivative of the discrete solution (as forward mode gives),
    computed by a discrete adjoint: the forward solve stores every iteration's loop state
    (one lane per patient, at most ``history`` iterations: a patient that needs more gets
    status 1), and the reverse pass recomputes each step and pulls the cotangents back
    through it with ``jax.vjp``. Its cost does not grow with the number of parameters (about
    four forward solves, where forward mode costs about one per parameter). Step-size
    decisions are not differentiated; dose times (``TLAG``) and amounts (``F``) are.

    Parameters
    ----------
    system, doses, t_out, rtol, atol, h0, max_steps, outputs_per_step
        As in :func:`make_population_fn` (shared or per-patient doses).
    history : int
        Most loop iterations stored per solve (memory: ``history * n * (n_states + 6)``
        numbers); each patient stops after ``min(max_steps, history)`` iterations.

    Returns
    -------
    callable
        ``f(pm) -> PopulationSolution`` with ``pm`` (n, n_params) in ``system.param_names``
        order; ``jax.grad`` of a function of ``f(pm).outputs`` works. Not forward-mode
        differentiable (use :func:`make_population_fn` for ``jax.jvp``).
    """
    dtype = _dtype(None)
    time, amount, state, duration, shared, has_infusion, dosed = _dose_arrays(system, doses)
    time, amount, duration = (jnp.asarray(a, dtype) for a in (time, amount, duration))
    state = jnp.asarray(state, jnp.int32)
    t_out = jnp.asarray(np.asarray(t_out, dtype=float), dtype)
    history = int(history)
    # a patient stops after min(max_steps, history) iterations, so the history never overflows
    kw = dict(rtol=float(rtol), atol=_atol(system, atol), h0=float(h0),
              max_steps=min(int(max_steps), history), outputs_per_step=int(outputs_per_step),
              has_infusion=has_infusion, dosed=dosed, safety=0.9, h_event=float(h0))
    args = (time, amount, state, duration, t_out)
    batched = (True,) + (not shared,) * 4 + (False,)

    def forward(pm):
        return _history_forward(system, pm, *args, batched_doses=not shared, history=history,
                                kw=kw)

    @jax.custom_vjp
    def solve(pm):
        # the primal alone: the same loop without storing the iterations
        return _solve_batch(system, (pm, *args), batched, pm.shape[0], lanes=None, **kw)

    def fwd(pm):
        out, (k, hist) = forward(pm)
        return out, (pm, k, hist)

    def bwd(res, cts):
        pm, k, hist = res
        ct_out = cts[0]
        return (_history_backward(system, pm, *args, k, hist, ct_out,
                                  batched_doses=not shared, kw=kw),)

    solve.defvjp(fwd, bwd)

    def f(pm):
        o, st, ns, nr = solve(jnp.asarray(pm, dtype))
        return PopulationSolution(o, st, ns, nr)

    return f
