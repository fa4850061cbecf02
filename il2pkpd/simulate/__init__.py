"""Regimens, virtual populations and exposure/response metrics."""

from il2pkpd.simulate.regimen import Phase, Regimen, Route, parse_regimen

__all__ = ["Phase", "Regimen", "Route", "parse_regimen"]
