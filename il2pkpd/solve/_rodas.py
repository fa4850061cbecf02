"""Rodas4: a 6-stage, order 4(3), L-stable, stiffly accurate Rosenbrock method.

Coefficients of Hairer & Wanner, *Solving Ordinary Differential Equations II* (1996), section
IV.7 (code RODAS, METH = 1), in the transformed form

    (1/(h*gamma) - J) u_i = f(y0 + sum_j a_ij u_j) + sum_j (c_ij / h) u_j,   i = 1..6
    y1 = y0 + sum_j a_5j u_j + u_5 + u_6,      error estimate u_6,

with the order-3 continuous extension

    y(t0 + theta*h) = (1 - theta) y0 + theta (y1 + (1 - theta)(k2 + theta k3)),
    k2 = sum_j d_2j u_j,  k3 = sum_j d_3j u_j.

The step function here is written for one patient (flat state vector) and is vmapped by the
callers; the linear algebra is delegated to a ``LinearSolver`` (dense LU or a model-structured
solve), so the same code serves every ODE model.
"""

from __future__ import annotations

import jax

GAMMA = 0.25
A = (
    (),
    (1.544,),
    (0.9466785280815826, 0.2557011698983284),
    (3.314825187068521, 2.896124015972201, 0.9986419139977817),
    (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950),
    (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950, 1.0),
)
C = (
    (),
    (-5.6688,),
    (-2.430093356833875, -0.2063599157091915),
    (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
    (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
    (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136,
     -6.058818238834054),
)
D2 = (10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823,
      1.025137723295662)
D3 = (-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386,
      -6.594389125716872)
ORDER = 4


def _axpy(a, x, y):
    """``y + a*x`` on tuples of scalars."""
    return tuple(yi + a * xi for xi, yi in zip(x, y, strict=True))


def _scale(a, x):
    return tuple(a * xi for xi in x)


def rodas4_step(rhs, solve, factor, y0, f0, h):
    """One Rodas4 step for one patient (states as a tuple of scalars).

    Parameters
    ----------
    rhs : callable
        ``rhs(y) -> dy/dt`` with parameters and constant inputs bound.
    solve : callable
        ``solve(factor, b) -> u`` solving ``(1/(h*GAMMA) - J) u = b``.
    factor : pytree
        What ``solve`` needs (prepared once per step for this ``h``).
    y0, f0 : tuple
        State at the start of the step and ``rhs(y0)``.
    h : float
        Step size (time units).

    Returns
    -------
    y1 : tuple
        The order-4 solution at ``t0 + h``.
    err : tuple
        The local error estimate (``u_6``).
    k2, k3 : tuple
        Coefficients of the continuous extension.
    """
    inv_h = 1.0 / h
    us = []
    for i in range(6):
        if i == 0:
            b = f0
        else:
            yi = y0
            for j, a in enumerate(A[i]):
                yi = _axpy(a, us[j], yi)
            corr = _scale(C[i][0] * inv_h, us[0])
            for j in range(1, i):
                corr = _axpy(C[i][j] * inv_h, us[j], corr)
            b = _axpy(1.0, rhs(yi), corr)
        # the barrier materialises each stage: without it XLA's fusion duplicates the earlier
        # stages into every later consumer (many-fold recomputation, worse under jvp)
        us.append(jax.lax.optimization_barrier(solve(factor, b)))
    y1 = y0
    for j, a in enumerate(A[5]):
        y1 = _axpy(a, us[j], y1)
    y1 = _axpy(1.0, us[5], y1)
    k2 = _scale(D2[0], us[0])
    k3 = _scale(D3[0], us[0])
    for j in range(1, 5):
        k2 = _axpy(D2[j], us[j], k2)
        k3 = _axpy(D3[j], us[j], k3)
    return y1, us[5], k2, k3


def dense(y0, y1, k2, k3, theta):
    """Evaluate the continuous extension at ``theta`` in [0, 1] (tuples of scalars)."""
    return tuple((1.0 - theta) * a + theta * (b + (1.0 - theta) * (c + theta * d))
                 for a, b, c, d in zip(y0, y1, k2, k3, strict=True))
