"""Laplacian conditional estimation: the mode of the marginal posterior of the population
parameters, random effects integrated out by Laplace's method (NONMEM ``METHOD=COND
LAPLACIAN INTERACTION``, with the priors of the model file included).

Why: the joint mode of (population parameters, random effects) is useless for the IIV SDs. In
the non-centred form (z) it inflates them to the prior's scale; in the centred form the joint
density is unbounded as the SDs go to zero. Integrating the random effects out fixes both:
with ``H_i`` the Hessian of the potential ``U`` (negative log posterior) in subject i's
random effects at their conditional mode,

    U_marg(theta) = min_phi U(theta, phi) + 1/2 sum_i log det H_i(theta),
    H_i = D_i + Omega(theta)^-1,

where ``phi`` are the individual parameters on their transformed (log) scale (the centred
parametrisation) and ``D_i`` is the curvature of subject i's data likelihood.

Algorithm (each round is one L-BFGS run on the whole (theta, phi) vector, so one gradient of
the population model per iteration and no nested optimisation):

1. ``D_i`` is computed by central differences of the gradient of ``U``: perturbing random
   effect k of every subject at once gives column k of every subject's block (subjects are
   independent), so the cost is ``2 * n_iiv`` gradients for all subjects together. ``D_i`` is
   projected onto the positive semi-definite cone.
2. With ``D_i`` frozen, ``V(theta, phi) = U + 1/2 sum_i log det(D_i + Omega(theta)^-1)`` is
   minimised jointly; the correction depends on theta only through Omega, which costs no
   model solve. Its minimum over phi is the Laplace marginal (with the frozen curvature).
3. Rounds repeat from the new mode until the objective changes by less than ``rtol_rounds``.

Uncertainty: a Gaussian in the unconstrained space at the final mode whose precision is the
Hessian of ``V``, from central differences of its gradient (theta directions one by one,
random-effect directions all subjects at once: ``2 * (n_theta + n_iiv)`` gradients). Its
theta-marginal is the Laplace approximation of the marginal posterior, and phi given theta
the conditional Laplace approximation of each subject's parameters.

Written here rather than taken from a library: NumPyro has no nested-Laplace estimator for
NumPyro models, and the batched gradient of the package's population model is the expensive
part, which this scheme calls the fewest times.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import block_diag

__all__ = ["run_laplacian", "LaplacianResult"]


@dataclasses.dataclass(frozen=True)
class LaplacianResult:
    """Outcome of :func:`run_laplacian`.

    Attributes
    ----------
    mode : dict
        Constrained values of the sample sites at the marginal mode (``phi`` the individual
        parameters on the transformed scale).
    objective : float
        ``V`` at the mode (the Laplace-approximated negative log marginal posterior, up to a
        constant).
    rounds, iterations : int
        Curvature updates and total L-BFGS iterations.
    converged : bool
        Whether the last round's objective changed by less than the tolerance and its L-BFGS
        run met the gradient tolerance.
    grad_norm : float
        Final gradient infinity norm of V (relative to 1 + |V|).
    gradients : int
        Gradient evaluations of the population model spent (including the final Hessian).
    solves : int
        Prediction-only evaluations (for the curvature's finite differences).
    seconds : float
    min_eigenvalue, clipped : float, int
        Of the final Hessian (clipped: eigenvalues floored to keep it positive definite).
    """

    mode: dict
    objective: float
    rounds: int
    iterations: int
    converged: bool
    grad_norm: float
    gradients: int
    solves: int
    seconds: float
    min_eigenvalue: float
    clipped: int


def _centred(pm):
    """*pm* in the centred parametrisation (random effects as individual parameters phi)."""
    if pm.spec.centred or not pm.spec.iiv:
        return pm
    return dataclasses.replace(pm, spec=dataclasses.replace(pm.spec, centred=True))


def _make_lbfgs(f_of, *, max_iter: int, tol: float):
    """``solve(x0, d) -> (x, value, iterations, grad_norm)`` minimising ``f_of(x, d)`` over x;
    jitted once (d is an argument, so new curvatures do not recompile)."""
    import optax

    opt = optax.lbfgs()

    @jax.jit
    def solve(x_init, d):
        def f(x):
            return f_of(x, d)

        value_and_grad = optax.value_and_grad_from_state(f)

        def step(carry):
            x, state, i, _ = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
            x = optax.apply_updates(x, updates)
            gnorm = jnp.max(jnp.abs(grad)) / (1.0 + jnp.abs(value))
            return x, state, i + 1, gnorm

        def cond(carry):
            _, _, i, gnorm = carry
            return (i < max_iter) & ((gnorm > tol) | (i == 0)) & jnp.isfinite(gnorm)

        state = opt.init(x_init)
        x, state, i, _ = jax.lax.while_loop(cond, step, (x_init, state, 0, jnp.asarray(1e30)))
        value, grad = jax.value_and_grad(f)(x)
        return x, value, i, jnp.max(jnp.abs(grad)) / (1.0 + jnp.abs(value))

    return solve


def run_laplacian(pm, obs, *, seed: int = 0, draws: int = 1000, max_rounds: int = 6,
                  max_iter: int = 300, tol: float = 1e-5, rtol_rounds: float = 1e-6,
                  theta_tol: float = 5e-3, fd_step: float = 1e-2, hess_step: float = 1e-3,
                  log=None):
    """Laplacian conditional estimation (see the module docstring) and Gaussian draws.

    Parameters
    ----------
    pm : PopulationModel
        Any parametrisation; a non-centred model is converted to the centred one.
    obs : array
        Observed values (``pm.observed``).
    seed : int
        Seed of the draws.
    draws : int
        Draws from the Gaussian approximation.
    max_rounds : int
        Most curvature updates.
    max_iter : int
        L-BFGS iterations per round.
    tol : float
        L-BFGS gradient tolerance (infinity norm relative to 1 + |V|).
    rtol_rounds, theta_tol : float
        Stop when V changes by less than ``rtol_rounds * (1 + |V|)`` between rounds, or no
        population parameter moves by more than ``theta_tol`` (unconstrained scale: log for
        SDs and positive typical values) between rounds.
    fd_step : float
        Central-difference step for the derivatives of the predictions in phi (log scale);
        large enough that an adaptive ODE solver's tolerance-level noise does not dominate
        (1e-2: noise ~ rtol / 1e-2, truncation ~ 1e-5 relative).
    hess_step : float
        Central-difference step of the final Hessian (from gradients).
    log : callable, optional
        Called with one line of text per round (progress).

    Returns
    -------
    samples : dict
        Site name -> array (draws, ...), constrained, deterministic sites included.
    pmc : PopulationModel
        The (centred) model the samples belong to.
    result : LaplacianResult
    """
    from numpyro import handlers
    from numpyro.distributions.transforms import biject_to
    from numpyro.infer import init_to_median
    from numpyro.infer.util import initialize_model

    t0 = time.perf_counter()
    pmc = _centred(pm)
    spec = pmc.spec
    key = jax.random.PRNGKey(seed)
    info = initialize_model(key, pmc, model_kwargs={"obs": obs},
                            init_strategy=init_to_median(num_samples=15))
    x0, unravel = ravel_pytree(info.param_info.z)
    # site transforms (unconstrained -> constrained), from one eager trace of the model
    tr = handlers.trace(handlers.seed(pmc, key)).get_trace(obs=obs)
    transforms = {name: biject_to(site["fn"].support) for name, site in tr.items()
                  if site["type"] == "sample" and not site.get("is_observed", False)}

    n_subj = pmc.n_subjects
    n_iiv = len(spec.iiv)
    marks = {k: np.full(np.shape(v), k == "phi") for k, v in info.param_info.z.items()}
    is_phi = np.asarray(ravel_pytree(marks)[0]).astype(bool)
    phi_pos = np.nonzero(is_phi)[0].reshape(n_subj, n_iiv) if n_iiv else np.zeros((n_subj, 0),
                                                                                 int)
    theta_pos = np.nonzero(~is_phi)[0]

    def omega_matrix(x):
        """Omega in phi's column order (block order)."""
        z = unravel(x)
        mats = []
        for k, block in enumerate(spec.blocks):
            om = jnp.stack([transforms[f"omega_{p}"](z[f"omega_{p}"]) for p in block])
            if len(block) == 1:
                mats.append(jnp.diag(om ** 2))
            else:
                name = f"L_omega_{k + 1}"
                L = transforms[name](z[name])
                s = om[:, None] * L
                mats.append(s @ s.T)
        return block_diag(*mats)

    def potential(x):
        return info.potential_fn(unravel(x))

    n_grad = n_solve = 0
    subj = np.asarray(pmc.obs.subject)
    blq = jnp.asarray(pmc.obs.blq)
    lloq = jnp.asarray(np.where(np.isfinite(pmc.obs.lloq), pmc.obs.lloq, 1.0))

    def constrained(x):
        z = unravel(x)
        return {k: transforms[k](v) for k, v in z.items()}

    def model_parts(x):
        """Per-observation location m (log f for log-normal rows, else f) and residual SDs."""
        c = constrained(x)
        with handlers.block(), handlers.seed(rng_seed=0), handlers.substitute(data=c):
            tv = pmc.typical_values()
            terms = pmc.covariate_terms()
            eta = pmc.random_effects(tv, terms)
            params = pmc.individual_parameters(tv, eta, terms)
            sa, sp, is_log = pmc.residual_arrays()
        pred, _ = pmc.predict_fn(params)
        f = jnp.reshape(pred, (-1,))[pmc._flat_index(pred.shape)]
        is_log = jnp.asarray(is_log)
        m = jnp.where(is_log, jnp.log(jnp.where(f > 0, f, 1.0)), f)
        return m, f, sa, sp, is_log

    def data_information(x, g, f0):
        """Gauss-Newton curvature of each subject's likelihood in phi, (n_subj, n_iiv, n_iiv).

        ``g`` (n_obs, n_iiv): frozen derivatives of the location m in phi; ``f0``: frozen
        predictions. The residual SDs come from *x*, so the curvature follows sigma (the
        interaction of FOCE-I): per observation the Fisher information of the location,
        ``1/var + (dvar/df)^2 / (2 var^2)`` for the normal family, ``1/s^2`` on the log
        scale, and the observed information ``lambda (z + lambda) / s^2`` of an M3 term
        (``z = (limit - m)/s``, ``lambda = phi(z)/Phi(z)``).
        """
        _, _, sa, sp, is_log = model_parts_resid(x)
        var_n = sa ** 2 + (sp * f0) ** 2 + 1e-300
        info_n = 1.0 / var_n + (2 * sp ** 2 * f0) ** 2 / (2 * var_n ** 2)
        info_l = 1.0 / sa ** 2
        s = jnp.where(is_log, sa, jnp.sqrt(var_n))
        m0 = jnp.where(is_log, jnp.log(jnp.where(f0 > 0, f0, 1.0)), f0)
        limit = jnp.where(is_log, jnp.log(jnp.where(lloq > 0, lloq, 1.0)), lloq)
        zc = (limit - m0) / s
        lam = jnp.exp(jax.scipy.stats.norm.logpdf(zc) - jax.scipy.special.log_ndtr(zc))
        info_c = lam * (zc + lam) / s ** 2
        info = jnp.where(blq, info_c, jnp.where(is_log, info_l, info_n))
        outer = info[:, None, None] * g[:, :, None] * g[:, None, :]
        return jax.ops.segment_sum(outer, subj, num_segments=n_subj)

    def model_parts_resid(x):
        c = constrained(x)
        with handlers.block(), handlers.seed(rng_seed=0), handlers.substitute(data=c):
            sa, sp, is_log = pmc.residual_arrays()
        return None, None, sa, sp, jnp.asarray(is_log)

    parts = jax.jit(model_parts)

    def frozen(x):
        """Derivatives of the locations in phi by central differences of the predictions
        (all subjects at once: 2 * n_iiv solves, no gradients) and the predictions."""
        nonlocal n_solve
        xv = np.asarray(x)
        g = np.zeros((len(subj), n_iiv))
        for k in range(n_iiv):
            e = np.zeros_like(xv)
            e[phi_pos[:, k]] = fd_step
            mp = np.asarray(parts(jnp.asarray(xv + e))[0])
            mm = np.asarray(parts(jnp.asarray(xv - e))[0])
            g[:, k] = (mp - mm) / (2 * fd_step)
        f0 = np.asarray(parts(jnp.asarray(xv))[1])
        n_solve += 2 * n_iiv + 1
        return jnp.asarray(g), jnp.asarray(f0)

    def correction(x, gf):
        if not n_iiv:
            return 0.0
        g, f0 = gf
        om_inv = jnp.linalg.inv(omega_matrix(x))
        d = data_information(x, g, f0)
        _, logdet = jnp.linalg.slogdet(d + om_inv[None])
        return 0.5 * jnp.sum(logdet)

    def curvature(grad_fn, x):
        """Per-subject Hessian blocks of grad_fn's function in phi, (n_subj, n_iiv, n_iiv)."""
        nonlocal n_grad
        h = np.zeros((n_subj, n_iiv, n_iiv))
        xv = np.asarray(x)
        for k in range(n_iiv):
            e = np.zeros_like(xv)
            e[phi_pos[:, k]] = hess_step
            gp = np.asarray(grad_fn(jnp.asarray(xv + e)))
            gm = np.asarray(grad_fn(jnp.asarray(xv - e)))
            n_grad += 2
            h[:, :, k] = ((gp - gm) / (2 * hess_step))[phi_pos]
        return 0.5 * (h + np.swapaxes(h, 1, 2))

    def v_of(x_, d_):
        return potential(x_) + correction(x_, d_)

    lbfgs = _make_lbfgs(v_of, max_iter=max_iter, tol=tol)
    x = x0
    v_prev = np.inf
    theta_prev = np.full(theta_pos.size, np.inf)
    rounds = iterations = 0
    converged = False
    gnorm = np.inf
    v_val = np.inf
    for _ in range(max(1, max_rounds)):
        d = frozen(x) if n_iiv else None
        x, v_val, it, gnorm = lbfgs(x, d)
        v_val, gnorm, it = float(v_val), float(gnorm), int(it)
        rounds += 1
        iterations += it
        n_grad += it + 1
        if log is not None:
            log(f"laplacian round {rounds}: objective {v_val:.4f}, {it} L-BFGS iterations, "
                f"gradient norm {gnorm:.2g}, {time.perf_counter() - t0:.0f} s")
        if not np.isfinite(v_val):
            break
        theta = np.asarray(x)[theta_pos]
        moved = np.max(np.abs(theta - theta_prev)) if theta.size else 0.0
        theta_prev = theta
        if abs(v_val - v_prev) < rtol_rounds * (1.0 + abs(v_val)) or moved < theta_tol:
            converged = gnorm <= tol * 10
            break
        v_prev = v_val
        if not n_iiv:
            converged = gnorm <= tol * 10
            break

    # Gaussian approximation: Hessian of V (with the final frozen curvature) at the mode
    grad_v_d = jax.jit(jax.grad(v_of))

    def grad_v(x_):
        return grad_v_d(x_, d)
    n = x.shape[0]
    hess = np.zeros((n, n))
    xv = np.asarray(x)
    for j in theta_pos:
        e = np.zeros(n)
        e[j] = hess_step
        col = (np.asarray(grad_v(jnp.asarray(xv + e))) - np.asarray(grad_v(jnp.asarray(xv - e))))
        n_grad += 2
        col /= 2 * hess_step
        hess[:, j] = col
        hess[j, :] = col
    if n_iiv:
        blocks = curvature(grad_v, x)
        for i in range(n_subj):
            hess[np.ix_(phi_pos[i], phi_pos[i])] = blocks[i]
    hess = 0.5 * (hess + hess.T)
    if log is not None:
        log(f"laplacian Hessian done ({n_grad} gradients in all), "
            f"{time.perf_counter() - t0:.0f} s")
    w, vecs = np.linalg.eigh(hess)
    floor = 1e-8 * max(1.0, float(np.max(np.abs(w))))
    clipped = int(np.sum(w < floor))
    w_clip = np.maximum(w, floor)
    eps = np.asarray(jax.random.normal(jax.random.PRNGKey(seed + 1), (draws, n)))
    xs = xv[None, :] + (eps / np.sqrt(w_clip)) @ vecs.T
    post = jax.jit(jax.vmap(lambda v_: info.postprocess_fn(unravel(v_))))
    samples = {k: np.asarray(v) for k, v in post(jnp.asarray(xs)).items()}
    mode = {k: np.asarray(v) for k, v in info.postprocess_fn(unravel(x)).items()}
    res = LaplacianResult(mode=mode, objective=v_val, rounds=rounds, iterations=iterations,
                          converged=bool(converged), grad_norm=gnorm, gradients=n_grad,
                          solves=n_solve, seconds=time.perf_counter() - t0,
                          min_eigenvalue=float(w[0]), clipped=clipped)
    return samples, pmc, res
