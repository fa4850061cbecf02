"""Flat-array form of an ODE model for the batched solvers.

A user ODE model (``rhs(t, y, p)`` on dicts, see docs/ARCHITECTURE.md) is wrapped once with
its state/parameter orders and the linear solver used by the Rosenbrock stages. The generic linear
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

__all__ = ["OdeSystem", "DenseLU", "SparseLU", "jacobian_pattern", "from_functions",
           "from_model_file"]


class DenseLU:
    """Generic linear solver: ``jax.jacfwd`` Jacobian and dense LU of ``1/(h*gamma) - J``."""

    def prepare(self, system, y, p, lam):
        """Factorise ``lam*I - J(y)``; ``y`` a tuple of state scalars, ``p`` a dict."""
        yv = jnp.stack(y)
        jac = jax.jacfwd(lambda v: jnp.stack(system.rhs_t(tuple(v), p)))(yv)
        w = lam * jnp.eye(yv.shape[0], dtype=yv.dtype) - jac
        return jsl.lu_factor(w)

    def solve(self, factor, b):
        """Solve with the factorisation from :meth:`prepare` (``b`` a tuple)."""
        x = jsl.lu_solve(factor, jnp.stack(b))
        return tuple(x[i] for i in range(len(b)))


def _jaxpr_dependencies(jaxpr, in_sets):
    """For each output of *jaxpr*, the union of the input sets it may depend on.

    Conservative: every equation's outputs depend on all of its inputs (sub-jaxprs of
    ``pjit``, ``custom_jvp_call``, ``cond``... are not opened), so the result is a superset
    of the true dependencies, which is what a structural sparsity pattern must be.
    """
    from jax.extend import core as jcore

    env = dict(zip(jaxpr.invars, in_sets, strict=True))

    def read(v):
        if isinstance(v, jcore.Literal):
            return frozenset()
        return env.get(v, frozenset())

    for eqn in jaxpr.eqns:
        dep = frozenset().union(*(read(v) for v in eqn.invars))
        for v in eqn.outvars:
            env[v] = dep
    return [read(v) for v in jaxpr.outvars]


def jacobian_pattern(system) -> tuple[tuple[int, ...], ...]:
    """Structural sparsity of the Jacobian of ``system``'s right-hand side.

    Returns
    -------
    tuple of tuple of int
        For each state ``i``, the sorted state indices ``j`` whose value ``d f_i / d y_j``
        can be non-zero, from a dependency analysis of the traced right-hand side (a superset
        of the non-zeros at every point: branches such as ``jnp.minimum`` keep both sides).
    """
    cached = _PATTERNS.get(id(system))
    if cached is not None and cached[0] is system:
        return cached[1]
    n = system.n_states
    dtype = jnp.zeros(()).dtype
    y_abs = tuple(jax.ShapeDtypeStruct((), dtype) for _ in range(n))
    p_abs = {k: jax.ShapeDtypeStruct((), dtype) for k in system.param_names}

    def f(y, p):
        return system.rhs_t(y, system.derive(dict(p)) if system.derive is not None else p)

    closed = jax.make_jaxpr(f)(y_abs, p_abs)
    n_p = len(jax.tree.leaves(p_abs))
    in_sets = [frozenset((j,)) for j in range(n)] + [frozenset()] * n_p
    deps = _jaxpr_dependencies(closed.jaxpr, in_sets)
    pattern = tuple(tuple(sorted(d)) for d in deps)
    _PATTERNS[id(system)] = (system, pattern)
    return pattern


_PATTERNS: dict[int, tuple[object, tuple]] = {}


class SparseLU:
    """Generic linear solver over the Jacobian's structural non-zeros (unrolled, no pivoting).

    The Jacobian entries that the sparsity pattern (:func:`jacobian_pattern`) allows are
    formed by one forward-mode pass per state (``jax.jvp`` on the tuple of state scalars), and
    ``lam*I - J`` is factorised by Gaussian elimination in the model's state order with the
    fill-in worked out at trace time: every operation is a scalar one, so under ``vmap`` the
    whole factorisation and each solve are a few element-wise loops over the patients (no
    LAPACK call per step, cheap forward-mode derivatives). Compartmental models need few
    entries (the Friberg model: 17 of 64, two fill-ins).

    No pivoting: ``lam*I - J`` with ``lam = 1/(h*gamma)`` is diagonally dominant for small
    steps; for large steps a near-zero pivot makes the stage values non-finite or inaccurate,
    the step's error estimate rejects it and the step size falls until the matrix is
    dominated by ``lam*I`` again.
    """

    def __init__(self, pattern=None):
        self.pattern = None if pattern is None else tuple(tuple(sorted(r)) for r in pattern)

    def _structure(self, system):
        pattern = self.pattern if self.pattern is not None else jacobian_pattern(system)
        n = system.n_states
        nz = {(i, j) for i in range(n) for j in pattern[i]} | {(i, i) for i in range(n)}
        # symbolic elimination: the entries of L (below) and U (on and above the diagonal)
        entries = set(nz)
        for k in range(n):
            rows = [i for i in range(k + 1, n) if (i, k) in entries]
            cols = [j for j in range(k + 1, n) if (k, j) in entries]
            for i in rows:
                for j in cols:
                    entries.add((i, j))
        return pattern, entries

    def prepare(self, system, y, p, lam):
        """Factorise ``lam*I - J(y)``; ``y`` a tuple of state scalars, ``p`` a dict."""
        n = len(y)
        pattern, entries = self._structure(system)
        cols_needed = sorted({j for row in pattern for j in row})
        jac = {}
        for j in cols_needed:
            def f_j(yj, j=j):
                return system.rhs_t(y[:j] + (yj,) + y[j + 1:], p)

            _, col = jax.jvp(f_j, (y[j],), (jnp.ones_like(y[j]),))
            for i in range(n):
                if j in pattern[i]:
                    jac[(i, j)] = col[i]
        w = {}
        for (i, j) in entries:
            v = -jac[(i, j)] if (i, j) in jac else None
            if i == j:
                v = lam if v is None else lam + v
            w[(i, j)] = v        # None: a fill-in entry, zero before elimination
        inv_piv = [None] * n
        low = {}
        for k in range(n):
            inv_piv[k] = 1.0 / w[(k, k)]
            cols = [j for j in range(k + 1, n) if (k, j) in w and w[(k, j)] is not None]
            for i in range(k + 1, n):
                if (i, k) not in w or w[(i, k)] is None:
                    continue
                lik = w[(i, k)] * inv_piv[k]
                low[(i, k)] = lik
                for j in cols:
                    upd = lik * w[(k, j)]
                    w[(i, j)] = -upd if w[(i, j)] is None else w[(i, j)] - upd
        up = {(i, j): v for (i, j), v in w.items() if j > i and v is not None}
        return {"low": low, "up": up, "inv_piv": tuple(inv_piv)}

    def solve(self, factor, b):
        """Solve with the factorisation from :meth:`prepare` (``b`` a tuple)."""
        n = len(b)
        low, up, inv_piv = factor["low"], factor["up"], factor["inv_piv"]
        z = list(b)
        for i in range(n):
            for k in range(i):
                if (i, k) in low:
                    z[i] = z[i] - low[(i, k)] * z[k]
        x = [None] * n
        for i in reversed(range(n)):
            acc = z[i]
            for j in range(i + 1, n):
                if (i, j) in up:
                    acc = acc - up[(i, j)] * x[j]
            x[i] = acc * inv_piv[i]
        return tuple(x)


@dataclass(frozen=True, eq=False)
class OdeSystem:
    """An autonomous ODE model for the batched solvers.

    The model functions are the user-ODE ones (dicts of scalars); the solver works on tuples
    of state scalars (which vmap into one array per state, so every operation is an
    element-wise loop over patients) and flat vectors where a matrix is needed.

    Parameters
    ----------
    name : str
        Model name.
    state_names, param_names, output_names : tuple of str
        Names in the order of the flat vectors.
    f_rhs : callable
        ``rhs(t, y, p) -> dict`` (dicts state/parameter -> scalar); called with ``t = 0``.
    f_outputs : callable
        ``outputs(y, p) -> dict`` output name -> value.
    f_initial : callable or None
        ``initial(p) -> dict`` state -> initial value (others 0).
    compartments : dict[int, int]
        NONMEM compartment number -> state index (dose targets).
    linear_solver : object
        Has ``prepare(system, y, p, lam)`` and ``solve(factor, b)``; :class:`DenseLU` by
        default.
    atol : tuple of float, optional
        Default absolute tolerance per state (state units); ``None`` uses 1e-10 everywhere.
    defaults : dict[str, float]
        Default parameter values.
    derive : callable, optional
        ``derive(p) -> dict``: parameter-only quantities added to the parameter dict once per
        patient, before the time loop (a fast path's ``f_rhs`` and linear solver may use them).
    """

    name: str
    state_names: tuple[str, ...]
    param_names: tuple[str, ...]
    output_names: tuple[str, ...]
    f_rhs: Callable
    f_outputs: Callable
    f_initial: Callable | None
    compartments: dict[int, int] = field(default_factory=dict)
    linear_solver: object = field(default_factory=DenseLU)
    atol: tuple[float, ...] | None = None
    defaults: dict[str, float] = field(default_factory=dict)
    derive: Callable | None = None

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    def param_index(self, name: str) -> int | None:
        """Index of a parameter in the flat vector, ``None`` when the model has none."""
        try:
            return self.param_names.index(name)
        except ValueError:
            return None

    def param_dict(self, p) -> dict:
        """Flat parameter vector (n_params,) -> dict name -> scalar (plus ``derive``'s)."""
        d = {k: p[i] for i, k in enumerate(self.param_names)}
        return self.derive(d) if self.derive is not None else d

    def rhs_t(self, y: tuple, p: dict) -> tuple:
        """Right-hand side on a tuple of state scalars."""
        d = self.f_rhs(0.0, dict(zip(self.state_names, y, strict=True)), p)
        zero = jnp.zeros_like(y[0])   # the state's dtype (model constants must not promote)
        return tuple(zero + jnp.asarray(d[s], zero.dtype) if s in d else zero
                     for s in self.state_names)

    def outputs_t(self, y: tuple, p: dict) -> tuple:
        """Outputs on a tuple of state scalars."""
        d = self.f_outputs(dict(zip(self.state_names, y, strict=True)), p)
        dtype = jnp.result_type(y[0])
        return tuple(jnp.asarray(d[o], dtype) for o in self.output_names)

    def initial_t(self, p: dict) -> tuple:
        """Initial state as a tuple of scalars."""
        d = self.f_initial(p) if self.f_initial is not None else {}
        zero = jnp.zeros_like(p[self.param_names[0]])
        return tuple(zero + jnp.asarray(d[s], zero.dtype) if s in d else zero
                     for s in self.state_names)

    def rhs(self, y, p):
        """Flat right-hand side: ``y`` (n_states,), ``p`` (n_params,) -> (n_states,)."""
        return jnp.stack(self.rhs_t(tuple(y[i] for i in range(self.n_states)),
                                    self.param_dict(p)))

    def outputs(self, y, p):
        """Flat outputs: ``y`` (n_states,), ``p`` (n_params,) -> (n_outputs,)."""
        return jnp.stack(self.outputs_t(tuple(y[i] for i in range(self.n_states)),
                                        self.param_dict(p)))

    def initial(self, p):
        """Flat initial state (n_states,)."""
        return jnp.stack(self.initial_t(self.param_dict(p)))


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
    if output_names is None:
        probe = outputs({s: jnp.zeros(()) for s in state_names},
                        {k: jnp.ones(()) for k in param_names})
        output_names = tuple(probe)
    if compartments is None:
        cmts = {i + 1: i for i in range(len(state_names))}
    else:
        cmts = {int(k): state_names.index(v) for k, v in compartments.items()}
    return OdeSystem(name=name, state_names=state_names, param_names=param_names,
                     output_names=tuple(output_names), f_rhs=rhs, f_outputs=outputs,
                     f_initial=initial, compartments=cmts,
                     linear_solver=linear_solver or SparseLU(),
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
