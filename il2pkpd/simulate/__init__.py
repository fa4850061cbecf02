"""Regimens, virtual populations and exposure/response metrics.

- :func:`parse_regimen` reads the regimen language (``"1 MIU SC daily x5"``,
  ``"600000 IU/kg IV 15min q8h x14 hold 5,6"``; grammar in :mod:`il2pkpd.simulate.regimen`);
- :func:`regimen_to_dataset` turns a regimen into the canonical event table (a Dataset);
- :func:`default_population` / :func:`posterior_population` draw virtual patients;
- :func:`simulate` solves the model for every regimen and patient and summarises the metrics
  (:data:`METRICS`) and target attainment (:func:`parse_target`).
"""

from il2pkpd.simulate.dosing import DoseSchedule, dose_schedule, regimen_to_dataset
from il2pkpd.simulate.metrics import METRICS, Target, parse_target
from il2pkpd.simulate.population import (
    Population,
    default_population,
    posterior_population,
    sample_covariates,
)
from il2pkpd.simulate.regimen import Phase, Regimen, Route, parse_regimen
from il2pkpd.simulate.runner import SimulationResult, simulate, simulate_population

__all__ = [
    "METRICS",
    "DoseSchedule",
    "Phase",
    "Population",
    "Regimen",
    "Route",
    "SimulationResult",
    "Target",
    "default_population",
    "dose_schedule",
    "parse_regimen",
    "parse_target",
    "posterior_population",
    "regimen_to_dataset",
    "sample_covariates",
    "simulate",
    "simulate_population",
]
