"""il2pkpd: Bayesian PK/PD modelling of recombinant interleukin-2 with JAX and NumPyro."""

from il2pkpd._config import enable_x64
from il2pkpd._version import __version__
from il2pkpd.errors import (
    DatasetError,
    InputError,
    ModelFileError,
    OptionError,
    ParameterError,
    RegimenError,
    UnitError,
)

__all__ = [
    "__version__",
    "enable_x64",
    "InputError",
    "DatasetError",
    "ModelFileError",
    "ParameterError",
    "RegimenError",
    "UnitError",
    "OptionError",
    "predict",
]


def __getattr__(name: str):
    # lazy: importing il2pkpd stays cheap (no JAX) until the engine is used
    if name == "predict":
        from il2pkpd.engine import predict

        return predict
    raise AttributeError(f"module 'il2pkpd' has no attribute {name!r}")
