"""ODE models integrated between events with diffrax.

Per subject, every event becomes a breakpoint: dose starts (record time + lag), infusion ends,
observations, resets, steady-state starts. Breakpoint times depend on parameters (lag, F, R,
D), so they are sorted inside JAX (key: epoch, time, record rank) and a ``lax.scan`` walks
them: integrate to the breakpoint with ``diffrax.diffeqsolve``, then apply the event. Subjects
are vmapped. A failed solve sets ``ok`` false for that subject (never raises).

Steady state (SS=1/2) is the fixed point of the one-interval map (integrate one dosing
interval with the doses at phase ``TLAG mod II``; as NONMEM: computed without the lag, then
advanced to the right point of the cycle), found by Newton iterations outside the gradient
and differentiated by the implicit function theorem; a constant infusion at steady state
solves ``rhs(y) + rate = 0`` the same way. Implied doses still pending at the record time
(TLAG >= II) and infusions still running (duration > II) become events, at most
``SS_MAX_OVERLAP`` of each per SS record (``ok`` is false beyond; the closed forms have no
limit).
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from il2pkpd.engine._events import DoseKind, EventArrays
from il2pkpd.errors import OptionError
from il2pkpd.models import Model

__all__ = ["make_ode_predict", "model_functions", "SOLVERS", "SS_MAX_OVERLAP", "ss_overlaps"]


def ss_overlaps(lag, dur, ii, is_inf, xp=jnp):
    """Phase of the doses in the interval, implied doses pending and infusions running at an
    SS record time: ``(phi, n_pending, n_running)``, for the lag, infusion duration and II."""
    phi = xp.mod(lag, ii)
    n_pend = xp.round((lag - phi) / ii)
    n_run = xp.where(is_inf, xp.maximum(xp.ceil((phi + dur) / ii) - 1.0, 0.0), 0.0)
    return phi, n_pend, n_run

SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "kvaerno3": diffrax.Kvaerno3,
    "kvaerno4": diffrax.Kvaerno4,
    "kvaerno5": diffrax.Kvaerno5,
}

# event types
_OBS, _START, _END, _RESET, _SS_SET, _PREV_END, _IMP_START, _IMP_END = range(8)
#: Most implied SS doses still pending (TLAG >= k*II) or infusions still running (duration
#: > k*II) at an SS record time, per SS record, on the ODE path (static event slots).
SS_MAX_OVERLAP = 4
_BIG_EPOCH = 1 << 30


def model_functions(model: Model):
    """``(rhs, outputs, initial)`` of *model* with the user-ODE interface (dicts of scalars).

    Built-in linear structures get their mammillary equations, so they can be integrated too.
    """
    if model.ode is not None:
        return model.ode.rhs, model.ode.outputs, model.ode.initial
    structure, depot = model.structure, model.depot
    out_name = model.outputs[0].name

    def rhs(t, y, p):
        if structure == "one_cmt":
            v1 = p["V"]
            d = {"central": -p["CL"] / v1 * y["central"]}
        elif structure == "two_cmt":
            v1 = p["V1"]
            c1, c2 = y["central"] / v1, y["peripheral"] / p["V2"]
            flow = p["Q"] * (c1 - c2)
            d = {"central": -p["CL"] * c1 - flow, "peripheral": flow}
        else:
            v1 = p["V1"]
            c1 = y["central"] / v1
            f2 = p["Q2"] * (c1 - y["peripheral1"] / p["V2"])
            f3 = p["Q3"] * (c1 - y["peripheral2"] / p["V3"])
            d = {"central": -p["CL"] * c1 - f2 - f3, "peripheral1": f2, "peripheral2": f3}
        if depot:
            absorbed = p["KA"] * y["depot"]
            d["depot"] = -absorbed
            d["central"] = d["central"] + absorbed
        return d

    def outputs(y, p):
        v1 = p["V"] if structure == "one_cmt" else p["V1"]
        return {out_name: y["central"] / v1}

    return rhs, outputs, None


def make_ode_predict(model: Model, events: EventArrays, *, solver: str = "tsit5",
                     rtol: float = 1e-6, atol=1e-9, max_steps: int = 4096,
                     ss_newton_iter: int = 8, checkpoints: int | None = None):
    """Return ``solve(ev, p, dose) -> (pred (S, O), ok (S,))`` for the ODE path.

    ``atol`` is one absolute tolerance or one per state (state units). ``checkpoints``: the
    number of checkpoints of diffrax's ``RecursiveCheckpointAdjoint`` per interval between
    events (reverse mode); None: diffrax's default (about log2(max_steps), so the reverse pass
    recomputes steps when an interval holds more).
    """
    if solver not in SOLVERS:
        raise OptionError(f"solver={solver!r} is not available; use one of "
                          f"{', '.join(SOLVERS)}")
    rhs, outputs, initial = model_functions(model)
    states = model.states
    n_states = len(states)
    out_names = [o.name for o in model.outputs]
    solver_obj = SOLVERS[solver]()
    atol_a = np.asarray(atol, dtype=float)
    if atol_a.ndim == 1 and atol_a.shape != (n_states,):
        raise OptionError(f"atol has {atol_a.size} values; model {model.name} has {n_states} "
                          f"states ({', '.join(states)}): give one value or one per state")
    if atol_a.ndim > 1 or not np.all(atol_a > 0):
        raise OptionError(f"atol must be positive: one value or one per state, got {atol}")
    controller = diffrax.PIDController(rtol=rtol, atol=float(atol_a) if atol_a.ndim == 0
                                       else jnp.asarray(atol_a))
    default_adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints)

    # static structure: which event categories exist at all
    mask = np.asarray(events.dose_mask)
    kind = np.asarray(events.dose_kind)
    ss = np.asarray(events.dose_ss)
    inf_kinds = (DoseKind.INFUSION, DoseKind.RATE_PARAM, DoseKind.DURATION_PARAM)
    has_inf = bool(np.any(mask & np.isin(kind, inf_kinds)))
    ss_cols = np.flatnonzero(np.any(mask & (ss > 0), axis=0))     # dose columns with SS doses
    n_dose = mask.shape[1]

    def vector_field(t, y, args):
        p, rates = args
        d = rhs(t, {s: y[i] for i, s in enumerate(states)}, p)
        return jnp.stack([jnp.asarray(d[s], y.dtype) * jnp.ones((), y.dtype)
                          for s in states]) + rates

    term = diffrax.ODETerm(vector_field)

    def integrate(y0, t0, t1, p, rates, adjoint=None):
        t1 = jnp.maximum(t1, t0)
        sol = diffrax.diffeqsolve(term, solver_obj, t0, t1, None, y0, args=(p, rates),
                                  saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller,
                                  max_steps=max_steps, throw=False,
                                  adjoint=default_adjoint if adjoint is None else adjoint)
        return sol.ys[-1], sol.result == diffrax.RESULTS.successful

    def init_state(p):
        y = jnp.zeros(n_states)
        if initial is not None:
            init = initial(p)
            for i, s in enumerate(states):
                if s in init:
                    y = y.at[i].set(jnp.asarray(init[s], y.dtype))
        return y

    def out_vector(y, p):
        o = outputs({s: y[i] for i, s in enumerate(states)}, p)
        return jnp.stack([jnp.asarray(o[n], y.dtype) * jnp.ones((), y.dtype) for n in out_names])

    # -- steady state -------------------------------------------------------------------------
    def periodic_map(y0, p, phi, amt, rate, dur, ii, state, k, adjoint=None):
        """State one interval after y0 under periodic dosing, doses at phase phi.

        Each interval holds one dose start (phase phi) and one infusion end (phase
        e = (phi + D) mod II); n0 infusions run across the interval boundary (D may exceed II).
        """
        is_inf = (k == DoseKind.INFUSION) | (k == DoseKind.RATE_PARAM) | (
            k == DoseKind.DURATION_PARAM)
        dur = jnp.where(is_inf, dur, 0.0)
        _, _, n0 = ss_overlaps(phi, dur, ii, is_inf)
        e = phi + dur - ii * n0
        b1, b2 = jnp.minimum(phi, e), jnp.maximum(phi, e)
        mid = jnp.where(phi < e, n0 + 1.0, n0 - 1.0)
        unit = jax.nn.one_hot(state, n_states, dtype=y0.dtype)
        r = jnp.where(is_inf, rate, 0.0)
        y1, ok1 = integrate(y0, 0.0, b1, p, unit * r * n0, adjoint)
        y1 = y1 + unit * jnp.where(k == DoseKind.BOLUS, amt, 0.0)
        y2, ok2 = integrate(y1, b1, b2, p, unit * r * mid, adjoint)
        y3, ok3 = integrate(y2, b2, ii, p, unit * r * n0, adjoint)
        return y3, ok1 & ok2 & ok3, n0 * r

    def newton_fixed_point(g, y_start):
        """Root of g (returns residual, Jacobian) by Newton; returns root and last Jacobian."""
        def body(_, carry):
            y, _ = carry
            res, jac = g(y)
            step = jnp.linalg.solve(jac, res)
            return jnp.where(jnp.all(jnp.isfinite(step)), y - step, y), jac

        return jax.lax.fori_loop(0, ss_newton_iter, body,
                                 (y_start, jnp.eye(n_states, dtype=y_start.dtype)))

    def value_and_jacfwd(fun):
        def g(y):
            def twice(z):
                v = fun(z)
                return v, v

            jac, val = jax.jacfwd(twice, has_aux=True)(y)
            return val, jac
        return g

    has_const = bool(np.any(mask & (ss > 0) & (kind == DoseKind.CONSTANT_INFUSION)))
    has_periodic = bool(np.any(mask & (ss > 0) & (kind != DoseKind.CONSTANT_INFUSION)))

    def steady_state(p, y_init, phi, amt, rate, dur, ii, state, k):
        """State at the SS record time (implied past doses only) and the running rate.

        Newton runs on stopped values; one last Newton step from the fixed point, with the
        Jacobian stopped, carries the implicit-function derivative to the parameters.
        """
        eye = jnp.eye(n_states)
        unit = jax.nn.one_hot(state, n_states, dtype=y_init.dtype)
        is_const = k == DoseKind.CONSTANT_INFUSION
        ps = jax.lax.stop_gradient(p)
        phi_s, amt_s, rate_s, dur_s, ii_s = jax.lax.stop_gradient((phi, amt, rate, dur, ii))
        y0 = jax.lax.stop_gradient(y_init)
        y_star = y0
        jac = eye
        res = jnp.zeros(n_states)
        ok = jnp.array(True)
        run_rate = jnp.zeros(())
        if has_periodic:
            def pm(z):
                return periodic_map(z, ps, phi_s, amt_s, rate_s, dur_s, ii_s, state, k,
                                    adjoint=diffrax.ForwardMode())[0]

            pm_g = value_and_jacfwd(pm)

            def g_p(y):
                val, jac = pm_g(y)
                return val - y, jac - eye

            y_p, jac_p = newton_fixed_point(g_p, y0)
            y_p = jax.lax.stop_gradient(y_p)
            pm_val, ok_p, run_p = periodic_map(y_p, p, phi, amt, rate, dur, ii, state, k)
            y_star = y_p
            jac = jax.lax.stop_gradient(jac_p)
            res = pm_val - y_p
            ok = ok_p
            run_rate = run_p
        if has_const:
            def fc(z):
                return vector_field(0.0, z, (ps, unit * rate_s))

            y_c, jac_c = newton_fixed_point(value_and_jacfwd(fc), y0)
            y_c = jax.lax.stop_gradient(y_c)
            res_c = vector_field(0.0, y_c, (p, unit * rate))
            y_star = jnp.where(is_const, y_c, y_star)
            jac = jnp.where(is_const, jax.lax.stop_gradient(jac_c), jac)
            res = jnp.where(is_const, res_c, res)
            ok = jnp.where(is_const, True, ok)
            run_rate = jnp.where(is_const, rate, run_rate)
        y_ss = y_star - jnp.linalg.solve(jac, res)
        scale = jnp.maximum(jnp.max(jnp.abs(y_star)), 1.0)
        converged = (jnp.max(jnp.abs(jax.lax.stop_gradient(res)))
                     <= max(100 * rtol, 1e-6) * scale + 100 * float(np.max(atol_a)))
        ok = ok & converged & jnp.all(jnp.isfinite(y_ss))
        return y_ss, run_rate, ok

    # -- one subject --------------------------------------------------------------------------
    def subject(p, obs_time, obs_epoch, obs_rank, obs_output, obs_mask, d_time, d_epoch, d_rank,
                d_mask, d_kind, d_ss, d_state, d_ii, lag, amt, rate, dur, r_time, r_epoch,
                r_rank, r_mask):
        y_init = init_state(p)
        is_inf = (d_kind == DoseKind.INFUSION) | (d_kind == DoseKind.RATE_PARAM) | (
            d_kind == DoseKind.DURATION_PARAM)
        ok_all = jnp.array(True)
        types, times, epochs, ranks, subs, idx = [], [], [], [], [], []

        def add(tp, tm, ep, rk, sub, ix, active):
            types.append(jnp.full(tm.shape, tp, jnp.int32))
            times.append(jnp.where(active, tm, -jnp.inf))
            epochs.append(jnp.where(active, ep, _BIG_EPOCH))
            ranks.append(rk)
            subs.append(jnp.full(tm.shape, sub, jnp.int32))
            idx.append(ix)

        ar_o = jnp.arange(obs_time.shape[0])
        ar_d = jnp.arange(n_dose)
        add(_OBS, obs_time, obs_epoch, obs_rank, 0, ar_o, obs_mask)
        add(_RESET, r_time, r_epoch, r_rank, 0, jnp.arange(r_time.shape[0]), r_mask)
        start_active = d_mask & (d_kind != DoseKind.CONSTANT_INFUSION)
        add(_START, d_time + lag, d_epoch, d_rank, 1, ar_d, start_active)
        if has_inf:
            add(_END, d_time + lag + dur, d_epoch, d_rank, 2, ar_d, d_mask & is_inf)
        if len(ss_cols):
            cols = jnp.asarray(ss_cols)
            ss_active = d_mask[cols] & (d_ss[cols] > 0)
            # harmless stand-ins where a column holds no SS dose (keeps gradients finite)
            inf_c = ss_active & is_inf[cols]
            ii_c = jnp.where(ss_active, d_ii[cols], 1.0)
            dur_c = jnp.where(inf_c, dur[cols], 0.0)
            amt_c = jnp.where(ss_active, amt[cols], 0.0)
            rate_c = jnp.where(ss_active, rate[cols], 0.0)
            kind_c = jnp.where(ss_active, d_kind[cols], int(DoseKind.BOLUS))
            phi_c, n_pend, n_run = ss_overlaps(jnp.where(ss_active, lag[cols], 0.0), dur_c,
                                               ii_c, inf_c)
            y_ss, run_rate, ok_ss = jax.vmap(
                lambda *a: steady_state(p, y_init, *a))(
                phi_c, amt_c, rate_c, dur_c, ii_c, d_state[cols], kind_c)
            ok_ss = ok_ss & (n_pend <= SS_MAX_OVERLAP) & (n_run <= SS_MAX_OVERLAP)
            ok_all = ok_all & jnp.all(jnp.where(ss_active, ok_ss, True))
            n_ss = len(ss_cols)
            ar_ss = jnp.arange(n_ss)
            add(_SS_SET, d_time[cols], d_epoch[cols], d_rank[cols], 0, ar_ss, ss_active)
            # implied doses of the SS series that act after the record time
            kk = jnp.arange(SS_MAX_OVERLAP, dtype=phi_c.dtype)[None, :]
            periodic = (ss_active & (kind_c != DoseKind.CONSTANT_INFUSION))[:, None]
            t0 = (d_time[cols] + phi_c)[:, None]
            rep_ep = jnp.repeat(d_epoch[cols], SS_MAX_OVERLAP)
            rep_rk = jnp.repeat(d_rank[cols], SS_MAX_OVERLAP)
            rep_ix = jnp.repeat(ar_ss, SS_MAX_OVERLAP)
            add(_PREV_END, (t0 - (kk + 1) * ii_c[:, None] + dur_c[:, None]).ravel(), rep_ep,
                rep_rk, 3, rep_ix, (periodic & inf_c[:, None] & (kk < n_run[:, None])).ravel())
            pend = periodic & (kk < n_pend[:, None])
            add(_IMP_START, (t0 + kk * ii_c[:, None]).ravel(), rep_ep, rep_rk, 1, rep_ix,
                pend.ravel())
            add(_IMP_END, (t0 + kk * ii_c[:, None] + dur_c[:, None]).ravel(), rep_ep, rep_rk, 2,
                rep_ix, (pend & inf_c[:, None]).ravel())
        else:
            y_ss = jnp.zeros((1, n_states))
            run_rate = jnp.zeros(1)
            amt_c = rate_c = jnp.zeros(1)
            kind_c = jnp.zeros(1, jnp.int32)
            inf_c = jnp.zeros(1, bool)
        types_a = jnp.concatenate(types)
        times_a = jnp.concatenate(times)
        epochs_a = jnp.concatenate(epochs)
        ranks_a = jnp.concatenate(ranks)
        subs_a = jnp.concatenate(subs)
        idx_a = jnp.concatenate(idx)
        order = jnp.lexsort((subs_a, ranks_a, jax.lax.stop_gradient(times_a), epochs_a))
        types_s, times_s, idx_s = types_a[order], times_a[order], idx_a[order]
        active_s = epochs_a[order] < _BIG_EPOCH
        # the initial state holds at the first event (as NONMEM's initial conditions do)
        t_first = jnp.where(active_s[0], times_s[0], 0.0)
        ss_state = jax.nn.one_hot(d_state[jnp.asarray(ss_cols)], n_states) if len(ss_cols) \
            else jnp.zeros((1, n_states))
        d_unit = jax.nn.one_hot(d_state, n_states)

        def step(carry, ev):
            t_cur, y, rates, ok = carry
            tp, tm, ix, act = ev
            integrate_now = act & (tp != _RESET)
            t_target = jnp.where(integrate_now, jnp.maximum(tm, t_cur), t_cur)
            y_new, ok_i = integrate(y, t_cur, t_target, p, rates)
            ok = ok & ok_i
            y = jnp.where(integrate_now, y_new, y)
            t_cur = t_target
            # reset
            is_reset = act & (tp == _RESET)
            y = jnp.where(is_reset, y_init, y)
            rates = jnp.where(is_reset, 0.0, rates)
            t_cur = jnp.where(is_reset, tm, t_cur)
            # dose start / end
            ixd = jnp.clip(ix, 0, n_dose - 1)
            u = d_unit[ixd]
            is_start = act & (tp == _START)
            y = y + jnp.where(is_start & (d_kind[ixd] == DoseKind.BOLUS), amt[ixd], 0.0) * u
            rates = rates + jnp.where(is_start & is_inf[ixd], rate[ixd], 0.0) * u
            rates = rates - jnp.where(act & (tp == _END), rate[ixd], 0.0) * u
            # steady state
            ixs = jnp.clip(ix, 0, y_ss.shape[0] - 1)
            is_ss = act & (tp == _SS_SET)
            y = y + jnp.where(is_ss, y_ss[ixs] - y_init, 0.0)
            rates = rates + jnp.where(is_ss, run_rate[ixs], 0.0) * ss_state[ixs]
            u_s = ss_state[ixs]
            rates = rates - jnp.where(act & (tp == _PREV_END), rate_c[ixs], 0.0) * u_s
            is_imp = act & (tp == _IMP_START)
            y = y + jnp.where(is_imp & (kind_c[ixs] == DoseKind.BOLUS), amt_c[ixs], 0.0) * u_s
            rates = rates + jnp.where(is_imp & inf_c[ixs], rate_c[ixs], 0.0) * u_s
            rates = rates - jnp.where(act & (tp == _IMP_END), rate_c[ixs], 0.0) * u_s
            # observation
            is_obs = act & (tp == _OBS)
            ixo = jnp.clip(ix, 0, obs_output.shape[0] - 1)
            value = out_vector(y, p)[obs_output[ixo]]
            return (t_cur, y, rates, ok), (jnp.where(is_obs, ixo, -1), value)

        carry0 = (t_first, y_init, jnp.zeros(n_states), ok_all)
        (_, _, _, ok), (slot, values) = jax.lax.scan(
            step, carry0, (types_s, times_s, idx_s, active_s))
        n_obs = obs_time.shape[0]
        pred = jnp.zeros(n_obs).at[jnp.where(slot >= 0, slot, n_obs)].set(values, mode="drop")
        return pred, ok

    def solve(ev: EventArrays, p: dict, dose: dict):
        pred, ok = jax.vmap(subject)(
            p, ev.obs_time, ev.obs_epoch, ev.obs_rank, ev.obs_output, ev.obs_mask,
            ev.dose_time, ev.dose_epoch, ev.dose_rank, ev.dose_mask, ev.dose_kind, ev.dose_ss,
            ev.dose_state, ev.dose_ii, dose["lag"], dose["amt"], dose["rate"], dose["dur"],
            ev.reset_time, ev.reset_epoch, ev.reset_rank, ev.reset_mask)
        return pred, ok

    return solve
