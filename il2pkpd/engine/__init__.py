"""NONMEM-compatible dosing events, closed-form linear models and ODE integration.

``build_events(dataset, model)`` turns a dataset into padded per-subject arrays (ADDL
expanded, resets and steady state resolved into epochs); ``make_predict_fn(model, events)``
returns a pure JAX function of the parameters (jit/grad/vmap friendly); ``predict`` is the
user-facing convenience on top of both.
"""

from il2pkpd.engine._events import DoseKind, EventArrays, build_events
from il2pkpd.engine._predict import make_predict_fn, needed_parameters, predict

__all__ = ["build_events", "EventArrays", "DoseKind", "make_predict_fn", "predict",
           "needed_parameters"]
