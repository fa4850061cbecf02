"""Model files (TOML) and structural models.

A model file declares parameters (units, defaults, domains, optional priors), NONMEM
compartment numbers, outputs keyed by DVID and the structure: a built-in closed form
(``one_cmt``, ``two_cmt``, ``three_cmt``, optionally with a first-order absorption depot) or
a user ODE written in ``jax.numpy`` in a Python file beside the TOML file.
"""

from il2pkpd.models._loader import list_models, load_model
from il2pkpd.models._model import DOMAINS, STRUCTURES, Model, OutputSpec, ParameterSpec, UserODE

__all__ = ["load_model", "list_models", "Model", "ParameterSpec", "OutputSpec", "UserODE",
           "DOMAINS", "STRUCTURES"]
