"""Eta-shrinkage, shared by the fit (its suggested parametrization) and the report."""

from __future__ import annotations

import numpy as np

__all__ = ["eta_shrinkage_value", "centring_weight"]


def eta_shrinkage_value(eta_draws, omega_draws) -> tuple[float, float, float]:
    """``1 - sd_subjects(posterior mean of eta_i) / omega``.

    Parameters
    ----------
    eta_draws : array_like
        Random effects, any leading sample axes, subjects last.
    omega_draws : array_like
        Draws of the IIV SD (its posterior mean is used).

    Returns
    -------
    (omega, sd_eta, shrinkage) : tuple of float
        NaN shrinkage with a single subject or a non-positive omega.
    """
    eta = np.asarray(eta_draws, dtype=float)
    means = eta.reshape(-1, eta.shape[-1]).mean(axis=0)
    omega = float(np.mean(np.asarray(omega_draws, dtype=float)))
    sd = float(np.std(means, ddof=1)) if means.size > 1 else float("nan")
    shrink = 1.0 - sd / omega if omega > 0 and np.isfinite(sd) else float("nan")
    return omega, sd, shrink


def centring_weight(shrinkage: float) -> float:
    """Partial-centring weight ``(1 - s)^2`` of an IIV parameter with eta-shrinkage s (clipped
    to [0, 1]): 0 non-centred, 1 centred (see
    :func:`il2pkpd.inference.samplers.centring_weights`)."""
    return (1.0 - min(max(float(shrinkage), 0.0), 1.0)) ** 2
