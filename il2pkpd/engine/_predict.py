"""``make_predict_fn`` (the JAX prediction function) and ``predict`` (the user-facing API)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from il2pkpd.engine._closed_form import closed_form_predict
from il2pkpd.engine._events import DoseKind, EventArrays, build_events
from il2pkpd.errors import OptionError, ParameterError
from il2pkpd.models import Model, load_model
from il2pkpd.models._model import DOMAINS, domain_ok

__all__ = ["make_predict_fn", "predict", "needed_parameters", "dose_quantities"]

PredictFn = Callable[[Mapping[str, jax.Array]], tuple[jax.Array, jax.Array]]


def needed_parameters(model: Model, events: EventArrays) -> tuple[str, ...]:
    """Parameters a prediction for *events* needs: the model's own plus TLAG/F/R/D in use.

    ``R<n>`` / ``D<n>`` are needed only when a dose into compartment *n* has RATE -1 / -2.
    """
    kind = np.asarray(events.dose_kind)[np.asarray(events.dose_mask)]
    slot = np.asarray(events.dose_slot)[np.asarray(events.dose_mask)]
    rate = np.asarray(events.dose_rate)[np.asarray(events.dose_mask)]
    uses_r = (kind == DoseKind.RATE_PARAM) | ((kind == DoseKind.CONSTANT_INFUSION) & (rate == -1))
    names = []
    for spec in model.parameters:
        if spec.name[0] in "RD" and spec.auto:
            prefix, n = spec.name[0], int(spec.name[1:])
            used = uses_r if prefix == "R" else kind == DoseKind.DURATION_PARAM
            i = model.dosing_cmts.index(n)
            if not np.any(used & (slot == i)):
                continue
        names.append(spec.name)
    return tuple(names)


def _complete(model: Model, needed: tuple[str, ...], params: Mapping[str, Any],
              n_subjects: int) -> dict[str, jax.Array]:
    """Every model parameter as an (S,) array: given, else default, else (if unused) 1."""
    out: dict[str, jax.Array] = {}
    missing = []
    for spec in model.parameters:
        if spec.name in params:
            v = jnp.asarray(params[spec.name], dtype=float)
            out[spec.name] = jnp.broadcast_to(v, (n_subjects,)) if v.ndim == 0 else v
        elif spec.default is not None:
            out[spec.name] = jnp.full((n_subjects,), spec.default)
        elif spec.name in needed:
            missing.append(spec.name)
        else:
            out[spec.name] = jnp.ones((n_subjects,))
    if missing:
        raise ParameterError(f"missing parameter(s) {', '.join(missing)} for model "
                             f"{model.name}: they have no default and the data need them "
                             "(RATE -1 needs R<n>, RATE -2 needs D<n>).")
    return out


def dose_quantities(model: Model, ev: EventArrays, p: Mapping[str, jax.Array]) -> dict:
    """Per-dose lag, amount, infusion rate and duration, each (S, D).

    ``amt`` is F*AMT (bolus); for RATE > 0 the rate is RATE and the duration F*AMT/RATE (F
    scales the duration, as in NONMEM); RATE -1: rate R<n>; RATE -2: duration D<n>, rate
    F*AMT/D<n>; constant infusion (AMT 0, SS 1): rate RATE (R<n> when RATE is -1), F not
    applied.
    """
    slots = model.dosing_cmts

    def per_dose(prefix: str) -> jax.Array:
        table = jnp.stack([p[f"{prefix}{n}"] for n in slots], -1)       # (S, K)
        return jnp.take_along_axis(table, ev.dose_slot.astype(jnp.int32), axis=1)

    lag, f = per_dose("TLAG"), per_dose("F")
    kind = ev.dose_kind
    amt = f * ev.dose_amt
    is_rate_col = (kind == DoseKind.INFUSION) | (kind == DoseKind.CONSTANT_INFUSION)
    rate_col = jnp.where(is_rate_col, ev.dose_rate, 1.0)
    r_par = per_dose("R")
    d_par = per_dose("D")
    rate = jnp.where(is_rate_col, rate_col, 0.0)
    rate = jnp.where((kind == DoseKind.RATE_PARAM) | (
        (kind == DoseKind.CONSTANT_INFUSION) & (ev.dose_rate == -1)), r_par, rate)
    d_safe = jnp.where(kind == DoseKind.DURATION_PARAM, d_par, 1.0)
    rate = jnp.where(kind == DoseKind.DURATION_PARAM, amt / d_safe, rate)
    dur = jnp.where(kind == DoseKind.INFUSION, amt / rate_col, 0.0)
    r_safe = jnp.where(kind == DoseKind.RATE_PARAM, r_par, 1.0)
    dur = jnp.where(kind == DoseKind.RATE_PARAM, amt / r_safe, dur)
    dur = jnp.where(kind == DoseKind.DURATION_PARAM, d_par, dur)
    return {"lag": lag, "amt": amt, "rate": rate, "dur": dur}


def make_predict_fn(model: Model, events: EventArrays, *, method: str = "auto",
                    solver: str = "tsit5", rtol: float = 1e-6, atol=None,
                    max_steps: int = 4096, ss_newton_iter: int = 8,
                    diff_params=None, checkpoints: int | None = None,
                    gradient: str = "adjoint", history: int = 4096) -> PredictFn:
    """Build ``f(params) -> (pred, ok)`` for *model* on *events*.

    Parameters
    ----------
    model : Model
    events : EventArrays
        From :func:`build_events` (numpy arrays: the dose and observation structure is static).
    method : {"auto", "closed_form", "ode", "rodas"}
        ``auto`` uses the closed form for built-in linear structures and the ODE otherwise;
        ``ode`` integrates a built-in structure as an ODE too (for checks and benchmarks);
        ``rodas`` solves a user ODE model with the batched Rodas4 solver of
        :mod:`il2pkpd.solve` (stiff, fast, for fitting the IL-2 model; bolus and RATE > 0
        infusions only, see :mod:`il2pkpd.engine._rodas`).
    solver : str
        diffrax solver for the ODE path: ``tsit5``, ``dopri5``, ``dopri8``, ``kvaerno3``,
        ``kvaerno5``, ``kencarp4`` (stiff: the Kvaerno/KenCarp ones).
    rtol, atol : float
        Step-size controller tolerances; ``atol`` (state units) is one value or one per state
        (default 1e-9 on the diffrax path, the model's own per-state tolerances on the
        ``rodas`` path).
    max_steps : int
        Most steps per interval between events.
    diff_params : sequence of str, optional
        ``rodas`` only: the parameters gradients are needed for (default all); the others get a
        zero gradient and cost nothing (see :func:`il2pkpd.engine._rodas.make_rodas_predict`).
    gradient : {"adjoint", "forward"}
        ``rodas`` only: reverse-mode gradients by the discrete adjoint (default; about 2-3
        solves per gradient whatever the number of parameters) or by one forward-mode pass
        per parameter.
    history : int
        ``rodas`` with the adjoint only: solver iterations stored per subject; a subject that
        needs more gets ``ok`` false (a fit rejects the point rather than spend seconds on it).
    ss_newton_iter : int
        Newton iterations for steady-state (SS=1/2) doses on the ODE path.
    checkpoints : int, optional
        diffrax path: checkpoints of the reverse pass per interval between events (see
        :func:`il2pkpd.engine._ode.make_ode_predict`).

    Returns
    -------
    callable
        ``f(params: dict[str, Array (S,)]) -> (pred (S, O), ok (S,))``, with attribute
        ``solver_path`` (``"closed_form"``, ``"rodas"`` or ``"diffrax"``). Missing parameters
        take their model default (``TLAG<n>`` 0, ``F<n>`` 1); unknown keys are ignored.
        ``pred`` is 0 on padding; ``ok`` is false where an ODE solve failed. Pure JAX: jit,
        grad and vmap apply.
    """
    if method not in ("auto", "closed_form", "ode", "rodas"):
        raise OptionError(f"method={method!r}; use 'auto', 'closed_form', 'ode' or 'rodas'")
    if method == "closed_form" and not model.is_closed_form:
        raise OptionError(f"model {model.name} is an ODE model: it has no closed form; use "
                          "method='auto' or 'ode'")
    needed = needed_parameters(model, events)
    n_subj = events.n_subjects
    kinds = events.kinds_present()
    ev = jax.tree_util.tree_map(jnp.asarray, events)
    use_closed = model.is_closed_form and method != "ode"

    if use_closed:
        def f(params: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
            p = _complete(model, needed, params, n_subj)
            dose = dose_quantities(model, ev, p)
            pred = closed_form_predict(model, ev, p, dose, kinds)
            pred = jnp.where(ev.obs_mask, pred, 0.0)
            ok = jnp.all(jnp.isfinite(pred), axis=1)
            return pred, ok
        f.solver_path = "closed_form"
        return f

    if method == "rodas":
        from il2pkpd.engine._rodas import make_rodas_predict

        rodas_solve = make_rodas_predict(model, events, rtol=rtol,
                                         atol=atol,
                                         max_steps=max(max_steps, 20000),
                                         diff_params=diff_params, gradient=gradient,
                                         history=history)

        def f_rodas(params: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
            p = _complete(model, needed, params, n_subj)
            pred, ok = rodas_solve(p)
            ok = ok & jnp.all(jnp.isfinite(pred), axis=1)
            pred = jnp.where(ev.obs_mask & jnp.isfinite(pred), pred, 0.0)
            return pred, ok
        f_rodas.solver_path = "rodas"
        return f_rodas

    from il2pkpd.engine._ode import make_ode_predict

    solve = make_ode_predict(model, events, solver=solver, rtol=rtol,
                             atol=1e-9 if atol is None else atol,
                             max_steps=max_steps, ss_newton_iter=ss_newton_iter,
                             checkpoints=checkpoints)

    def f_ode(params: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        p = _complete(model, needed, params, n_subj)
        dose = dose_quantities(model, ev, p)
        pred, ok = solve(ev, p, dose)
        ok = ok & jnp.all(jnp.isfinite(pred), axis=1)
        pred = jnp.where(ev.obs_mask & jnp.isfinite(pred), pred, 0.0)
        return pred, ok
    f_ode.solver_path = "diffrax"
    return f_ode


def _params_table(model: Model, needed: tuple[str, ...], params: Any,
                  ids: np.ndarray) -> dict[str, np.ndarray]:
    """Validate user parameters; return name -> (S,) float arrays in subject order."""
    n = len(ids)
    problems: list[str] = []
    values: dict[str, np.ndarray] = {}
    if isinstance(params, pd.DataFrame):
        if "ID" not in params.columns:
            raise ParameterError("the parameter table has no ID column; give one row per "
                                 "subject with ID and one column per parameter")
        dup = params["ID"][params["ID"].duplicated()].tolist()
        if dup:
            raise ParameterError(f"the parameter table repeats ID(s) {dup[:10]}")
        table = params.set_index("ID")
        absent = [i for i in ids.tolist() if i not in table.index]
        if absent:
            raise ParameterError(f"the parameter table has no row for subject ID(s) "
                                 f"{absent[:10]}{' ...' if len(absent) > 10 else ''}")
        given = {c: table.loc[ids, c].to_numpy(dtype=float) for c in table.columns}
    elif isinstance(params, Mapping):
        given = {}
        for k, v in params.items():
            try:
                arr = np.asarray(v, dtype=float)
            except (TypeError, ValueError):
                problems.append(f"  {k}: {v!r} is not a number")
                continue
            if arr.ndim == 0:
                arr = np.full(n, float(arr))
            if arr.shape != (n,):
                problems.append(f"  {k}: expected one value or {n} (one per subject), got "
                                f"shape {arr.shape}")
                continue
            given[k] = arr
    else:
        raise ParameterError(f"parameters must be a dict or a DataFrame, not "
                             f"{type(params).__name__}")
    known = set(model.parameter_names)
    for k in given:
        if k not in known:
            problems.append(f"  {k}: unknown parameter of model {model.name} (parameters: "
                            f"{', '.join(model.parameter_names)})")
    for spec in model.parameters:
        if spec.name in given:
            arr = given[spec.name]
            bad = [i for i, v in zip(ids.tolist(), arr.tolist(), strict=True)
                   if not domain_ok(spec.domain, v)]
            if bad:
                vals = arr[np.isin(ids, bad)][:5].tolist()
                problems.append(f"  {spec.name}: must be {DOMAINS[spec.domain]} "
                                f"({spec.domain}); got {vals} for subject ID(s) {bad[:5]}"
                                f"{' ...' if len(bad) > 5 else ''}")
            values[spec.name] = arr
        elif not spec.auto or (spec.name in needed and spec.default is None):
            problems.append(f"  {spec.name}: missing ({spec.description or 'no description'}"
                            f"{', ' + spec.unit if spec.unit else ''})")
    if problems:
        raise ParameterError(f"bad parameters for model {model.name}:\n" + "\n".join(problems)
                             + "\nGive every declared parameter, in its domain.")
    return values


def _explain_ss_limits(model: Model, events: EventArrays, needed: tuple[str, ...],
                       values: dict[str, np.ndarray], dataset: Any) -> None:
    """Raise a clear error when a failed ODE solve comes from an SS dose beyond the ODE
    path's limits (implied doses pending or infusions running at the SS record time)."""
    from il2pkpd.engine._ode import SS_MAX_OVERLAP, ss_overlaps

    ev = jax.tree_util.tree_map(jnp.asarray, events)
    p = _complete(model, needed, {k: jnp.asarray(v) for k, v in values.items()},
                  events.n_subjects)
    dose = {k: np.asarray(v) for k, v in dose_quantities(model, ev, p).items()}
    kind = np.asarray(events.dose_kind)
    ss = np.asarray(events.dose_mask) & (np.asarray(events.dose_ss) > 0) & (
        kind != DoseKind.CONSTANT_INFUSION)
    ii = np.asarray(events.dose_ii)
    is_inf = np.isin(kind, (DoseKind.INFUSION, DoseKind.RATE_PARAM, DoseKind.DURATION_PARAM))
    _, n_pend, n_run = ss_overlaps(dose["lag"], np.where(is_inf, dose["dur"], 0.0), ii, is_inf,
                                   xp=np)
    bad = ss & ((n_pend > SS_MAX_OVERLAP) | (n_run > SS_MAX_OVERLAP))
    if not bad.any():
        return
    df = dataset if isinstance(dataset, pd.DataFrame) else dataset.df
    lines = df["LINE"].to_numpy() if "LINE" in df.columns else np.arange(len(df)) + 2
    rows = np.asarray(events.dose_row)[bad]
    subj = np.broadcast_to(np.asarray(events.ids)[:, None], bad.shape)[bad]
    where = ", ".join(f"ID {i} line {lines[r]}" for i, r in zip(subj[:5], rows[:5], strict=True))
    raise ParameterError(
        f"steady-state dose(s) at {where}: on the ODE path TLAG and the infusion duration may "
        f"span at most {SS_MAX_OVERLAP} dosing intervals (got TLAG {dose['lag'][bad][0]:g}, "
        f"duration {dose['dur'][bad][0]:g}, II {ii[bad][0]:g}). Use the closed form "
        "(built-in linear models), or replace the SS record by explicit repeated doses (ADDL).")


def predict(model: Model | str, params: Mapping[str, Any] | pd.DataFrame, dataset: Any, *,
            method: str = "auto", **solver_options: Any) -> pd.DataFrame:
    """Population or individual predictions at every observation record.

    Parameters
    ----------
    model : Model or str
        A model or a model name/path for :func:`il2pkpd.models.load_model`.
    params : dict or DataFrame
        ``{name: value}`` for all subjects, or a DataFrame with an ``ID`` column and one column
        per parameter (one row per subject). Every declared parameter is required; ``TLAG<n>``
        and ``F<n>`` default to 0 and 1.
    dataset : il2pkpd.data.Dataset or DataFrame
        The events (doses, observation times).
    method : str
        See :func:`make_predict_fn`; ``**solver_options`` too.

    Returns
    -------
    DataFrame
        ``ID, TIME, CMT, DVID, PRED``, one row per observation record (EVID 0) in file order.

    Raises
    ------
    ParameterError
        Missing, unknown or out-of-domain parameters (all listed).

    Examples
    --------
    >>> import il2pkpd, pandas as pd
    >>> il2pkpd.enable_x64()
    >>> df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 2.0], "AMT": [100.0, 0.0],
    ...                    "EVID": [1, 0]})
    >>> out = predict("one_cmt_iv", {"CL": 5.0, "V": 50.0}, df)
    >>> round(float(out["PRED"][0]), 6) == round(2.0 * math.exp(-0.2), 6)
    True
    """
    if not isinstance(model, Model):
        model = load_model(model)
    events = build_events(dataset, model)
    needed = needed_parameters(model, events)
    values = _params_table(model, needed, params, np.asarray(events.ids))
    f = jax.jit(make_predict_fn(model, events, method=method, **solver_options))
    pred, ok = f({k: jnp.asarray(v) for k, v in values.items()})
    pred, ok = np.asarray(pred), np.asarray(ok)
    if not ok.all() and not (model.is_closed_form and method != "ode"):
        _explain_ss_limits(model, events, needed, values, dataset)
    mask = np.asarray(events.obs_mask)
    rows = np.asarray(events.obs_row)[mask]
    order = np.argsort(rows, kind="stable")
    df = dataset if isinstance(dataset, pd.DataFrame) else dataset.df
    df = df.reset_index(drop=True)
    sub_ok = np.broadcast_to(ok[:, None], mask.shape)[mask][order]
    out = pd.DataFrame({
        "ID": df["ID"].to_numpy()[rows[order]],
        "TIME": df["TIME"].to_numpy(dtype=float)[rows[order]],
        "CMT": (df["CMT"].to_numpy()[rows[order]] if "CMT" in df.columns
                else np.ones(len(rows), dtype=np.int64)),
        "DVID": (df["DVID"].to_numpy()[rows[order]] if "DVID" in df.columns
                 else np.ones(len(rows), dtype=np.int64)),
        "PRED": np.where(sub_ok, pred[mask][order], math.nan),
    })
    return out
