"""Inference engines: NUTS, MAP by L-BFGS, a Laplace approximation and SVI.

All work on the same :class:`~il2pkpd.inference.model.PopulationModel`. MAP optimises the joint
density of population parameters and random effects in NumPyro's unconstrained space (Jacobian
of the constraining transforms included), in the sampler's non-centred parametrisation; Laplace
puts a Gaussian there. SVI fits a full-rank Gaussian in the same space.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro.infer import MCMC, NUTS, init_to_median
from numpyro.infer.util import initialize_model

from il2pkpd.errors import OptionError

__all__ = ["MapResult", "LaplaceStart", "run_map", "run_laplace", "run_svi", "run_nuts",
           "laplace_start", "sites_from_noncentred", "sites_to_noncentred", "noncentred_twin",
           "reparametrized", "parametrization_map", "centring_weights", "choose_chain_method",
           "tree_depths", "DENSE_OPTIONS", "INIT_OPTIONS"]

DENSE_OPTIONS = ("auto", "full", "population", "diagonal")
INIT_OPTIONS = ("median", "map", "laplace")
#: Largest number of latent dimensions for which "auto" uses a full dense mass matrix (a dense
#: metric estimated from a few hundred warm-up draws is poor beyond a couple of hundred).
DENSE_FULL_MAX_DIM = 200
#: Largest latent dimension :func:`run_nuts` computes a Laplace metric for (the Hessian costs
#: two gradients per dimension); beyond it ``init="laplace"`` gives the start point only.
LAPLACE_MAX_DIM = 1000
#: Share of the warm-up iterations run before the pooled metric is formed (``pooled_metric``).
POOL_FRACTION = 0.5
#: Share of stage 1's draws (per chain, the first ones) left out of the pooled covariance and
#: the adaptive centring weights (``pooled_metric``).
POOL_DISCARD = 0.5
#: Fewest warm-up iterations allowed with ``pooled_metric``.
POOLED_MIN_WARMUP = 40
#: Progress lines a NUTS run writes with ``progress_bar="log"`` (one per 1/20 of the run).
PROGRESS_LINES = 20


class ProgressLog:
    """Progress lines of a NUTS run for logs (``run_nuts(progress_bar="log")``).

    Every chain reports from inside the compiled sampler (a host callback) each time it
    passes a multiple of *every* iterations (counted over warm-up and draws, over all stages
    of the run) and at its last iteration. Each time all chains together have made another
    1/:data:`PROGRESS_LINES` of the run's iterations, a line gives that share, the wall time
    since :meth:`start`, the iteration every chain has passed (when they run side by side)
    and the time left at the pace since the previous line (not on the first line of a stage:
    its time includes compiling the sampler). So chains run one after another get their lines
    as steadily as parallel ones. Reports may arrive from several threads (parallel chains).

    Parameters
    ----------
    chains, warmup, samples : int
        The run's size.
    write : callable, optional
        Receives each line (default: print to stderr).
    every : int, optional
        Iterations between a chain's reports (default: its run split into
        :data:`PROGRESS_LINES`; then at most that many lines, one more when it does not
        divide the run).
    """

    def __init__(self, chains: int, warmup: int, samples: int, write=None,
                 every: int | None = None):
        self.chains, self.warmup, self.total = int(chains), int(warmup), int(warmup + samples)
        self.every = max(1, int(every) if every else -(-self.total // PROGRESS_LINES))
        marks = list(range(self.every, self.total + 1, self.every))
        if not marks or marks[-1] != self.total:
            marks.append(self.total)
        self.marks = marks        # the iterations at which each chain reports
        self._step = {m: m - (marks[k - 1] if k else 0) for k, m in enumerate(marks)}
        self.lines: list[str] = []
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._reports = 0
        self._done = 0            # iterations made, all chains together
        self._all_past = 0        # the last mark every chain has passed
        self.start()

    def start(self) -> None:
        """Start the clock (``run_nuts`` calls it just before sampling)."""
        self._t0 = self._t_last = time.perf_counter()
        self._f_last = 0.0

    def new_stage(self) -> None:
        """A new sampler is about to compile (pooled metric, stage 2): the next line gives no
        time-left estimate."""
        with self._lock:
            self._f_last = 0.0

    def report(self, i, prev=None) -> None:
        """Host callback: chain(s) at iteration(s) *i*, each a mark of :attr:`marks`; or, with
        *prev* (the iterations before the transition that ended at *i*: thinned draws make
        several at once), every mark in ``(prev, i]``."""
        its = np.atleast_1d(np.asarray(i)).astype(int).tolist()
        if prev is not None:
            before = np.atleast_1d(np.asarray(prev)).astype(int).tolist()
            its = [m for lo, hi in zip(before, its, strict=True)
                   for m in self.marks if lo < m <= hi]
        with self._lock:      # written under the lock too: whole lines, in order
            for it in its:
                n = self._counts.get(it, 0) + 1
                self._counts[it] = n
                if n == self.chains:
                    self._all_past = max(self._all_past, it)
                self._done += self._step.get(it, 0)
                self._reports += 1
                if self._reports % self.chains == 0:
                    line = self._line()
                    self.lines.append(line)
                    self._write(line)

    def _line(self) -> str:
        now = time.perf_counter()
        f = min(1.0, self._done / (self.chains * self.total))
        df = f - self._f_last
        # no estimate on the first line: its time includes the sampler's compilation
        pace = (now - self._t_last) / df if df > 0 and self._f_last > 0 else None
        self._t_last, self._f_last = now, f
        k = self._all_past
        line = (f"NUTS: {100 * f:.0f}% of {self.chains} x {self.total} iterations after "
                f"{now - self._t0:.0f} s")
        if k and self.chains > 1:
            line += (f", every chain past iteration {k} "
                     f"({'warm-up' if k <= self.warmup else 'sampling'})")
        if f < 1.0 and pace is not None:
            line += f"; about {pace * (1.0 - f):.0f} s left at the recent pace"
        return line


def progress_mode(progress_bar) -> bool | str:
    """*progress_bar* as True (bars), False or ``"log"`` (plain lines); None: bars when
    stderr is a terminal. Other strings raise :class:`~il2pkpd.errors.OptionError`."""
    if progress_bar is None:
        return bool(os.isatty(2))
    if isinstance(progress_bar, str):
        if progress_bar != "log":
            raise OptionError(f"progress_bar {progress_bar!r} is not allowed; use True, False "
                              "or 'log'.")
        return "log"
    return bool(progress_bar)


class _LoggedNUTS(NUTS):
    """NUTS whose chains report to a :class:`ProgressLog` at its marks (*offset*: iterations
    of the run's earlier stages; *progress* None: no reports), and which, with *thin* > 1,
    makes *thin* transitions per kept draw after warm-up (one per warm-up iteration). A kept
    draw's ``diverging`` then says whether any transition since the previous kept draw
    diverged, so divergence counts and warnings cover every transition, not only the kept
    ones (Stan's ``thin`` reports the kept iterations only). Its other statistics
    (``num_steps``, ``energy``, ``accept_prob``) are those of its own transition, a sample
    of one in *thin* (ArviZ derives the tree depth from ``num_steps``)."""

    def __init__(self, model=None, *, progress: ProgressLog | None = None, offset: int = 0,
                 thin: int = 1, **kwargs):
        super().__init__(model, **kwargs)
        self._progress = progress
        self._offset = int(offset)
        self._thin = int(thin)
        self._warmup = 0

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None):
        self._warmup = int(num_warmup)
        model_kwargs = {} if model_kwargs is None else model_kwargs
        return super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)

    def sample(self, state, model_args, model_kwargs):
        start_i = state.i
        if self._thin == 1:
            state = super().sample(state, model_args, model_kwargs)
        else:
            def body(_, carry):
                s, div = carry
                s = NUTS.sample(self, s, model_args, model_kwargs)
                return s, div | s.diverging

            n = jnp.where(jnp.all(state.i < self._warmup), 1, self._thin)
            state, div = jax.lax.fori_loop(0, n, body,
                                           (state, jnp.zeros_like(state.diverging)))
            state = state._replace(diverging=div)
        if self._progress is None:
            return state
        # (chains,) when the chains are vectorized (they move in step)
        i = jnp.atleast_1d(state.i) + self._offset
        i0 = jnp.atleast_1d(start_i) + self._offset
        log = self._progress
        crossed = (i[0] // log.every > i0[0] // log.every) | ((i[0] >= log.total)
                                                             & (i0[0] < log.total))
        jax.lax.cond(crossed, lambda a, b: jax.debug.callback(log.report, a, b),
                     lambda a, b: None, i, i0)
        return state


@dataclass(frozen=True)
class MapResult:
    """Mode of the (unconstrained) posterior.

    Attributes
    ----------
    unconstrained : dict
        Site name -> unconstrained value.
    constrained : dict
        Site name -> value (deterministic sites included).
    potential : float
        Potential energy (negative log density, unconstrained space) at the mode.
    iterations : int
        L-BFGS iterations.
    converged : bool
        Gradient norm fell below the tolerance.
    grad_norm : float
    seconds : float
    """

    unconstrained: dict
    constrained: dict
    potential: float
    iterations: int
    converged: bool
    grad_norm: float
    seconds: float


def _init(pm, obs, key):
    info = initialize_model(key, pm, model_kwargs={"obs": obs},
                            init_strategy=init_to_median(num_samples=15))
    return info


def lbfgs_solver(f_of, *, max_iter: int, tol: float):
    """L-BFGS (optax, zoom line search) as ``solve(x0, aux) -> (x, value, iterations,
    grad_norm)`` minimising ``f_of(x, aux)`` over x until the gradient's infinity norm relative
    to 1 + |f| is at most *tol* or *max_iter* iterations; jitted once (*aux* is an argument,
    so new auxiliary data such as a curvature do not recompile).
    """
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


def run_map(pm, obs, *, seed: int = 0, max_iter: int = 2000, tol: float = 1e-6,
            restarts: int = 1, centred: bool = False) -> MapResult:
    """Maximise the posterior density with L-BFGS (optax) in unconstrained space.

    Parameters
    ----------
    pm : PopulationModel
    obs : array
        Observed values (``pm.observed``).
    seed : int
        Seed of the initial values (prior medians with jitter for restarts > 1).
    max_iter : int
        L-BFGS iteration limit.
    tol : float
        Stop when the gradient's infinity norm falls below ``tol`` (relative to 1 + |U|).
    restarts : int
        Number of starting points; the best mode is returned.
    centred : bool
        Maximise the joint density of the centred parametrisation (random effects eta rather
        than the standard normal z of the sampler). That density is unbounded as the IIV SDs
        go to 0 and the optimiser usually collapses there, so the default (False) maximises
        the sampler's own non-centred density: a stable start for NUTS whose IIV SDs are
        inflated (a joint mode is not a marginal one). Use SVI or NUTS for IIV estimates.

    Returns
    -------
    MapResult
    """

    t0 = time.perf_counter()
    key = jax.random.PRNGKey(seed)
    info = _init(pm, obs, key)
    x0_tree = info.param_info.z
    x0, unravel = ravel_pytree(x0_tree)
    potential_fn = info.potential_fn

    n_subj = pm.n_subjects

    orders, _, z_names = pm.iiv_layout()

    def centred_correction(x):
        # log |d eta / d z| over subjects (the non-centred part S_NN of each block's Cholesky
        # factor S = diag(omega) L): turns the non-centred (or mixed) joint density into the
        # centred one, whose mode is the usual joint MAP (the non-centred mode inflates the IIV
        # SDs)
        if not centred or not (z_names or pm.spec.partial_weights):
            return 0.0
        c = info.postprocess_fn(unravel(x))
        # weight of log S_kk: 1 for non-centred members, 1 - w for partially centred ones
        weight = {p: 1.0 for p in z_names}
        # (per-subject weights: their mean, as the correction sums over subjects)
        weight.update({p: 1.0 - float(np.mean(w)) for p, w in pm.spec.partial_weights.items()})
        total = sum(wt * jnp.log(c[f"omega_{p}"]) for p, wt in weight.items())
        for k, order in enumerate(orders):
            rows = [i for i, p in enumerate(order) if p in weight]
            if len(order) > 1 and rows:
                diag = jnp.diagonal(c[f"L_omega_{k + 1}"])
                wts = np.asarray([weight[order[i]] for i in rows])
                total = total + jnp.sum(wts * jnp.log(diag[np.asarray(rows)]))
        return n_subj * total

    def f(x):
        return potential_fn(unravel(x)) + centred_correction(x)

    solve = lbfgs_solver(lambda x, _: f(x), max_iter=max_iter, tol=tol)

    best = None
    for r in range(max(1, restarts)):
        start = x0 if r == 0 else x0 + 0.5 * jax.random.normal(jax.random.PRNGKey(seed + r),
                                                               x0.shape)
        x, value, iters, gnorm = solve(start, None)
        if best is None or (np.isfinite(float(value)) and float(value) < float(best[1])):
            best = (x, value, iters, gnorm)
    x, value, iters, gnorm = best
    unc = unravel(x)
    constrained = info.postprocess_fn(unc)
    return MapResult(unconstrained=unc, constrained={k: v for k, v in constrained.items()},
                     potential=float(value), iterations=int(iters),
                     converged=bool(float(gnorm) <= max(tol, 1e-4)), grad_norm=float(gnorm),
                     seconds=time.perf_counter() - t0)


def run_laplace(pm, obs, *, seed: int = 0, draws: int = 1000, map_result: MapResult | None = None,
                ) -> tuple[dict, MapResult, dict]:
    """Laplace approximation: a Gaussian at the unconstrained mode with the inverse Hessian.

    Parameters
    ----------
    pm : PopulationModel
    obs : array
    seed : int
    draws : int
        Number of draws from the approximation.
    map_result : MapResult, optional
        A mode already found (else :func:`run_map` is called).

    Returns
    -------
    samples : dict
        Site name -> array (draws, ...), constrained, deterministic sites included.
    map_result : MapResult
    info : dict
        ``{"min_eigenvalue": ..., "clipped": n}`` of the Hessian.
    """
    mres = map_result or run_map(pm, obs, seed=seed)
    key = jax.random.PRNGKey(seed + 1)
    info = _init(pm, obs, key)
    x, unravel = ravel_pytree(mres.unconstrained)

    def f(v):
        return info.potential_fn(unravel(v))

    hess = np.asarray(jax.jit(jax.hessian(f))(x))
    hess = 0.5 * (hess + hess.T)
    w, v = np.linalg.eigh(hess)
    floor = 1e-8 * max(1.0, float(np.max(np.abs(w))))
    clipped = int(np.sum(w < floor))
    w = np.maximum(w, floor)
    cov_sqrt = v / np.sqrt(w)  # columns scaled: cov = cov_sqrt cov_sqrt^T
    eps = np.asarray(jax.random.normal(key, (draws, x.shape[0])))
    xs = np.asarray(x)[None, :] + eps @ cov_sqrt.T
    post = jax.jit(jax.vmap(lambda v_: info.postprocess_fn(unravel(v_))))
    samples = post(jnp.asarray(xs))
    return dict(samples), mres, {"min_eigenvalue": float(np.min(np.linalg.eigvalsh(hess))),
                                 "clipped": clipped}


def run_svi(pm, obs, *, seed: int = 0, steps: int = 3000, learning_rate: float = 0.01,
            draws: int = 1000, progress_bar: bool = False) -> tuple[dict, dict]:
    """Variational approximation: SVI with a full-rank Gaussian guide in unconstrained space
    (``AutoMultivariateNormal``), Adam, ``steps`` steps.

    Returns
    -------
    samples : dict
        Site name -> array (draws, ...), constrained, deterministic sites included.
    info : dict
        ``{"elbo_final": ..., "seconds": ...}`` (ELBO averaged over the last 10% of steps).
    """
    import optax
    from numpyro.infer import SVI, Predictive, Trace_ELBO
    from numpyro.infer.autoguide import AutoMultivariateNormal

    t0 = time.perf_counter()
    guide = AutoMultivariateNormal(pm, init_loc_fn=init_to_median(num_samples=15),
                                   init_scale=0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(learning_rate))
    svi = SVI(pm, guide, optimizer, Trace_ELBO())
    res = svi.run(jax.random.PRNGKey(seed), steps, obs=obs, progress_bar=progress_bar)
    losses = np.asarray(res.losses)
    tail = losses[-max(1, steps // 10):]
    latents = guide.sample_posterior(jax.random.PRNGKey(seed + 1), res.params,
                                     sample_shape=(draws,))
    det = Predictive(pm, posterior_samples=latents)(jax.random.PRNGKey(seed + 2), obs=None)
    smp = {**latents, **{k: v for k, v in det.items() if k != "DV"}}
    return smp, {"elbo_final": float(-np.mean(tail)), "steps": steps,
                 "seconds": time.perf_counter() - t0}


def choose_chain_method(chains: int, requested: str | None, is_ode: bool) -> str:
    """Pick ``parallel`` when there are enough JAX devices (CPU cores made devices with
    ``numpyro.set_host_device_count``), else ``sequential``; ``vectorized`` for ODE models on
    one device with several chains is not faster on CPU, so sequential is used there too.

    diffrax-based ODE models (*is_ode*) cannot use ``parallel`` in this stack (pmap over
    diffrax's loops fails); they get ``sequential`` (CPU) or ``vectorized`` (GPU). The
    engine's Rodas4 path runs in parallel like closed forms.
    """
    allowed = ("parallel", "sequential", "vectorized")
    if requested is not None and requested not in allowed:
        raise OptionError(f"chain_method '{requested}' is not allowed; use one of {allowed}.")
    if chains <= 1:
        return "sequential"
    if requested is not None:
        return requested
    backend = jax.default_backend()
    if is_ode:
        return "vectorized" if backend != "cpu" else "sequential"
    if jax.local_device_count() >= chains:
        return "parallel"
    return "vectorized" if backend != "cpu" else "sequential"


def _uses_diffrax(pm, is_ode: bool) -> bool:
    """Whether *pm*'s predictions come from diffrax's loops (parallel chains fail there; the
    Rodas4 path and closed forms run in parallel). Unknown prediction functions of ODE
    models count as diffrax."""
    return bool(is_ode) and getattr(pm.predict_fn, "solver_path", "diffrax") == "diffrax"


def _dense_arg(pm, dense_mass: str | bool):
    if dense_mass is True or dense_mass == "full":
        return True
    if dense_mass is False or dense_mass == "diagonal":
        return False
    if dense_mass not in ("population", "auto"):
        raise OptionError(f"dense_mass '{dense_mass}' is not allowed; use one of "
                          f"{DENSE_OPTIONS}.")
    spec = pm.spec
    if dense_mass == "auto":
        n_pop = len(spec.population_names())
        if n_pop + pm.n_subjects * len(spec.iiv) <= DENSE_FULL_MAX_DIM:
            return True
    sites = list(spec.estimated) + [f"omega_{p}" for p in spec.iiv]
    sites += [f"L_omega_{k + 1}" for k, b in enumerate(spec.blocks) if len(b) > 1]
    for c in spec.covariates:
        if not c.prior.is_fixed:
            sites += list(c.site_names)
    for r in spec.residuals:
        sites += [n for n, p in r.priors.items() if not p.is_fixed]
    return [tuple(sites)] if sites else False


@dataclass(frozen=True)
class LaplaceStart:
    """A NUTS start point and metric from the joint mode of the non-centred model.

    Attributes
    ----------
    unconstrained : dict
        Site name -> unconstrained value of the sampled model at the mapped mode.
    inverse_mass_matrix : numpy.ndarray or None
        Dense inverse mass matrix over every latent dimension (sites in sorted order, as
        NumPyro's ``dense_mass=True``), the inverse of the sampled model's Hessian there with
        eigenvalues floored; None when the latent space is larger than ``max_dim``.
    info : dict
        ``map_seconds``, ``map_iterations``, ``map_converged``, ``hessian_seconds``,
        ``eigenvalue_min``/``max`` (before flooring) and ``eigenvalues_floored``.
    """

    unconstrained: dict
    inverse_mass_matrix: np.ndarray | None
    info: dict


def noncentred_twin(pm):
    """The same population model with every random effect sampled non-centred (``z``)."""
    import dataclasses

    if pm.spec.parametrization == "noncentred":
        return pm
    spec = dataclasses.replace(pm.spec, centred=False, centred_iiv=(), partial_iiv=())
    return dataclasses.replace(pm, spec=spec)


def reparametrized(pm, parametrization, where: str = "parametrization"):
    """The same population model with another IIV parametrization (same density, other
    coordinates): *parametrization* as the population table's ``parametrization`` entry
    (``"centred"``, ``"noncentred"``, ``{"centred": [...], "partial": {...}}`` or the text
    form ``"centred=CL,V1"``). Bad values raise :class:`~il2pkpd.errors.OptionError` naming
    *where*."""
    import dataclasses

    from il2pkpd.inference.spec import _parametrization

    names = [p.name for p in pm.spec.parameters]
    centred, centred_iiv, partial_iiv = _parametrization(parametrization, pm.spec.iiv, names,
                                                         where, cls=OptionError)
    spec = dataclasses.replace(pm.spec, centred=centred, centred_iiv=centred_iiv,
                               partial_iiv=partial_iiv)
    return dataclasses.replace(pm, spec=spec)


def _latent_sites(fn, **kwargs) -> tuple[str, ...]:
    """Names of the latent sample sites of a model-like callable run with *kwargs*."""
    tr = numpyro.handlers.trace(numpyro.handlers.seed(fn, 0)).get_trace(**kwargs)
    return tuple(k for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"])


def _iiv_scale(domain: str, ind):
    """Individual parameter values on their IIV scale (log, logit or identity)."""
    ind = jnp.asarray(ind)
    if domain in ("positive", "nonnegative"):
        return jnp.log(ind)
    if domain == "unit_interval":
        return jnp.log(ind) - jnp.log1p(-ind)
    return ind


def sites_from_noncentred(pm, values: dict) -> dict:
    """Constrained latent-site values of *pm* (any IIV parametrization) that give the same
    population and individual parameters as *values*, the constrained site values
    (deterministics ``ind_<P>`` included) of its non-centred twin.

    Per block with correlation matrix R (block order), the sampled order puts the centred
    members C first, then the non-centred, then the partially centred ones: ``L_omega``
    becomes the Cholesky factor of R permuted to that order, ``phi_C`` the individual
    parameters on their IIV scale (log, logit or identity), ``z`` the non-centred members'
    coordinates of ``w = S^-1 eta`` with ``S = diag(omega) L_omega``, and a partially centred
    member P (weight a, row r) ``z_P = a m + s^a w_r`` with ``s = S_rr`` and ``m = phi_P - s
    w_r`` (its location plus conditional mean). Pure JAX (differentiable:
    :func:`laplace_start` carries a covariance through it).
    """
    spec = pm.spec
    partial = spec.partial_weights
    orders, phi_names, z_names = pm.iiv_layout()
    out = {k: v for k, v in values.items()
           if k not in ("z", "phi") and not k.startswith(("L_omega_", "ind_", "corr_"))}
    if spec.iiv:
        z_nc = jnp.asarray(values["z"])
        phi_cols: dict = {}
        z_cols: dict = {}
        col = 0
        for k, (block, order) in enumerate(zip(spec.blocks, orders, strict=True)):
            m = len(block)
            om = jnp.stack([jnp.asarray(values[f"omega_{p}"]) for p in block])
            L = jnp.asarray(values[f"L_omega_{k + 1}"]) if m > 1 else jnp.ones((1, 1))
            eta = z_nc[:, col:col + m] @ (om[:, None] * L).T           # (n, m), block order
            col += m
            perm = np.asarray([block.index(p) for p in order])
            corr = (L @ L.T)[perm[:, None], perm[None, :]]
            Lp = jnp.linalg.cholesky(corr)
            if m > 1:
                out[f"L_omega_{k + 1}"] = Lp
            st = om[perm][:, None] * Lp
            w = jax.scipy.linalg.solve_triangular(st, eta[:, perm].T, lower=True).T
            for jj, p in enumerate(order):
                if p in phi_names:
                    phi_cols[p] = _iiv_scale(spec.domain(p), values[f"ind_{p}"])
                elif p in partial:
                    a, sd = jnp.asarray(partial[p]), st[jj, jj]
                    m = _iiv_scale(spec.domain(p), values[f"ind_{p}"]) - sd * w[:, jj]
                    out[f"z_{p}"] = a * m + sd ** a * w[:, jj]
                else:
                    z_cols[p] = w[:, jj]
        if phi_names:
            out["phi"] = jnp.stack([phi_cols[p] for p in phi_names], axis=1)
        if z_names:
            out["z"] = jnp.stack([z_cols[p] for p in z_names], axis=1)
    latent = _latent_keys(pm)
    missing = sorted(set(latent) - set(out))
    if missing:
        raise RuntimeError(f"no value for the latent sites {missing}")
    return {k: out[k] for k in latent}


def _random_effects_at(pm, values: dict):
    """*pm*'s random effects eta (subject, ``spec.iiv`` order; IIV scale) and individual
    parameters at *values*, constrained values of its parameter sites (its own model code,
    run on them; pure JAX)."""
    from numpyro import handlers

    missing = sorted(set(_latent_sites(pm.parameters)) - set(values))
    if missing:
        raise RuntimeError(f"no value for the latent sites {missing}")
    with handlers.block(), handlers.seed(rng_seed=0), handlers.substitute(data=values):
        tv = pm.typical_values()
        terms = pm.covariate_terms()
        eta = pm.random_effects(tv, terms)
        params = pm.individual_parameters(tv, eta, terms)
    return eta, params


def centring_weights(pm, draws: dict, per_subject: bool = False) -> tuple[dict, dict]:
    """Partial-centring weights of *pm*'s IIV parameters from posterior draws.

    Each parameter P gets ``(1 - s)^2``, s its eta-shrinkage
    (:func:`il2pkpd.report.shrinkage.eta_shrinkage_value`): in the normal-normal model, where
    a subject's data carry variance v about its parameter and the IIV variance is omega^2,
    ``1 - s = omega / sqrt(omega^2 + v)``, so the weight is ``omega^2 / (omega^2 + v)``, the
    one that makes the sampled coordinate independent of the population parameters a
    posteriori (Papaspiliopoulos, Roberts & Skold, Stat Sci 2007;22:59). 0: non-centred, 1:
    centred.

    Parameters
    ----------
    pm : PopulationModel
    draws : dict
        Unconstrained draws of *pm*'s latent sites (NumPyro's sampling coordinates), with
        leading axes (chain, draw).
    per_subject : bool
        One weight per subject instead: ``1 - v_i / T`` (clipped to [0, 1]), v_i the variance
        of subject i's eta over the draws and T the total variance of eta over draws and
        subjects, ``mean_i v_i + var_i E[eta_i]`` (law of total variance). That is the same
        normal-normal weight ``omega^2 / (omega^2 + V_i)``, subject i's posterior variance
        being ``omega^2 V_i / (omega^2 + V_i)``, with subject i's own data variance V_i and
        the marginal variance of eta standing in for omega^2. Subjects differ in how much
        their data say (a deep nadir pins MTT); one weight for all leaves the best-informed
        subjects' coordinates curved (on the Friberg benchmark, one subject's MTT set the step
        size). T rather than the draws' omega^2: a poorly identified omega (omega_Q on the
        Friberg benchmark) wanders in a short stage 1, and dividing by it made every subject
        too centred (seed 3: R-hat 1.063 against 1.009 with T).

    Returns
    -------
    weights, shrinkage : dict
        IIV parameter -> weight in [0, 1] (*per_subject*: a tuple of them, one per subject),
        and -> eta-shrinkage.
    """
    from numpyro.infer.util import constrain_fn

    from il2pkpd.report.shrinkage import centring_weight, eta_shrinkage_value

    if not pm.spec.iiv:
        return {}, {}
    par = set(_latent_sites(pm.parameters))

    def one(u):
        c = constrain_fn(pm.parameters, (), {}, {k: u[k] for k in par},
                         return_deterministic=True)
        eta, _ = _random_effects_at(pm, c)
        return eta, jnp.stack([c[f"omega_{p}"] for p in pm.spec.iiv])

    eta, om = jax.jit(jax.vmap(jax.vmap(one)))({k: draws[k] for k in par})
    eta, om = np.asarray(eta), np.asarray(om)
    weights, shrinkage = {}, {}
    for j, p in enumerate(pm.spec.iiv):
        _, _, sh = eta_shrinkage_value(eta[..., j], om[..., j])
        sh = float(np.clip(sh, 0.0, 1.0)) if np.isfinite(sh) else 1.0
        shrinkage[p] = sh
        weights[p] = centring_weight(sh)
        if per_subject:
            e = eta[..., j].reshape(-1, eta.shape[-2])             # (draws, subject)
            w = 1.0 - e.var(axis=0) / e.var()      # e.var(): the total variance T
            weights[p] = tuple(float(x) for x in np.clip(w, 0.0, 1.0))
    return weights, shrinkage


def sites_to_noncentred(pm, values: dict) -> dict:
    """The inverse of :func:`sites_from_noncentred`: constrained site values of *pm*'s
    non-centred twin (deterministics ``ind_<P>`` of the varying parameters included) that give
    the same population and individual parameters as *values*, constrained values of *pm*'s
    parameter sites (any IIV parametrization; sites outside the parameter part, the
    residual SDs, pass through).

    The random effects eta (IIV scale) come from *pm*'s own model code run on *values*; per
    block, ``L_omega`` becomes the Cholesky factor of the correlation matrix in block order
    and ``z = S^-1 eta`` with ``S = diag(omega) L_omega``. Pure JAX.
    """
    spec = pm.spec
    eta, params = _random_effects_at(pm, values)
    own = {f"z_{p}" for p in spec.partial_weights} | {"z", "phi"}
    out = {k: v for k, v in values.items()
           if k not in own and not k.startswith(("L_omega_", "ind_", "corr_"))}
    if spec.iiv:
        orders, _, _ = pm.iiv_layout()
        zs = []
        for k, (block, order) in enumerate(zip(spec.blocks, orders, strict=True)):
            om = jnp.stack([jnp.asarray(values[f"omega_{p}"]) for p in block])
            if len(block) > 1:
                L = jnp.asarray(values[f"L_omega_{k + 1}"])               # sampled order
                idx = np.asarray([order.index(p) for p in block])
                Lb = jnp.linalg.cholesky((L @ L.T)[idx[:, None], idx[None, :]])
                out[f"L_omega_{k + 1}"] = Lb
            else:
                Lb = jnp.ones((1, 1))
            e = eta[:, np.asarray([spec.iiv.index(p) for p in block])]
            zs.append(jax.scipy.linalg.solve_triangular(om[:, None] * Lb, e.T, lower=True).T)
        out["z"] = jnp.concatenate(zs, axis=1)
    for p in pm.varying:
        out[f"ind_{p}"] = params[p]
    return out


def parametrization_map(src, dst):
    """The map between two IIV parametrizations of one population model: a pure JAX function
    of a dict of *src*'s unconstrained latent-site values (NumPyro's sampling coordinates)
    returning *dst*'s that give the same population and individual parameters (through the
    non-centred form: :func:`sites_to_noncentred`, then :func:`sites_from_noncentred`).
    Sites outside the parameter part (the residual SDs) pass through unchanged."""
    from numpyro.infer.util import constrain_fn, unconstrain_fn

    par_src = set(_latent_sites(src.parameters))
    par_dst = set(_latent_sites(dst.parameters))
    keys = _latent_keys(dst)

    def fn(u: dict) -> dict:
        c = constrain_fn(src.parameters, (), {}, {k: u[k] for k in par_src},
                         return_deterministic=True)
        nc = sites_to_noncentred(src, c)
        s = sites_from_noncentred(dst, {**nc, **{k: u[k] for k in u if k not in par_src}})
        us = unconstrain_fn(dst.parameters, (), {}, {k: s[k] for k in par_dst})
        us.update({k: s[k] for k in s if k not in par_dst})
        return {k: us[k] for k in keys}

    return fn


_LATENT_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _latent_keys(pm) -> tuple[str, ...]:
    """The latent sample sites of *pm* (one eager trace per model, cached)."""
    if pm not in _LATENT_KEYS:
        _LATENT_KEYS[pm] = _latent_sites(pm, obs=pm.observed)
    return _LATENT_KEYS[pm]


def _fd_hessian(grad, x, h: float = 1e-4) -> np.ndarray:
    """Symmetrised central differences of *grad* (2 n gradients)."""
    n = x.size
    hess = np.zeros((n, n))
    for i in range(n):
        e = jnp.zeros(n).at[i].set(h)
        hess[:, i] = (np.asarray(grad(x + e)) - np.asarray(grad(x - e))) / (2 * h)
    return 0.5 * (hess + hess.T)


def laplace_start(pm, obs, *, seed: int = 0, hessian_floor: float = 1.0,
                  max_dim: int = DENSE_FULL_MAX_DIM, metric: str = "hessian",
                  map_result: MapResult | None = None) -> LaplaceStart:
    """NUTS start point and dense metric from a Laplace approximation.

    The joint mode of a centred model does not exist (its density grows without bound as an
    IIV SD goes to 0), so the mode is found in the non-centred parametrization
    (:func:`run_map`) and mapped to *pm*'s own (:func:`sites_from_noncentred`). The metric:

    - ``hessian`` (default): the inverse of the Hessian of *pm*'s own potential at the mapped
      point, eigenvalues floored at *hessian_floor* (the mapped point is not a mode of a
      centred model: directions of negative curvature get variance ``1 / hessian_floor``);
    - ``mapped``: the Laplace covariance of the non-centred model (inverse Hessian
      of its potential at its mode) carried to *pm*'s unconstrained coordinates by the
      Jacobian J of the map, ``J H^-1 J^T`` (delta method; the same Gaussian, other
      coordinates; positive definite whenever the mode is one; eigenvalues of H below 1e-6
      of the largest, flat or negative curvature where the optimiser stopped short, are
      replaced by *hessian_floor*). On the Friberg benchmark (centred, 4 x (500 + 1,000))
      it did worse than ``hessian``: one chain adapted a step size of 0.006 (others
      0.04-0.07), 114 divergences, min bulk ESS 152, R-hat 1.026, 3,400 s, against 55, 549,
      1.008 and 2,844 s, although a 2 x (200 + 100) run had suggested 92 leapfrog steps per
      draw against 123.

    Hessians are central differences of the gradient (step 1e-4: ODE gradients by adjoints
    have no forward mode); the map's Jacobian is forward-mode JAX.

    Parameters
    ----------
    pm : PopulationModel
    obs : array
    seed : int
    hessian_floor : float
        Smallest Hessian eigenvalue kept (unconstrained scale).
    max_dim : int
        Largest latent dimension given a metric (the Hessian costs 2 gradients per
        dimension); beyond it only the start point is returned. :func:`run_nuts` uses
        :data:`LAPLACE_MAX_DIM`.
    metric : {"mapped", "hessian"}
    map_result : MapResult, optional
        The non-centred model's mode, if already found.

    Returns
    -------
    LaplaceStart
    """
    from numpyro.infer.util import unconstrain_fn

    if hessian_floor <= 0:
        raise OptionError(f"hessian_floor must be positive, got {hessian_floor}.")
    if metric not in ("mapped", "hessian"):
        raise OptionError(f"metric '{metric}' is not allowed; use 'mapped' or 'hessian'.")
    t0 = time.perf_counter()
    pm_nc = noncentred_twin(pm)
    mres = map_result or run_map(pm_nc, obs, seed=seed)
    t_map = time.perf_counter() - t0
    constrained = sites_from_noncentred(pm, mres.constrained)
    unc = unconstrain_fn(pm, (), {"obs": obs}, constrained)
    info = {"map_seconds": t_map, "map_iterations": mres.iterations,
            "map_converged": mres.converged}
    x, unravel = ravel_pytree(unc)
    if x.size > max_dim:
        info.update({"hessian_seconds": 0.0, "metric": "adapted (latent dimension "
                     f"{x.size} > {max_dim})"})
        return LaplaceStart(unconstrained=unc, inverse_mass_matrix=None, info=info)
    t1 = time.perf_counter()
    if metric == "hessian":
        ip = _init(pm, obs, jax.random.PRNGKey(seed))
        hess = _fd_hessian(jax.jit(jax.grad(lambda v: ip.potential_fn(unravel(v)))), x)
    else:
        ip = _init(pm_nc, obs, jax.random.PRNGKey(seed))
        x_nc, unravel_nc = ravel_pytree(mres.unconstrained)
        hess = _fd_hessian(jax.jit(jax.grad(lambda v: ip.potential_fn(unravel_nc(v)))), x_nc)
        # the map, through the parameter part of the models only (no ODE solve)
        fmap = parametrization_map(pm_nc, pm)

        def to_sampled(v):
            return ravel_pytree(fmap(unravel_nc(v)))[0]

        jac = np.asarray(jax.jacfwd(to_sampled)(x_nc))
        if not np.allclose(np.asarray(to_sampled(x_nc)), np.asarray(x), rtol=1e-8, atol=1e-8):
            raise RuntimeError("Laplace start: the mapped mode differs between the two routes")
    if not np.all(np.isfinite(hess)):
        info.update({"hessian_seconds": time.perf_counter() - t1,
                     "metric": "adapted (Hessian not finite at the start point)"})
        return LaplaceStart(unconstrained=unc, inverse_mass_matrix=None, info=info)
    w, v = np.linalg.eigh(hess)
    if metric == "mapped":
        # a mode: only (near-)flat or negative curvature, if the optimiser stopped short, is
        # replaced by the floor
        low = w < 1e-6 * max(1.0, float(np.abs(w).max()))
        inv = jac @ ((v / np.where(low, hessian_floor, w)) @ v.T) @ jac.T
    else:
        low = w < hessian_floor
        inv = (v / np.maximum(w, hessian_floor)) @ v.T
    info.update({"hessian_seconds": time.perf_counter() - t1, "metric": f"laplace ({metric})",
                 "eigenvalue_min": float(w.min()), "eigenvalue_max": float(w.max()),
                 "eigenvalues_floored": int(np.sum(low))})
    return LaplaceStart(unconstrained=unc, inverse_mass_matrix=0.5 * (inv + inv.T), info=info)


def tree_depths(max_tree_depth) -> int | tuple[int, int]:
    """*max_tree_depth* checked: one depth for warm-up and sampling, or a pair (warm-up,
    sampling) as NumPyro's NUTS takes it; each an integer from 1 to 30."""
    pair = (tuple(max_tree_depth) if isinstance(max_tree_depth, (tuple, list))
            else (max_tree_depth,))
    ok = len(pair) in (1, 2) and all(
        not isinstance(d, bool) and isinstance(d, (int, np.integer, float)) and int(d) == d
        and 1 <= d <= 30 for d in pair)
    if not ok:
        raise OptionError("max_tree_depth must be an integer from 1 to 30, or a pair of them "
                          f"(warm-up, sampling), got {max_tree_depth!r}.")
    depths = tuple(int(d) for d in pair)
    return depths[0] if len(set(depths)) == 1 else depths


def _site_index(sizes: dict) -> dict:
    """Positions of each site in the flat vector of *sizes* (site -> size) in sorted order,
    the order of JAX's ``ravel_pytree`` and of NumPyro's mass-matrix blocks."""
    index, pos = {}, 0
    for k in sorted(sizes):
        index[k] = np.arange(pos, pos + int(sizes[k]))
        pos += int(sizes[k])
    return index


def _cut_metric(cov: np.ndarray, sizes: dict, dense) -> dict | jax.Array:
    """A covariance over the flat latent vector (sites of *sizes* in sorted order) cut to
    NumPyro's mass-matrix structure *dense* (a list of site tuples, each a dense block in its
    tuple's order, the remaining sites one diagonal block in sorted order; ``True``: one dense
    block over all sites in sorted order; ``False``: one diagonal over them)."""
    names = sorted(sizes)
    index = _site_index(sizes)
    cov = np.asarray(cov)
    if dense is True:
        return {tuple(names): jnp.asarray(cov)}
    if dense is False:
        return jnp.asarray(np.diag(cov))
    out = {}
    for block in dense:
        ii = np.concatenate([index[k] for k in block])
        out[tuple(block)] = jnp.asarray(cov[np.ix_(ii, ii)])
    rest = tuple(k for k in names if not any(k in b for b in dense))
    if rest:
        out[rest] = jnp.asarray(np.diag(cov)[np.concatenate([index[k] for k in rest])])
    return out


def _laplace_blocks(lap: LaplaceStart, dense) -> dict | jax.Array:
    """The Laplace covariance cut to NumPyro's mass-matrix structure *dense*
    (see :func:`_cut_metric`)."""
    sizes = {k: int(np.size(v)) for k, v in lap.unconstrained.items()}
    return _cut_metric(lap.inverse_mass_matrix, sizes, dense)


def pooled_covariance(draws) -> tuple[np.ndarray, float, int]:
    """Covariance of warm-up draws pooled over chains, its correlations shrunk towards 0.

    *draws* has shape (chains, iterations, dim). The draws are standardised by their pooled
    SDs and the correlation matrix is shrunk towards the identity with the intensity of
    Schaefer & Strimmer (Stat Appl Genet Mol Biol 2005;4:32, target "D": diagonal, unequal
    variances; the Ledoit-Wolf idea, J Multivar Anal 2004;88:365, applied to correlations):
    a few hundred draws in a hundred or more dimensions give a noisy sample correlation whose
    small eigenvalues would force a small step size. The draws are centred on their grand mean,
    so chains that have not met yet widen the metric along the line between them. Written out
    here (a dozen lines): scikit-learn's ``ledoit_wolf`` shrinks the covariance itself towards a
    scaled identity, a poor target when the scales differ by orders of magnitude.

    Returns the covariance, the intensity (0..1) and the number of coordinates that did not
    move (given variance 1, NumPyro's default metric).
    """
    x = np.asarray(draws, dtype=float)
    x = x.reshape(-1, x.shape[-1])
    n, d = x.shape
    if n < 3:
        raise ValueError(f"pooled_covariance needs at least 3 draws, got {n}.")
    mean = x.mean(axis=0)
    x = x - mean
    sd = np.sqrt(np.sum(x * x, axis=0) / (n - 1))
    still = ~(sd > 1e-12 * np.maximum(1.0, np.abs(mean)))     # rounding of the mean aside
    sd = np.where(still, 1.0, sd)
    y = x / sd
    r = y.T @ y / (n - 1)                                 # unbiased sample correlation
    # Var(r_ij) = n / (n - 1)^3 sum_k (w_kij - mean_k w_kij)^2 with w_kij = y_ki y_kj, where
    # sum_k (w_kij - mean)^2 = sum_k w_kij^2 - n mean^2 and mean = r_ij (n - 1) / n
    mean_w = r * (n - 1) / n
    var_r = n / (n - 1) ** 3 * ((y * y).T @ (y * y) - n * mean_w * mean_w)
    off = ~np.eye(d, dtype=bool)
    denom = float(np.sum(r[off] ** 2))
    lam = 1.0 if denom <= 0 else float(np.clip(np.sum(var_r[off]) / denom, 0.0, 1.0))
    shrunk = (1.0 - lam) * r
    np.fill_diagonal(shrunk, 1.0)
    shrunk[still, :] = 0.0
    shrunk[:, still] = 0.0
    shrunk[still, still] = 1.0
    return sd[:, None] * shrunk * sd[None, :], lam, int(np.sum(still))


def run_nuts(pm, obs, *, chains: int = 4, warmup: int = 500, samples: int = 1000,
             target_accept: float = 0.8, max_tree_depth: int | tuple[int, int] = 10,
             seed: int = 0,
             dense_mass: str | bool = "auto", init: str = "median",
             chain_method: str | None = None, progress_bar: bool | str | None = None,
             is_ode: bool = False, map_result: MapResult | None = None,
             adapt_mass_matrix: bool | None = None,
             laplace: LaplaceStart | None = None,
             pooled_metric: bool = False, stage1_model=None,
             adaptive_centring: bool | str = False, thin: int = 1,
             shared_step_size: bool = False) -> tuple[MCMC, dict]:
    """Run NUTS.

    Parameters
    ----------
    pm : PopulationModel
    obs : array
        Observed values.
    chains, warmup, samples : int
        Number of chains, warm-up iterations and kept draws per chain.
    target_accept : float
        Target acceptance probability of step-size adaptation (0 < a < 1).
    max_tree_depth : int or (int, int)
        Maximum tree depth (at most 2**depth - 1 leapfrog steps per iteration), or a pair
        (warm-up, sampling) as NumPyro takes it.
    seed : int
    dense_mass : {"auto", "full", "population", "diagonal"}
        Mass matrix: dense over every latent dimension (``full``: it captures the ridge between
        a typical value and the mean of its non-centred random effects that slows sampling
        when subjects are informative, about 6x the ESS/s of ``population`` on a 24-subject
        test), dense over population parameters and diagonal over the random effects
        (``population``), or diagonal. ``auto``: full up to 200 latent dimensions, else
        population.
    init : {"median", "map", "laplace"}
        Start from prior medians (``init_to_median``), from the MAP estimate, or from the
        Laplace start (:func:`laplace_start`: the non-centred joint mode mapped to the sampled
        parametrization, with an inverse mass matrix from the Hessian there: see
        *adapt_mass_matrix*; start point only beyond :data:`LAPLACE_MAX_DIM` latent
        dimensions), jittered per chain. ``laplace`` suits rich data sampled centred, where
        warm-up from prior medians with an identity metric spends hundreds of leapfrog steps
        per iteration.
    chain_method : str, optional
        ``parallel``, ``sequential`` or ``vectorized``; chosen automatically when None.
    progress_bar : bool or "log", optional
        NumPyro's progress bars (default: on when stderr is a terminal), or ``"log"``: about
        :data:`PROGRESS_LINES` plain lines over the run, one per 1/20 of all chains'
        iterations, with the time left (:class:`ProgressLog`; for logs and batch jobs, where
        a bar cannot redraw).
    is_ode : bool
        The structural model is an ODE (affects the automatic chain method when it is solved
        by diffrax: see :func:`choose_chain_method`).
    map_result : MapResult, optional
        A MAP estimate to start from (``init="map"``).
    adapt_mass_matrix : bool, optional
        Adapt the mass matrix in warm-up. Default: yes, except with a full dense Laplace
        metric (*dense_mass* ``full``, or ``auto`` up to 200 latent dimensions), which is
        kept (on the 164-dimensional Friberg benchmark a dense metric estimated from
        NumPyro's per-chain warm-up windows, the first of 25 draws, did worse than the
        Laplace one). With ``population`` or ``diagonal`` the Laplace covariance, cut to that
        structure (its population block, the variances of the others), is the metric the
        adaptation starts from: the first warm-up window no longer runs on an identity metric.
    laplace : LaplaceStart, optional
        A Laplace start already computed (``init="laplace"``).
    pooled_metric : bool
        Cross-chain warm-up: the first :data:`POOL_FRACTION` of the warm-up iterations run on
        the metric above; their draws after the first :data:`POOL_DISCARD` (half), pooled
        over all chains, give a covariance (correlations shrunk by :func:`pooled_covariance`)
        cut to *dense_mass*'s structure, which then replaces the stage-1 metric and is kept
        while the rest of warm-up adapts the step size again from where each chain stopped
        (NumPyro's dual averaging, restarted at its usual window ends). The chains' total
        warm-up stays *warmup*. Meant for dense metrics, which one chain's windows of 25-200
        draws (NumPyro's per-chain adaptation) estimate poorly. On the 164-dimensional
        Friberg benchmark three
        of four chains then adapted step sizes of 0.06-0.09 against 0.02-0.05 with the
        Laplace metric; the fourth, in the posterior's tail, 0.019 (see
        benchmarks/bench_fit_friberg.py). Off by default.
    stage1_model : PopulationModel, optional
        With *pooled_metric*: run stage 1 on this twin of *pm* (the same model and data in
        another IIV parametrization, :func:`reparametrized`), its start point and metric
        (*init*, *laplace*, *dense_mass*) being its own; its draws and end points are then
        carried to *pm*'s coordinates by the exact map between the two
        (:func:`parametrization_map`), where the pooled covariance is formed and stages 2
        and sampling run. For partially centred models, whose Hessian at the Laplace start is
        a poor metric: on the Friberg benchmark with every IIV parameter partially centred,
        stage 1 on it took 577 leapfrog steps per iteration, against 155 for the centred
        twin (see benchmarks/bench_fit_friberg.py).
    adaptive_centring : bool or {"parameter", "subject"}
        With *pooled_metric*: stages 2 and sampling run with every IIV parameter partially
        centred, its weight ``(1 - s)^2`` from its eta-shrinkage s in stage 1's pooled draws
        (True or ``"parameter"``), or one weight per subject and parameter, ``1 - v_i /
        omega^2`` from subject i's eta variance v_i in those draws (``"subject"``; for data
        whose subjects differ in how much they say); see :func:`centring_weights`; rounded to
        0.01; 1: centred, 0: non-centred. Whatever *pm*'s own parametrization (stage 1 runs
        in it, or in *stage1_model*). The kept draws are then those of
        ``reparametrized(pm, info["parametrization"])``.
    thin : int
        Transitions per kept draw after warm-up: *samples* draws are kept per chain from
        ``samples * thin`` iterations. Each kept draw's ``diverging`` covers all the
        transitions since the previous kept draw (see :class:`_LoggedNUTS`). For a slowly
        mixing parameter whose ESS, not the wall time, limits R-hat (see
        benchmarks/bench_fit_iv2cmt.py).
    shared_step_size : bool
        With *pooled_metric* and several chains: after warm-up every chain samples with one
        step size, the median of the step sizes the chains adapted (each adapts its own, as
        usual, to the metric they share). Dual averaging ends on the geometry a chain saw
        last, so one chain can end on a step size well below the others' and, through NUTS's
        doubling trees, take twice their leapfrog steps per draw; with parallel chains that
        chain sets the wall time. The chain statistic ``step_size`` then holds the shared
        value; ``step_size_adapted`` each chain's own.

    Returns
    -------
    mcmc : numpyro.infer.MCMC
        The (second-stage, with *pooled_metric*) run holding the kept draws.
    info : dict
        ``chain_method``, ``seconds`` (sampling wall time, compilation included, both stages),
        ``map_seconds``, ``metric`` (laplace, pooled, adapted or identity),
        ``adapt_mass_matrix``, ``mass_matrix`` (dense, blocks or diagonal), ``step_size`` (per
        chain), ``laplace`` (with ``init="laplace"``), ``pooled_metric`` (stage sizes, pooled
        draws, shrinkage intensity, stage-1 metric, seconds and leapfrog steps) and, with
        ``progress_bar="log"``, ``progress_lines`` (the lines written).
    """
    if init not in INIT_OPTIONS:
        raise OptionError(f"init '{init}' is not allowed; use one of {', '.join(INIT_OPTIONS)}.")
    if not 0 < target_accept < 1:
        raise OptionError(f"target_accept must lie between 0 and 1, got {target_accept}.")
    for name, v, lo in (("chains", chains, 1), ("warmup", warmup, 0), ("samples", samples, 1),
                        ("thin", thin, 1)):
        if int(v) != v or v < lo:
            raise OptionError(f"{name} must be an integer >= {lo}, got {v}.")
    max_tree_depth = tree_depths(max_tree_depth)
    if adaptive_centring not in (False, True, "parameter", "subject"):
        raise OptionError(f"adaptive_centring must be True, False, 'parameter' or 'subject', "
                          f"got {adaptive_centring!r}.")
    if pooled_metric and warmup < POOLED_MIN_WARMUP:
        raise OptionError(f"pooled_metric needs at least {POOLED_MIN_WARMUP} warm-up "
                          f"iterations, got {warmup}.")
    if (stage1_model is not None or adaptive_centring) and not pooled_metric:
        raise OptionError("a stage-1 parametrization and adaptive centring need "
                          "pooled_metric (the pooled covariance carries stage 1 over).")
    if shared_step_size and not pooled_metric:
        raise OptionError("shared_step_size needs pooled_metric (chains share a step size "
                          "only where they share the metric).")
    pm_final = pm
    if stage1_model is not None:
        pm = stage1_model           # until the end of stage 1
    method = choose_chain_method(chains, chain_method, _uses_diffrax(pm, is_ode))
    progress_bar = progress_mode(progress_bar)
    progress = ProgressLog(chains, warmup, samples * thin) if progress_bar == "log" else None
    progress_bar = progress_bar is True
    dense = _dense_arg(pm, dense_mass)
    start = None
    map_seconds = 0.0
    metric: dict = {}
    if init == "laplace":
        if laplace is not None and set(laplace.unconstrained) != set(_latent_keys(pm)):
            raise OptionError("the Laplace start given was computed for another IIV "
                              "parametrization (its sites differ from the "
                              f"{'stage-1 ' if pm is not pm_final else ''}model's).")
        lap = laplace or laplace_start(pm, obs, seed=seed, max_dim=LAPLACE_MAX_DIM)
        start = lap.unconstrained
        map_seconds = lap.info["map_seconds"] + lap.info.get("hessian_seconds", 0.0)
        if lap.inverse_mass_matrix is not None:
            # a full dense metric is kept by default; a structured or diagonal cut of it only
            # starts the adaptation
            metric = {"inverse_mass_matrix": _laplace_blocks(lap, dense),
                      "adapt_mass_matrix": bool(adapt_mass_matrix)
                      if adapt_mass_matrix is not None else dense is not True}
    elif init == "map":
        mres = map_result or run_map(pm, obs, seed=seed)
        map_seconds = mres.seconds
        start = mres.unconstrained
    if not metric and adapt_mass_matrix is not None:
        metric = {"adapt_mass_matrix": bool(adapt_mass_matrix)}

    def make_kernel(metric, offset=0, model=pm, dense=dense):
        opts = dict(target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                    dense_mass=dense, init_strategy=init_to_median(num_samples=15), **metric)
        if progress is not None or thin > 1:
            return _LoggedNUTS(model, progress=progress, offset=offset, thin=thin, **opts)
        return NUTS(model, **opts)

    def metric_kind(metric):
        return ("laplace" if "inverse_mass_matrix" in metric
                else "adapted" if metric.get("adapt_mass_matrix", True) else "identity")

    kernel = make_kernel(metric)
    key = jax.random.PRNGKey(seed)
    init_params = None
    if start is not None:
        flat, unravel = ravel_pytree(start)
        jit_keys = jax.random.split(jax.random.PRNGKey(seed + 7), chains)
        starts = [unravel(flat + 0.05 * jax.random.normal(k, flat.shape)) for k in jit_keys]
        init_params = (jax.tree.map(lambda *xs: jnp.stack(xs), *starts) if chains > 1
                       else starts[0])
    t0 = time.perf_counter()
    if progress is not None:
        progress.start()
    pool_info = None
    if pooled_metric:
        # stage 1: the first POOL_FRACTION of warm-up on the metric set up above, its draws
        # kept (unconstrained: no model replay per draw)
        w1 = int(round(POOL_FRACTION * warmup))
        skip = min(w1 - 1, int(POOL_DISCARD * w1))
        key, k2 = jax.random.split(key)
        mcmc1 = MCMC(kernel, num_warmup=w1, num_samples=1, num_chains=chains,
                     chain_method=method, progress_bar=progress_bar,
                     postprocess_fn=lambda z: z)
        mcmc1.warmup(key, obs=obs, init_params=init_params, collect_warmup=True,
                     extra_fields=("num_steps",))
        draws = mcmc1.get_samples(group_by_chain=True)
        end = mcmc1.last_state.z
        stage1_par = weights = None
        if adaptive_centring and pm.spec.iiv:
            weights, shrink = centring_weights(pm, {k: v[:, skip:] for k, v in draws.items()},
                                               per_subject=adaptive_centring == "subject")
            weights = {p: tuple(round(v, 2) for v in w) if isinstance(w, tuple)
                       else round(w, 2) for p, w in weights.items()}
            pm_final = reparametrized(pm_final, {"partial": weights})
        if pm_final is not pm:
            # carried to the final parametrization by the exact map (no ODE solve)
            fmap = parametrization_map(pm, pm_final)
            draws = jax.jit(jax.vmap(jax.vmap(fmap)))(draws)
            end = jax.jit(jax.vmap(fmap) if chains > 1 else fmap)(end)
            stage1_par = pm.spec.parametrization_value()
            pm, dense = pm_final, _dense_arg(pm_final, dense_mass)
        sizes = {k: int(np.prod(np.shape(v)[2:])) for k, v in draws.items()}
        flat = np.concatenate([np.asarray(draws[k]).reshape(chains, w1, -1)[:, skip:]
                               for k in sorted(sizes)], axis=2)
        cov, lam, still = pooled_covariance(flat)
        steps1 = np.asarray(mcmc1.get_extra_fields(group_by_chain=True)["num_steps"])
        pool_info = {"warmup_stage1": w1, "warmup_stage2": warmup - w1,
                     "draws_pooled": int(flat.shape[0] * flat.shape[1]),
                     "shrinkage": lam, "coordinates_unmoved": still,
                     "stage1_metric": metric_kind(metric),
                     "stage1_parametrization": stage1_par,
                     "centring_weights": weights,
                     "stage1_eta_shrinkage": shrink if weights is not None else None,
                     "stage1_seconds": time.perf_counter() - t0,
                     "stage1_steps_mean": float(steps1.mean()),
                     "stage1_steps_total": int(steps1.sum()),
                     "stage1_step_size": [float(v) for v in np.ravel(
                         mcmc1.last_state.adapt_state.step_size)]}
        # stage 2: the pooled covariance, kept; the step size adapted again in the rest of
        # warm-up, from where each chain stopped
        metric = {"inverse_mass_matrix": _cut_metric(cov, sizes, dense),
                  "adapt_mass_matrix": False}
        kernel = make_kernel(metric, offset=w1, model=pm, dense=dense)
        if progress is not None:
            progress.new_stage()
        init_params = end
        warmup, key = warmup - w1, k2
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method=method, progress_bar=progress_bar)
    fields = ("diverging", "energy", "num_steps")
    adapted = None
    if shared_step_size and chains > 1:
        # the same warm-up as mcmc.run(key) would make; then one step size for all chains
        mcmc.warmup(key, obs=obs, init_params=init_params)
        state = mcmc.post_warmup_state
        eps = state.adapt_state.step_size
        adapted = [float(v) for v in np.ravel(eps)]
        mcmc.post_warmup_state = state._replace(adapt_state=state.adapt_state._replace(
            step_size=jnp.full_like(eps, np.median(adapted))))
        mcmc.run(jax.random.fold_in(key, 1), obs=obs, extra_fields=fields)
    else:
        mcmc.run(key, obs=obs, init_params=init_params, extra_fields=fields)
    jax.block_until_ready(mcmc.get_samples())
    out = {"chain_method": method, "seconds": time.perf_counter() - t0,
           "map_seconds": map_seconds, "thin": int(thin),
           "adapt_mass_matrix": metric.get("adapt_mass_matrix", True),
           "metric": "pooled" if pool_info is not None else metric_kind(metric),
           "parametrization": pm_final.spec.parametrization_value(),
           "mass_matrix": ("dense" if dense is True else "diagonal" if dense is False
                           else "blocks")}
    if pool_info is not None:
        out["pooled_metric"] = pool_info
    try:        # the adapted step size of each chain (a diagnostic of the metric's fit)
        out["step_size"] = [float(v) for v in np.ravel(mcmc.last_state.adapt_state.step_size)]
    except AttributeError:
        pass
    if adapted is not None:
        out["step_size_adapted"] = adapted
    if init == "laplace":
        out["laplace"] = dict(lap.info)
    if progress is not None:
        jax.effects_barrier()          # every host callback has run
        out["progress_lines"] = list(progress.lines)
    return mcmc, out


def set_host_devices(n: int) -> int:
    """Ask XLA for *n* CPU devices (parallel chains); returns the devices JAX actually has.

    Only effective before JAX initialises its backend (call it at program start).
    """
    numpyro.set_host_device_count(max(1, int(n)))
    return jax.local_device_count()
