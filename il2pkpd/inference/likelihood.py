"""Residual error models and the M3 censored likelihood, per observation.

Each observation row carries its prediction ``f`` and the SDs of its output's error model,
flattened to three numbers so that rows of different outputs (and error models) share one
vectorised density:

- normal family (additive, proportional, combined): ``y ~ Normal(f, sqrt(sa^2 + (sp f)^2))``,
  with ``sp = 0`` for additive and ``sa = 0`` for proportional;
- log-normal: ``log y ~ Normal(log f, s)`` (``s`` stored in ``sa``, ``is_log`` true).

A row flagged below the limit of quantification contributes ``log P(y < LLOQ)`` (Beal's M3):
``log Phi((LLOQ - f) / sd)`` or ``log Phi((log LLOQ - log f) / s)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints

__all__ = ["ResidualError", "RowGroups", "residual_log_density", "normal_sd", "TINY"]

#: Floor for predictions on the log scale and for SDs (keeps gradients finite at f = 0).
TINY = 1e-300
_HALF_LOG_2PI = 0.9189385332046727


def normal_sd(pred, sa, sp):
    """SD of the normal-family error: ``sqrt(sa^2 + (sp * pred)^2)`` (output units).

    Examples
    --------
    >>> float(normal_sd(10.0, 0.3, 0.1))  # doctest: +ELLIPSIS
    1.04403...
    """
    return jnp.sqrt(sa**2 + (sp * pred) ** 2 + TINY)


def residual_log_density(dv, pred, sa, sp, is_log, blq, lloq):
    """Log density (or M3 log probability) of each observation.

    Parameters
    ----------
    dv : array
        Observed values (output units). Must be finite; for BLQ rows any finite value (it is
        not used); for log-normal rows of observed values, positive.
    pred : array
        Predictions ``f`` (output units).
    sa, sp : array
        Additive SD (output units; the log-scale SD for log-normal rows) and proportional SD
        (fraction).
    is_log : bool array
        Log-normal rows.
    blq : bool array
        Rows censored below ``lloq``.
    lloq : array
        Lower limit of quantification (output units), used where ``blq``.

    Returns
    -------
    array
        Per-row log density (log probability for BLQ rows), the shape of ``dv``.
    """
    pred = jnp.asarray(pred)
    # unused entries (dv of censored rows, lloq of observed rows) may be NaN: replace them so
    # that no NaN reaches a gradient through the branch jnp.where does not select
    dv = jnp.where(blq, 0.0, dv)
    lloq = jnp.where(blq, lloq, 0.0)
    # normal family
    sd = normal_sd(pred, sa, sp)
    z = (dv - pred) / sd
    ll_norm = -0.5 * z**2 - jnp.log(sd) - _HALF_LOG_2PI
    cens_norm = log_ndtr((lloq - pred) / sd)
    # log-normal family (safe substitutions keep unused branches finite)
    s_log = jnp.where(is_log, sa, 1.0)
    mu = jnp.log(jnp.maximum(jnp.where(is_log, pred, 1.0), TINY))
    dv_pos = jnp.where(is_log & ~blq, jnp.maximum(dv, TINY), 1.0)
    log_dv = jnp.log(dv_pos)
    zl = (log_dv - mu) / s_log
    ll_log = -0.5 * zl**2 - jnp.log(s_log) - _HALF_LOG_2PI - log_dv
    lloq_pos = jnp.where(is_log & blq, jnp.maximum(lloq, TINY), 1.0)
    cens_log = log_ndtr((jnp.log(lloq_pos) - mu) / s_log)
    ll = jnp.where(is_log, jnp.where(blq, cens_log, ll_log), jnp.where(blq, cens_norm, ll_norm))
    return ll


class RowGroups:
    """Static partition of the rows into (normal | log-normal) x (observed | BLQ).

    Lets :class:`ResidualError` evaluate each formula only on its own rows (the M3 term's
    ``log_ndtr`` is costly): hashed by identity so that it can be static pytree data.
    """

    def __init__(self, is_log, blq):
        is_log = np.asarray(is_log, dtype=bool)
        blq = np.asarray(blq, dtype=bool)
        self.n = int(is_log.size)
        self.norm_obs = np.nonzero(~is_log & ~blq)[0]
        self.norm_blq = np.nonzero(~is_log & blq)[0]
        self.log_obs = np.nonzero(is_log & ~blq)[0]
        self.log_blq = np.nonzero(is_log & blq)[0]
        order = np.concatenate([self.norm_obs, self.norm_blq, self.log_obs, self.log_blq])
        self.inverse = np.argsort(order, kind="stable")
        # one group holding every row: no gathers, no reordering
        self.single = max(len(self.norm_obs), len(self.norm_blq), len(self.log_obs),
                          len(self.log_blq)) == self.n

    def log_density(self, dv, pred, sa, sp, lloq):
        """Per-row log density, computing each family only where it applies."""
        parts = []
        for idx, censored, log in ((self.norm_obs, False, False), (self.norm_blq, True, False),
                                   (self.log_obs, False, True), (self.log_blq, True, True)):
            if idx.size == 0:
                continue
            if self.single:
                f, dv_g, sa_g, sp_g, lloq_g = pred, dv, sa, sp, lloq
            else:
                f, dv_g, sa_g, sp_g, lloq_g = pred[idx], dv[idx], sa[idx], sp[idx], lloq[idx]
            if log:
                s = sa_g
                mu = jnp.log(jnp.maximum(f, TINY))
                if censored:
                    parts.append(log_ndtr((jnp.log(jnp.maximum(lloq_g, TINY)) - mu) / s))
                else:
                    log_y = jnp.log(jnp.maximum(dv_g, TINY))
                    z = (log_y - mu) / s
                    parts.append(-0.5 * z**2 - jnp.log(s) - _HALF_LOG_2PI - log_y)
            else:
                sd = normal_sd(f, sa_g, sp_g)
                if censored:
                    parts.append(log_ndtr((lloq_g - f) / sd))
                else:
                    z = (dv_g - f) / sd
                    parts.append(-0.5 * z**2 - jnp.log(sd) - _HALF_LOG_2PI)
        if self.single:
            return parts[0]
        return jnp.concatenate(parts)[self.inverse]


class ResidualError(dist.Distribution):
    """NumPyro distribution of observations given predictions, per row (see module docstring).

    ``log_prob`` applies the M3 likelihood to BLQ rows; ``sample`` draws uncensored values
    (simulation with ``obs=None``).

    Parameters
    ----------
    pred : array
        Predictions (output units).
    sa, sp : array
        Additive (log-scale for log-normal rows) and proportional SDs, per row.
    is_log, blq : bool array
        Log-normal rows; censored rows.
    lloq : array
        Limits of quantification (output units).
    """

    arg_constraints = {"pred": constraints.real}
    support = constraints.real
    pytree_data_fields = ("pred", "sa", "sp", "is_log", "blq", "lloq")
    pytree_aux_fields = ("groups",)

    def __init__(self, pred, sa, sp, is_log, blq, lloq, *, groups: RowGroups | None = None,
                 validate_args=None):
        self.groups = groups
        self.pred = pred
        self.sa = sa
        self.sp = sp
        self.is_log = is_log
        self.blq = blq
        self.lloq = lloq
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(pred), jnp.shape(sa), jnp.shape(sp),
                                               jnp.shape(is_log), jnp.shape(blq),
                                               jnp.shape(lloq))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        """Draw observations (uncensored), shape ``sample_shape + batch_shape``."""
        eps = jax.random.normal(key, tuple(sample_shape) + self.batch_shape)
        y_norm = self.pred + normal_sd(self.pred, self.sa, self.sp) * eps
        y_log = jnp.maximum(self.pred, TINY) * jnp.exp(jnp.where(self.is_log, self.sa, 0.0) * eps)
        return jnp.where(self.is_log, y_log, y_norm)

    def log_prob(self, value):
        """Per-row log density; BLQ rows give the log probability of lying below LLOQ."""
        g = self.groups
        if g is not None and jnp.shape(value) == (g.n,) and jnp.shape(self.pred) == (g.n,):
            return g.log_density(value, self.pred, jnp.broadcast_to(self.sa, (g.n,)),
                                 jnp.broadcast_to(self.sp, (g.n,)),
                                 jnp.broadcast_to(self.lloq, (g.n,)))
        return residual_log_density(value, self.pred, self.sa, self.sp, self.is_log, self.blq,
                                    self.lloq)
