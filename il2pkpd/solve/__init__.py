"""Fast batched stiff solvers for virtual populations of ODE models (IL-2 in particular).

Strategy (measured in ``benchmarks/bench_il2_solver.py``):

- Rodas4 (order 4(3), L-stable, stiffly accurate Rosenbrock; Hairer & Wanner) with its
  order-3 continuous extension: outputs come from the interpolant, so output times do not
  cut steps (at most ``outputs_per_step`` of them fall in one step);
- each patient has its own adaptive step size; one batch-level ``lax.while_loop`` advances
  ``lanes`` patients together (``solve_patient`` is a ``custom_vmap``: under ``jax.vmap`` it
  runs this loop, so an iteration's cost does not grow with the number of output times,
  which are written by one scatter per iteration, one row of outputs per output time); a
  lane whose patient has finished takes the next waiting one (refilled when 1/8 of the lanes
  are idle), so a chunk does not wait for its slowest patient; the step size is carried
  across output times and doses; the loop stops
  exactly at each (lagged) dose time and infusion start/stop, which are known in advance, and
  applies the dose there (``F<n>``, ``TLAG<n>`` per patient);
- states are tuples of scalars, so under vmap every operation is an element-wise loop over the
  chunk; ``optimization_barrier`` between stages stops XLA from re-computing earlier stages
  inside later fusions (3x faster solves, and it makes forward-mode derivatives affordable);
- linear algebra: the generic path (any user ODE model, :class:`SparseLU`, the default)
  finds the Jacobian's structural non-zeros by tracing the model once and factorises
  ``1/(h*gamma) - J`` entry by entry without pivoting (a tiny pivot fails the step's error
  test and the step shrinks); :class:`DenseLU` (``jax.jacfwd`` and dense LU) remains; the IL-2
  fast path (:func:`il2pkpd.solve.il2.il2_system`) solves the same systems exactly by
  eliminating the model's block structure (about 40 flops instead of an 11x11 LU), and
  evaluates ``C**HILL`` with a vectorisable power (:mod:`il2pkpd.solve._fastmath`: float64
  ``exp``/``log`` are scalar library calls in XLA on CPU);
- chunks of patients go to the local devices in turn (``solve_population(devices=)``): on
  CPU, ``jax_num_cpu_devices`` set to the number of cores at start-up uses every core;
- precision: float64 by default; ``dtype="float32"`` (``il2pkpd simulate --precision single``)
  runs the whole loop in single precision, twice the SIMD width and half the memory traffic:
  1.8-1.9x the float64 rate at the same rtol, with rounding adding ~20% to the error at rtol
  2e-5 (fits keep float64).

Only autonomous right-hand sides are supported (the user ``rhs`` is called with ``t = 0``);
doses are events, infusions piecewise-constant inputs. Derivatives: forward mode
(``jax.jvp``/``jax.jacfwd``) through :func:`make_population_fn` (the adaptive loop is a
``while_loop``, which JAX cannot reverse-differentiate), and reverse mode through
:func:`make_population_vjp_fn`, a discrete adjoint that stores the forward iterations and
replays them backwards (the exact derivative of the discrete solution).

Public API
----------
- :func:`solve_population` with :class:`Doses` -> :class:`PopulationSolution`
  (``outputs`` (n, n_outputs, n_times), ``status``, ``n_steps``, ``n_rejected``);
- :func:`make_population_fn`: the same as a pure JAX function of a parameter matrix;
  :func:`make_population_vjp_fn`: the same with a reverse-mode (adjoint) derivative;
- :class:`OdeSystem`, :func:`from_model_file`, :func:`from_functions`, :class:`DenseLU`,
  :class:`SparseLU`,
  :func:`param_matrix`, ``STATUS``.
"""

from il2pkpd.solve.population import (
    STATUS,
    Doses,
    PopulationSolution,
    make_population_fn,
    make_population_vjp_fn,
    param_matrix,
    solve_population,
)
from il2pkpd.solve.system import DenseLU, OdeSystem, SparseLU, from_functions, from_model_file

__all__ = [
    "STATUS",
    "Doses",
    "PopulationSolution",
    "make_population_fn",
    "make_population_vjp_fn",
    "param_matrix",
    "solve_population",
    "DenseLU",
    "SparseLU",
    "OdeSystem",
    "from_functions",
    "from_model_file",
]
