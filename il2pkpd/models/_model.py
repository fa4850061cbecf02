"""Immutable descriptions of a structural model: parameters, outputs, compartments."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["ParameterSpec", "OutputSpec", "UserODE", "Model", "DOMAINS", "STRUCTURES"]

#: Allowed parameter domains and the test each value must pass.
DOMAINS: Mapping[str, str] = MappingProxyType({
    "positive": "> 0",
    "nonnegative": ">= 0",
    "unit_interval": "between 0 and 1",
    "real": "finite",
})

#: Built-in closed-form structures and their structural parameter names (without depot).
STRUCTURES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "one_cmt": ("CL", "V"),
    "two_cmt": ("CL", "V1", "Q", "V2"),
    "three_cmt": ("CL", "V1", "Q2", "V2", "Q3", "V3"),
})

#: State names of the built-in structures, in ODE order (depot first when present).
BUILTIN_STATES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "one_cmt": ("central",),
    "two_cmt": ("central", "peripheral"),
    "three_cmt": ("central", "peripheral1", "peripheral2"),
})


def domain_ok(domain: str, value: float) -> bool:
    """Whether *value* lies in *domain* (one of :data:`DOMAINS`)."""
    import math

    if not math.isfinite(value):
        return False
    if domain == "positive":
        return value > 0
    if domain == "nonnegative":
        return value >= 0
    if domain == "unit_interval":
        return 0 <= value <= 1
    return True


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One model parameter.

    Parameters
    ----------
    name : str
        Pharmacometric name (``CL``, ``V1``, ``TLAG1``).
    unit : str
        Unit text (``"L/h"``); empty when dimensionless.
    default : float or None
        Default value; ``None`` when the parameter has none (it must then be given).
    domain : str
        ``positive``, ``nonnegative``, ``unit_interval`` or ``real``.
    description : str
        Human-readable meaning.
    prior : dict or None
        The raw ``prior`` table of the model file, read by :mod:`il2pkpd.inference`.
    auto : bool
        True for lag, bioavailability, rate and duration parameters (``TLAG<n>``, ``F<n>``,
        ``R<n>``, ``D<n>``) that the loader added because the file did not declare them.
    """

    name: str
    unit: str = ""
    default: float | None = None
    domain: str = "positive"
    description: str = ""
    prior: Mapping[str, Any] | None = None
    auto: bool = False


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One observed output, keyed by DVID.

    Parameters
    ----------
    dvid : int
        The DVID value of observation records of this output.
    name : str
        Output name (the key returned by a user ODE file's ``outputs``).
    unit : str
        Unit text (``"mg/L"``).
    cmt : int or None
        Observation CMT that maps to this output when the dataset has no DVID column.
    description : str
        Human-readable meaning.
    """

    dvid: int
    name: str
    unit: str = ""
    cmt: int | None = None
    description: str = ""


@dataclasses.dataclass(frozen=True)
class UserODE:
    """The functions of a user ODE file (all written in ``jax.numpy``).

    ``rhs(t, y, p) -> dict`` (state -> dy/dt; the engine adds infusion inputs),
    ``outputs(y, p) -> dict`` (output name -> value), and optionally
    ``initial(p) -> dict`` (state -> initial amount; other states start at 0).
    """

    rhs: Callable[..., Mapping[str, Any]]
    outputs: Callable[..., Mapping[str, Any]]
    initial: Callable[..., Mapping[str, Any]] | None
    path: Path


@dataclasses.dataclass(frozen=True, eq=False)   # identity hash: usable as a static jit arg
class Model:
    """A structural model read from a model file (see :func:`il2pkpd.models.load_model`).

    Parameters
    ----------
    name, description : str
        From the ``[model]`` table.
    structure : str
        ``one_cmt``, ``two_cmt``, ``three_cmt`` (closed forms) or ``ode`` (a user ODE file).
    depot : bool
        First-order absorption compartment (closed forms only).
    time_unit, amount_unit : str
        Units of TIME and AMT the parameters are expressed in.
    parameters : tuple of ParameterSpec
        Declared parameters, then the automatically added ``TLAG<n>``/``F<n>``/``R<n>``/``D<n>``.
    states : tuple of str
        State names in ODE order.
    compartments : Mapping[int, str]
        NONMEM compartment number -> state name.
    dosing_cmts : tuple of int
        Compartments that may receive doses.
    outputs : tuple of OutputSpec
        Observed outputs, in DVID order.
    ode : UserODE or None
        The user ODE functions (``structure == "ode"``).
    fit_spec : Mapping
        Raw ``[population]``, ``[residual]``, ``[covariates]`` tables for the inference stage.
    path : Path or None
        The model file.
    """

    name: str
    description: str
    structure: str
    depot: bool
    time_unit: str
    amount_unit: str
    parameters: tuple[ParameterSpec, ...]
    states: tuple[str, ...]
    compartments: Mapping[int, str]
    dosing_cmts: tuple[int, ...]
    outputs: tuple[OutputSpec, ...]
    ode: UserODE | None = None
    fit_spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None

    # -- convenience -------------------------------------------------------------------------
    @property
    def is_closed_form(self) -> bool:
        """True for the built-in linear structures (solved analytically)."""
        return self.structure in STRUCTURES

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """All parameter names, declared first."""
        return tuple(p.name for p in self.parameters)

    @property
    def required_parameters(self) -> tuple[str, ...]:
        """Declared (non-automatic) parameter names: :func:`il2pkpd.predict` needs them all."""
        return tuple(p.name for p in self.parameters if not p.auto)

    def parameter(self, name: str) -> ParameterSpec:
        """The :class:`ParameterSpec` called *name* (``KeyError`` when absent)."""
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, float]:
        """Parameter name -> default value, for parameters that have one."""
        return {p.name: p.default for p in self.parameters if p.default is not None}

    def state_index(self, cmt: int) -> int:
        """Index into :attr:`states` of NONMEM compartment *cmt*."""
        return self.states.index(self.compartments[cmt])

    @property
    def central_cmt(self) -> int:
        """Compartment number of the state named ``central`` (closed forms)."""
        for n, s in self.compartments.items():
            if s == "central":
                return n
        raise KeyError("central")

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"Model(name={self.name!r}, structure={self.structure!r}, "
                f"parameters={list(self.required_parameters)}, outputs="
                f"{[o.name for o in self.outputs]})")
