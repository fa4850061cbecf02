"""Flat-array form of an ODE model for the batched solvers.

A user ODE model (``rhs(t, y, p)`` on dicts, see docs/ARCHITECTURE.md) is converted once into
functions on flat vectors, ``rhs(y, p) -> dy`` with ``y`` of shape ``(n_states,)`` and ``p`` of
shape ``(n_params,)``, plus the linear solver used by the Rosenbrock stages. The generic linear
solver forms the Jacobian with ``jax.jacfwd`` and factorises ``1/(h*gamma) - J`` by dense LU;
a model may supply a structured solver instead (``il2pkpd.solve.il2`` does for IL-2).

Only autonomous models are supported by the fast solver: ``rhs`` is called with ``t = 0``
(dose inputs are handled as events and piecewise-constant infusion rates). A model whose
right-hand side depends on time needs the engine's general solver.
"""

from __future__ import annotations

import importlib.util
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from il2pkpd.errors import ModelFileError

__all__ = ["OdeSystem", "DenseLU", "from_functions", "from_model_file"]


class DenseLU:
    """Generic linear solver: ``jax.jacfwd`` Jacobian and dense LU of ``1/(h*gamma) - J``."""

    def prepare(self, rhs, y, p, lam):
        """Factorise ``lam*I - J(y)``; ``rhs(y, p)`` is the flat right-hand side."""
        jac = jax.jacfwd(rhs)(y, p)
        w = lam * jnp.eye(y.shape[0], dtype=y.dtype) - jac
        return jsl.lu_factor(w)

    def solve(self, factor, b):
        """Solve with the factorisation from :meth:`prepare`."""
        return jsl.lu_solve(factor, b)


@dataclass(frozen=True, eq=False)
class OdeSystem:
    """An autonomous ODE model on flat arrays.

    Parameters
    ----------
    name : str
        Model name.
    state_names, param_names, output_names : tuple of str
        Names in the order of the flat vectors.
    rhs : callable
        ``rhs(y, p) -> dy/dt``, arrays ``(n_states,)``, ``(n_params,)`` -> ``(n_states,)``.
    outputs : callable
        ``outputs(y, p) -> (n_outputs,)``.
    initial : callable
        ``initial(p) -> (n_states,)``.
    compartments : dict[int, int]
        NONMEM compartment number -> state index (dose targets).
    linear_solver : object
        Has ``prepare(rhs, y, p, lam)`` and ``solve(factor, b)``; :class:`DenseLU` by default.
    atol : tuple of float, optional
        Default absolute tolerance per state (state units); ``None`` uses 1e-10 everywhere.
    """

    name: str
    state_names: tuple[str, ...]
    param_names: tuple[str, ...]
    output_names: tuple[str, ...]
    rhs: Callable
    outputs: Callable
    initial: Callable
    compartments: dict[int, int] = field(default_factory=dict)
    linear_solver: object = field(default_factory=DenseLU)
    atol: tuple[float, ...] | None = None
    defaults: dict[str, float] = field(default_factory=dict)

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    def param_index(self, name: str) -> int | None:
        """Index of a parameter in the flat vector, ``None`` when the model has none."""
        try:
            return self.param_names.index(name)
        except ValueError:
            return None


def from_functions(rhs, outputs, initial, *, state_names: Sequence[str],
                   param_names: Sequence[str], output_names: Sequence[str] | None = None,
                   compartments: dict[int, str] | None = None, name: str = "ode",
                   linear_solver=None, atol=None, defaults=None) -> OdeSystem:
    """Wrap dict-based model functions (the user-ODE interface) as an :class:`OdeSystem`.

    Parameters
    ----------
    rhs, outputs, initial : callable
        ``rhs(t, y, p)``, ``outputs(y, p)`` and ``initial(p)`` (may be ``None``) on dicts.
    state_names, param_names : sequence of str
        Flat orders. ``output_names`` defaults to the keys ``outputs`` returns, in order.
    compartments : dict[int, str], optional
        NONMEM compartment number -> state name; defaults to states numbered from 1.

    Returns
    -------
    OdeSystem
    """
    state_names = tuple(state_names)
    param_names = tuple(param_names)

    def as_dict(vec, names):
        return {k: vec[i] for i, k in enumerate(names)}

    def flat_rhs(y, p):
        d = rhs(0.0, as_dict(y, state_names), as_dict(p, param_names))
        return jnp.stack([jnp.asarray(d.get(s, 0.0), dtype=y.dtype) * jnp.ones((), y.dtype)
                          for s in state_names])

    if output_names is None:
        probe = outputs({s: jnp.zeros(()) for s in state_names},
                        {k: jnp.ones(()) for k in param_names})
        output_names = tuple(probe)
    output_names = tuple(output_names)

    def flat_outputs(y, p):
        d = outputs(as_dict(y, state_names), as_dict(p, param_names))
        return jnp.stack([jnp.asarray(d[o], dtype=y.dtype) for o in output_names])

    def flat_initial(p):
        d = initial(as_dict(p, param_names)) if initial is not None else {}
        return jnp.stack([jnp.asarray(d.get(s, 0.0), dtype=p.dtype) * jnp.ones((), p.dtype)
                          for s in state_names])

    if compartments is None:
        cmts = {i + 1: i for i in range(len(state_names))}
    else:
        cmts = {int(k): state_names.index(v) for k, v in compartments.items()}
    return OdeSystem(name=name, state_names=state_names, param_names=param_names,
                     output_names=output_names, rhs=flat_rhs, outputs=flat_outputs,
                     initial=flat_initial, compartments=cmts,
                     linear_solver=linear_solver or DenseLU(),
                     atol=None if atol is None else tuple(float(a) for a in atol),
                     defaults=dict(defaults or {}))


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"il2pkpd_user_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"cannot import the model's Python file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def from_model_file(path, *, linear_solver=None, atol=None) -> OdeSystem:
    """Read a user-ODE model (TOML + Python file, docs/ARCHITECTURE.md) as an :class:`OdeSystem`.

    Parameters
    ----------
    path : str or Path
        The TOML file; ``structure = "ode:<file>.py"`` names the Python file beside it.

    Returns
    -------
    OdeSystem
        Parameters in the TOML order (``F<n>``/``TLAG<n>`` as declared there); defaults in
        ``OdeSystem.defaults``.
    """
    path = Path(path)
    with path.open("rb") as fh:
        spec = tomllib.load(fh)
    model = spec.get("model", {})
    structure = str(model.get("structure", ""))
    if not structure.startswith("ode:"):
        raise ModelFileError(f"{path}: [model] structure = {structure!r} is not a user ODE "
                             "model ('ode:<file>.py'); the fast solver needs one")
    module = _load_module(path.parent / structure[4:])
    states = spec.get("states", {}).get("names")
    if not states:
        raise ModelFileError(f"{path}: [states] names = [...] is missing")
    params = spec.get("parameters", {})
    outputs = spec.get("outputs", {})
    output_names = [outputs[k]["name"] for k in sorted(outputs, key=int)]
    return from_functions(module.rhs, module.outputs, getattr(module, "initial", None),
                          state_names=states, param_names=list(params),
                          output_names=output_names, compartments=spec.get("compartments"),
                          name=model.get("name", path.stem), linear_solver=linear_solver,
                          atol=atol,
                          defaults={k: float(v["default"]) for k, v in params.items()
                                    if "default" in v})
