"""Bayesian population fitting with NumPyro: priors, IIV, covariates, residual error, M3 BLQ.

The population specification (which parameters are estimated, their priors, IIV blocks,
covariate effects and residual error models) is read from the model file; see
:mod:`il2pkpd.inference.spec` for the schema. :func:`fit` runs NUTS, MAP or a Laplace
approximation and returns a :class:`FitResult` (ArviZ DataTree, summary, per-subject estimates).
"""

from il2pkpd.inference._fit import (
    METHODS,
    fit,
    fit_population_model,
    prepare,
    shard_events,
    to_datatree,
)
from il2pkpd.inference.likelihood import ResidualError, residual_log_density
from il2pkpd.inference.model import PopulationModel, build_population_model
from il2pkpd.inference.priors import Prior, parse_prior
from il2pkpd.inference.results import FitResult
from il2pkpd.inference.samplers import MapResult, run_laplace, run_map, run_nuts, run_svi
from il2pkpd.inference.spec import PopulationSpec, build_spec

__all__ = [
    "fit",
    "fit_population_model",
    "prepare",
    "METHODS",
    "FitResult",
    "build_population_model",
    "PopulationModel",
    "build_spec",
    "PopulationSpec",
    "Prior",
    "parse_prior",
    "ResidualError",
    "residual_log_density",
    "run_nuts",
    "run_map",
    "run_laplace",
    "run_svi",
    "MapResult",
    "shard_events",
    "to_datatree",
]
