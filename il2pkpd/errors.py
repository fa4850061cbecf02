"""Exceptions raised for bad user input.

Every error a user can cause by their input (a dataset, a model file, a parameter file, a
regimen string, an option) is an :class:`InputError`. The CLI turns these into a message and
exit status 2; no Python traceback reaches the user. Internal bugs stay ordinary exceptions.
"""

from __future__ import annotations

import pandas as pd

__all__ = [
    "InputError",
    "DatasetError",
    "ModelFileError",
    "ParameterError",
    "RegimenError",
    "UnitError",
    "OptionError",
    "FitError",
]


class InputError(Exception):
    """Bad user input. ``str(err)`` is a complete, user-facing message.

    Parameters
    ----------
    message : str
        What is wrong, where, what was allowed and how to fix it.
    violations : pandas.DataFrame, optional
        A table of every problem found (for datasets: columns ``rule, column, ID, lines,
        message``), reported all at once.
    """

    def __init__(self, message: str, violations: pd.DataFrame | None = None):
        super().__init__(message)
        self.violations = violations

    def render(self) -> str:
        """The message, followed by the violation table when there is one."""
        text = str(self)
        if self.violations is not None and len(self.violations):
            with pd.option_context("display.max_rows", 500, "display.max_colwidth", 120,
                                   "display.width", 200):
                text += "\n" + self.violations.to_string(index=False)
        return text


class DatasetError(InputError):
    """A dataset that cannot be used as it is."""


class ModelFileError(InputError):
    """A model file (TOML or its Python ODE file) that is malformed."""


class ParameterError(InputError):
    """Parameter values that are missing, unknown or out of their domain."""


class RegimenError(InputError):
    """A regimen text that does not parse; the message shows the position."""


class UnitError(InputError):
    """Units that are unknown or incompatible with what is expected."""


class OptionError(InputError):
    """An option value (CLI or API keyword) outside what is allowed."""


class FitError(InputError):
    """A fit that cannot proceed with this model, data and priors (for example a log density
    that is not finite at the starting point); the message says what to change."""
