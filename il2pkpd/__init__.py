"""il2pkpd: Bayesian PK/PD modelling of recombinant interleukin-2 with JAX and NumPyro.

The public API, by stage (see docs/ARCHITECTURE.md)::

    read_dataset -> load_model -> predict / fit -> build_report
    parse_regimen -> simulate

Heavy sub-packages (JAX, NumPyro, ArviZ) are imported on first use, so ``import il2pkpd``
stays cheap. Call :func:`enable_x64` before creating any JAX array.
"""

from importlib import import_module

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

# public name -> module that defines it (imported lazily by __getattr__)
_LAZY = {
    "read_dataset": "il2pkpd.data",
    "validate": "il2pkpd.data",
    "Dataset": "il2pkpd.data",
    "to_subject_arrays": "il2pkpd.data",
    "load_model": "il2pkpd.models",
    "list_models": "il2pkpd.models",
    "Model": "il2pkpd.models",
    "build_events": "il2pkpd.engine",
    "make_predict_fn": "il2pkpd.engine",
    "predict": "il2pkpd.engine",
    "fit": "il2pkpd.inference",
    "FitResult": "il2pkpd.inference",
    "parse_regimen": "il2pkpd.simulate",
    "Regimen": "il2pkpd.simulate",
    "simulate": "il2pkpd.simulate",
    "build_report": "il2pkpd.report",
}

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
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'il2pkpd' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
