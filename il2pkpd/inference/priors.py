"""Prior distributions for population parameters: parsing, validation, NumPyro objects.

A prior is written either as a TOML inline table in a model file,
``prior = { dist = "lognormal", loc = 1.386, scale = 1.0 }``, or as text on the command line /
in the Python API, ``"lognormal(1.386, 1.0)"``. Allowed families and their arguments:

=============  ===================  =========================================================
dist           arguments            meaning
=============  ===================  =========================================================
lognormal      loc, scale           log(theta) ~ Normal(loc, scale); theta > 0
normal         loc, scale           Normal(loc, scale); truncated at 0 for positive parameters
halfnormal     scale                |Normal(0, scale)|; theta >= 0
uniform        low, high            Uniform(low, high)
fixed          value                not estimated: theta = value
=============  ===================  =========================================================

Examples
--------
>>> parse_prior("lognormal(1.4, 0.5)")
Prior(dist='lognormal', args=(1.4, 0.5))
>>> parse_prior({"dist": "halfnormal", "scale": 0.4})
Prior(dist='halfnormal', args=(0.4,))
>>> parse_prior("fixed(0.3)").is_fixed
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from il2pkpd.errors import ModelFileError, OptionError

__all__ = ["Prior", "parse_prior", "PRIOR_ARGS"]

#: Argument names of each prior family, in positional order.
PRIOR_ARGS: dict[str, tuple[str, ...]] = {
    "lognormal": ("loc", "scale"),
    "normal": ("loc", "scale"),
    "halfnormal": ("scale",),
    "uniform": ("low", "high"),
    "fixed": ("value",),
}

_DOMAIN_OK: dict[str, frozenset[str]] = {
    # which prior families make sense for a parameter of each domain
    "positive": frozenset({"lognormal", "normal", "halfnormal", "uniform", "fixed"}),
    "nonnegative": frozenset({"lognormal", "normal", "halfnormal", "uniform", "fixed"}),
    "real": frozenset({"normal", "uniform", "fixed"}),
    "unit_interval": frozenset({"uniform", "fixed", "normal"}),
}

_TEXT_RE = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class Prior:
    """One prior (or a fixed value) for one scalar parameter.

    Parameters
    ----------
    dist : str
        One of ``lognormal, normal, halfnormal, uniform, fixed``.
    args : tuple of float
        The family's arguments in the order of :data:`PRIOR_ARGS` (same units as the
        parameter; for ``lognormal`` ``loc`` is on the log scale).
    """

    dist: str
    args: tuple[float, ...]

    @property
    def is_fixed(self) -> bool:
        """Whether the parameter is held at a value instead of estimated."""
        return self.dist == "fixed"

    def kwargs(self) -> dict[str, float]:
        """The arguments by name, e.g. ``{"loc": 1.4, "scale": 0.5}``."""
        return dict(zip(PRIOR_ARGS[self.dist], self.args, strict=True))

    def text(self) -> str:
        """Compact text form, e.g. ``lognormal(1.4, 0.5)``."""
        return f"{self.dist}({', '.join(f'{a:g}' for a in self.args)})"

    def median(self) -> float:
        """The prior median (used for initial values and checks)."""
        k = self.kwargs()
        if self.dist == "lognormal":
            return math.exp(k["loc"])
        if self.dist == "normal":
            return k["loc"]
        if self.dist == "halfnormal":
            return 0.6744897501960817 * k["scale"]
        if self.dist == "uniform":
            return 0.5 * (k["low"] + k["high"])
        return k["value"]

    def check_domain(self, name: str, domain: str, where: str) -> None:
        """Raise when this prior cannot describe a parameter of *domain*."""
        allowed = _DOMAIN_OK.get(domain, _DOMAIN_OK["real"])
        if self.dist not in allowed:
            raise ModelFileError(
                f"{where}: prior {self.text()} is not allowed for parameter {name} with domain "
                f"'{domain}'; allowed families: {', '.join(sorted(allowed))}."
            )
        k = self.kwargs()
        if self.dist == "uniform":
            lo, hi = k["low"], k["high"]
            bounds = {"positive": (0.0, math.inf), "nonnegative": (0.0, math.inf),
                      "unit_interval": (0.0, 1.0)}.get(domain, (-math.inf, math.inf))
            if lo < bounds[0] or hi > bounds[1]:
                raise ModelFileError(
                    f"{where}: prior {self.text()} for {name} reaches outside the parameter's "
                    f"domain '{domain}' {bounds}; narrow the bounds."
                )
        if self.dist == "fixed":
            v = k["value"]
            bad = ((domain == "positive" and v <= 0) or (domain == "nonnegative" and v < 0)
                   or (domain == "unit_interval" and not 0 <= v <= 1))
            if bad:
                raise ModelFileError(
                    f"{where}: fixed value {v:g} for {name} is outside its domain '{domain}'."
                )

    def to_numpyro(self, domain: str = "real"):
        """The NumPyro distribution (not for ``fixed``)."""
        import numpyro.distributions as dist

        k = self.kwargs()
        if self.dist == "lognormal":
            return dist.LogNormal(k["loc"], k["scale"])
        if self.dist == "normal":
            if domain in ("positive", "nonnegative"):
                return dist.TruncatedNormal(k["loc"], k["scale"], low=0.0)
            if domain == "unit_interval":
                return dist.TruncatedNormal(k["loc"], k["scale"], low=0.0, high=1.0)
            return dist.Normal(k["loc"], k["scale"])
        if self.dist == "halfnormal":
            return dist.HalfNormal(k["scale"])
        if self.dist == "uniform":
            return dist.Uniform(k["low"], k["high"])
        raise ValueError("a fixed parameter has no distribution")


def _error(where: str, cls, msg: str):
    return cls(f"{where}: {msg}")


def parse_prior(spec: Any, *, where: str = "prior", cli: bool = False) -> Prior:
    """Parse a prior from a TOML table, a text such as ``"normal(0, 1)"``, or a :class:`Prior`.

    Parameters
    ----------
    spec : dict, str, float or Prior
        The prior. A bare number means ``fixed(number)``.
    where : str
        Where the prior came from (file and table, or option), used in error messages.
    cli : bool
        Raise :class:`~il2pkpd.errors.OptionError` (command-line input) instead of
        :class:`~il2pkpd.errors.ModelFileError`.

    Returns
    -------
    Prior
    """
    cls = OptionError if cli else ModelFileError
    families = ", ".join(f"{d}({', '.join(a)})" for d, a in PRIOR_ARGS.items())
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, bool):
        raise _error(where, cls, f"expected a prior, got {spec!r}; allowed: {families}.")
    if isinstance(spec, int | float):
        return Prior("fixed", (float(spec),))
    if isinstance(spec, str):
        m = _TEXT_RE.match(spec)
        if not m:
            raise _error(where, cls, f"cannot read prior {spec!r}; write e.g. "
                                     f"'lognormal(1.4, 0.5)'. Allowed: {families}.")
        name = m.group(1).lower().replace("_", "")
        parts = [p.strip() for p in m.group(2).split(",") if p.strip()]
        if name not in PRIOR_ARGS:
            raise _error(where, cls, f"unknown prior family '{m.group(1)}'; allowed: {families}.")
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise _error(where, cls, f"prior {spec!r} has a non-numeric argument; "
                                     f"expected {name}({', '.join(PRIOR_ARGS[name])}).") from None
        if len(values) != len(PRIOR_ARGS[name]):
            raise _error(where, cls, f"prior {spec!r} needs {len(PRIOR_ARGS[name])} argument(s): "
                                     f"{name}({', '.join(PRIOR_ARGS[name])}).")
        return _checked(Prior(name, values), where, cls)
    if isinstance(spec, Mapping):
        if "dist" not in spec:
            raise _error(where, cls, f"prior table {spec!r} has no 'dist' key; write e.g. "
                                     "{ dist = \"lognormal\", loc = 1.4, scale = 0.5 }.")
        name = str(spec["dist"]).lower().replace("_", "")
        if name not in PRIOR_ARGS:
            raise _error(where, cls, f"unknown prior family '{spec['dist']}'; "
                                     f"allowed: {families}.")
        keys = PRIOR_ARGS[name]
        extra = sorted(set(spec) - set(keys) - {"dist"})
        missing = [k for k in keys if k not in spec]
        if extra or missing:
            raise _error(where, cls, f"prior {name} takes keys {', '.join(keys)}"
                                     + (f"; missing {', '.join(missing)}" if missing else "")
                                     + (f"; unknown {', '.join(extra)}" if extra else "") + ".")
        values = []
        for k in keys:
            v = spec[k]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _error(where, cls, f"prior {name}: '{k}' must be a number, got {v!r}.")
            values.append(float(v))
        return _checked(Prior(name, tuple(values)), where, cls)
    raise _error(where, cls, f"expected a prior table or text, got {spec!r}; allowed: {families}.")


def _checked(prior: Prior, where: str, cls) -> Prior:
    k = prior.kwargs()
    if not all(math.isfinite(v) for v in prior.args):
        raise _error(where, cls, f"prior {prior.text()} has a non-finite argument.")
    if "scale" in k and k["scale"] <= 0:
        raise _error(where, cls, f"prior {prior.text()}: scale must be > 0.")
    if prior.dist == "uniform" and not k["low"] < k["high"]:
        raise _error(where, cls, f"prior {prior.text()}: low must be below high.")
    return prior
