"""Fast batched stiff solvers for virtual populations of ODE models (IL-2 in particular).

Public API
----------
- :func:`solve_population` (Rodas4, per-patient adaptive steps in a vmapped while loop, exact
  stops at dose times, dense output at the output times) with :class:`Doses` and
  :class:`PopulationSolution`;
- :class:`OdeSystem`, :func:`from_model_file`, :func:`from_functions`: user ODE models on flat
  arrays; the generic path uses a ``jax.jacfwd`` Jacobian and dense LU (:class:`DenseLU`);
- :func:`il2pkpd.solve.il2.il2_system`: the canonical IL-2 model with a structured linear solve
  (the fast path).
"""

from il2pkpd.solve.population import (
    STATUS,
    Doses,
    PopulationSolution,
    make_population_fn,
    param_matrix,
    solve_population,
)
from il2pkpd.solve.system import DenseLU, OdeSystem, from_functions, from_model_file

__all__ = [
    "STATUS",
    "Doses",
    "PopulationSolution",
    "make_population_fn",
    "param_matrix",
    "solve_population",
    "DenseLU",
    "OdeSystem",
    "from_functions",
    "from_model_file",
]
