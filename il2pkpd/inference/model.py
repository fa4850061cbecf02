"""The NumPyro population model: one function for fitting (``obs`` = data) and simulation.

:func:`build_population_model` turns a :class:`~il2pkpd.inference.spec.PopulationSpec`, the
event arrays of a dataset and a prediction function into a :class:`PopulationModel`, a callable
NumPyro model with plates ``subject`` (random effects, individual parameters) and ``obs`` (one
entry per used observation record, flattened over subjects).

Sample sites: typical values by parameter name; ``omega_<P>``; ``L_omega_<k>`` (Cholesky factor
of block k's correlation matrix, LKJ prior) with deterministic ``corr_<A>_<B>``;
``beta_<P>_<COV>``; ``sigma_<output>``; ``z`` (standard normal, subject x IIV, non-centred;
with ``parametrization = "centred"`` instead ``phi``, the individual parameters on the log
(logit, identity) scale, ``phi_i ~ MVN(log TV + covariate terms, Omega)``; a mixed
parametrization has both, ``phi`` over the centred and ``z`` over the non-centred IIV
parameters, columns as :meth:`PopulationModel.iiv_layout`, and ``z_<P>`` (subject) for each
partially centred parameter);
deterministic ``ind_<P>`` (individual parameters, subject) for parameters that vary between
subjects; the observed site ``DV`` (obs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import block_diag

from il2pkpd.errors import DatasetError, OptionError
from il2pkpd.inference.likelihood import ResidualError, RowGroups
from il2pkpd.inference.spec import PopulationSpec

__all__ = ["PopulationModel", "build_population_model", "ObservationTable"]

PredictFn = Callable[[dict], tuple[jax.Array, jax.Array]]


@dataclass(frozen=True)
class ObservationTable:
    """The used observations, flattened (numpy, static): one entry per ``obs`` plate element."""

    subject: np.ndarray  # (n_obs,) subject index
    column: np.ndarray  # (n_obs,) index into the padded observation axis
    dv: np.ndarray  # observed value (BLQ rows: LLOQ), output units
    blq: np.ndarray  # bool
    lloq: np.ndarray  # NaN where none
    output: np.ndarray  # output index
    time: np.ndarray | None = None
    dvid: np.ndarray | None = None
    cmt: np.ndarray | None = None
    row: np.ndarray | None = None  # index into Dataset.df


@dataclass(frozen=True, eq=False)
class PopulationModel:
    """A callable NumPyro model (``model(obs=None)``) plus what results need to label draws.

    Attributes
    ----------
    spec : PopulationSpec
    ids : numpy.ndarray
        Subject IDs, in subject-plate order.
    obs : ObservationTable
        The observations, in obs-plate order.
    covariates : dict
        Covariate name -> per-subject values (numpy) used by covariate effects.
    predict_fn : callable
        ``f(params) -> (pred (n_subjects, n_obs_max), ok (n_subjects,))``.
    """

    spec: PopulationSpec
    ids: np.ndarray
    obs: ObservationTable
    covariates: dict
    predict_fn: PredictFn

    @property
    def n_subjects(self) -> int:
        """Number of subjects."""
        return len(self.ids)

    @property
    def observed(self) -> jax.Array:
        """The observed values to pass as ``obs`` when fitting."""
        return jnp.asarray(self.obs.dv)

    def with_observed(self, dv) -> PopulationModel:
        """A copy whose observed values are *dv* (obs-plate order), e.g. simulated data."""
        import dataclasses

        dv = np.asarray(dv, dtype=float).reshape(self.obs.dv.shape)
        return dataclasses.replace(self, obs=dataclasses.replace(self.obs, dv=dv))

    @property
    def varying(self) -> tuple[str, ...]:
        """Parameters that differ between subjects (IIV or covariates)."""
        cov_pars = {c.parameter for c in self.spec.covariates}
        return tuple(p.name for p in self.spec.parameters
                     if p.name in self.spec.iiv or p.name in cov_pars)

    # ----------------------------------------------------------------------------------------
    def typical_values(self) -> dict:
        """Sample (or fix) the typical values; returns name -> scalar."""
        spec = self.spec
        tv = {}
        for p in spec.parameters:
            prior = spec.priors[p.name]
            if prior.is_fixed:
                tv[p.name] = jnp.asarray(prior.args[0])
            else:
                tv[p.name] = numpyro.sample(p.name, prior.to_numpyro(p.domain))
        return tv

    def _location(self, name: str, tv: dict, terms: dict):
        """Per-subject mean of parameter *name* on its IIV scale (log, logit or identity)."""
        t = tv[name]
        c = terms.get(name, 0.0)
        domain = self.spec.domain(name)
        if domain in ("positive", "nonnegative"):
            loc = jnp.log(t) + c
        elif domain == "unit_interval":
            tt = jnp.clip(t, 1e-12, 1 - 1e-12)
            loc = jnp.log(tt) - jnp.log1p(-tt) + c
        else:
            loc = t + c
        return jnp.broadcast_to(loc, (self.n_subjects,))

    def random_effects(self, tv: dict | None = None, terms: dict | None = None
                       ) -> jax.Array | None:
        """Sample IIV SDs, correlations and the subject random effects eta (n_subjects, n_iiv).

        *tv* and *terms* (typical values, covariate terms) are needed by the centred form.
        """
        spec = self.spec
        if not spec.iiv:
            return None
        # centred members of each block first (their marginal is the leading sub-block of
        # the Cholesky factor); the same order as the block when all or none are centred
        orders, phi_names, z_names = self.iiv_layout()
        omega = {p: numpyro.sample(f"omega_{p}", spec.omega_priors[f"omega_{p}"].to_numpyro(
            "positive")) for p in spec.iiv}
        scale_tril = []
        for k, (block, order) in enumerate(zip(spec.blocks, orders, strict=True)):
            om = jnp.stack([omega[p] for p in order])
            if len(order) == 1:
                scale_tril.append(om[:, None])
                continue
            L = numpyro.sample(f"L_omega_{k + 1}",
                               dist.LKJCholesky(len(order), spec.lkj_concentration))
            corr = L @ L.T
            for i in range(len(order)):
                for j in range(i + 1, len(order)):
                    a, b = sorted((order[i], order[j]), key=block.index)
                    numpyro.deterministic(f"corr_{a}_{b}", corr[i, j])
            scale_tril.append(om[:, None] * L)
        n = self.n_subjects
        centred = set(phi_names)
        if phi_names:
            # phi_i = transformed individual parameter ~ MVN(location_i, Omega_CC): the typical
            # value is then nearly independent of the individual values a posteriori
            loc = jnp.stack([self._location(p, tv, terms) for p in phi_names], axis=1)
            tril = block_diag(*[st[:nc, :nc] for st, nc in zip(
                scale_tril, [sum(p in centred for p in o) for o in orders], strict=True)
                if nc])
            with numpyro.plate("subject", n):
                phi = numpyro.sample("phi", dist.MultivariateNormal(loc, scale_tril=tril))
            dev = phi - loc
        if z_names:
            with numpyro.plate("subject", n):
                z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([len(z_names)]).to_event(1))
        partial = spec.partial_weights
        plain = set(z_names)
        cols = {}
        ic = iz = 0
        for st, order in zip(scale_tril, orders, strict=True):
            nc = sum(p in centred for p in order)
            n0 = sum(p in plain for p in order)
            m = len(order)
            parts = []
            std = []  # standardised coordinates of the members so far, S^-1 eta
            if nc:
                d = dev[:, ic:ic + nc]
                ic += nc
                parts.append(d)
                if m > nc:  # conditional on the centred members: S_NC S_CC^-1 (phi_C - loc_C)
                    std.append(jax.scipy.linalg.solve_triangular(st[:nc, :nc], d.T,
                                                                 lower=True).T)
            if n0:
                zb = z[:, iz:iz + n0]
                iz += n0
                e_n = zb @ st[nc:nc + n0, nc:nc + n0].T
                if nc:
                    e_n = e_n + std[0] @ st[nc:nc + n0, :nc].T
                parts.append(e_n)
                std.append(zb)
            for r in range(nc + n0, m):
                # partially centred: u ~ N(lam mu, s^lam), eta = mu - loc + s^(1-lam) (u - lam mu)
                # with mu, s the conditional mean and SD given the members before it
                p = order[r]
                lam = jnp.asarray(partial[p])       # one weight, or one per subject
                if lam.ndim and lam.shape != (n,):
                    raise OptionError(f"parametrization partial {p}: {lam.size} per-subject "
                                      f"centring weights for {n} subjects.")
                loc_p = self._location(p, tv, terms)
                shift = (jnp.concatenate(std, axis=1) @ st[r, :r] if r
                         else jnp.zeros((n,), dtype=loc_p.dtype))
                mu = loc_p + shift
                sd = st[r, r]
                with numpyro.plate("subject", n):
                    u = numpyro.sample(f"z_{p}", dist.Normal(lam * mu, sd ** lam))
                zr = (u - lam * mu) / sd ** lam
                parts.append((shift + sd * zr)[:, None])
                std.append(zr[:, None])
            eta_block = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
            for k, p in enumerate(order):
                cols[p] = eta_block[:, k]
        return jnp.stack([cols[p] for p in spec.iiv], axis=1)

    def iiv_layout(self) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...], tuple[str, ...]]:
        """How the random effects are sampled.

        Returns
        -------
        orders : tuple of tuple of str
            Each block of ``spec.blocks`` with its centred members first, then the
            non-centred ones, then the partially centred ones (the order of its
            ``L_omega_<k>`` rows and columns).
        phi_names : tuple of str
            Columns of the ``phi`` site (centred individual parameters), empty if none.
        z_names : tuple of str
            Columns of the ``z`` site (standard normal), empty if none. Each partially
            centred parameter ``P`` has its own site ``z_<P>`` (subject).
        """
        centred = set(self.spec.centred_parameters)
        partial = self.spec.partial_weights
        orders = tuple(tuple([p for p in b if p in centred]
                             + [p for p in b if p not in centred and p not in partial]
                             + [p for p in b if p in partial])
                       for b in self.spec.blocks)
        phi_names = tuple(p for o in orders for p in o if p in centred)
        z_names = tuple(p for o in orders for p in o if p not in centred and p not in partial)
        return orders, phi_names, z_names

    def iiv_site_dims(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """The IIV axis of the random-effect sites, for labelling draws.

        Returns
        -------
        dict
            ``"phi"`` and/or ``"z"`` (the sites present) -> (dimension name, parameter names
            of the columns). The dimension is ``iiv`` when the site covers every IIV
            parameter, else ``iiv_centred`` (``phi``) or ``iiv_noncentred`` (``z``).
        """
        _, phi_names, z_names = self.iiv_layout()
        n_iiv = len(self.spec.iiv)
        out = {}
        if phi_names:
            out["phi"] = ("iiv" if len(phi_names) == n_iiv else "iiv_centred", phi_names)
        if z_names:
            out["z"] = ("iiv" if len(z_names) == n_iiv else "iiv_noncentred", z_names)
        return out

    def covariate_terms(self) -> dict:
        """Sample covariate coefficients; returns parameter -> per-subject term.

        The term is a log-scale factor for positive parameters and an additive shift for real
        ones.
        """
        spec = self.spec
        terms: dict = {}
        for c in spec.covariates:
            domain = spec.domain(c.parameter)
            x = jnp.asarray(self.covariates[c.covariate])
            names = c.site_names
            if c.prior.is_fixed:
                betas = [jnp.asarray(c.prior.args[0]) for _ in names]
            else:
                betas = [numpyro.sample(n, c.prior.to_numpyro("real")) for n in names]
            positive = domain in ("positive", "nonnegative")
            if c.model == "power":
                term = betas[0] * jnp.log(x / c.reference)
            elif c.model == "exponential":
                term = betas[0] * (x - c.reference)
            elif c.model == "linear":
                lin = betas[0] * (x - c.reference)
                if positive:
                    factor = 1.0 + lin
                    ok = jnp.all(factor > 0)
                    numpyro.factor(f"domain_{names[0]}", jnp.where(ok, 0.0, -jnp.inf))
                    term = jnp.log(jnp.where(factor > 0, factor, 1.0))
                else:
                    term = lin
            else:  # categorical
                term = jnp.zeros_like(x)
                for lv, b in zip(c.levels, betas, strict=True):
                    term = term + jnp.where(x == lv, b, 0.0)
            terms[c.parameter] = terms.get(c.parameter, 0.0) + term
        return terms

    def individual_parameters(self, tv: dict, eta, terms: dict) -> dict:
        """Combine typical values, covariate terms and random effects; name -> (n_subjects,)."""
        spec = self.spec
        n = self.n_subjects
        out = {}
        for p in spec.parameters:
            name = p.name
            t = tv[name]
            has_eta = name in spec.iiv
            e = eta[:, spec.iiv.index(name)] if has_eta else 0.0
            c = terms.get(name, 0.0)
            if p.domain in ("positive", "nonnegative"):
                if has_eta or name in terms:
                    val = t * jnp.exp(c + e)
                else:
                    val = jnp.broadcast_to(t, (n,))
            elif p.domain == "unit_interval":
                if has_eta:
                    tt = jnp.clip(t, 1e-12, 1 - 1e-12)
                    val = jax.nn.sigmoid(jnp.log(tt) - jnp.log1p(-tt) + e)
                else:
                    val = jnp.broadcast_to(t, (n,))
            else:
                val = t + c + e
                val = jnp.broadcast_to(val, (n,))
            out[name] = val
        return out

    def population_parameters(self, tv: dict, terms: dict) -> dict:
        """Parameters of a typical subject with each subject's covariates (all etas zero).

        The basis of the population prediction PRED: ``TV * g(covariates)`` for positive
        parameters, ``TV + h(covariates)`` for real ones, ``TV`` for unit-interval ones.

        Parameters
        ----------
        tv : dict
            Typical values, name -> scalar (parameter units).
        terms : dict
            Covariate terms from :meth:`covariate_terms`, parameter -> (n_subjects,).

        Returns
        -------
        dict
            Name -> (n_subjects,) array, parameter units.
        """
        eta = jnp.zeros((self.n_subjects, len(self.spec.iiv))) if self.spec.iiv else None
        return self.individual_parameters(tv, eta, terms)

    def residual_arrays(self):
        """Sample residual SDs; returns per-observation (sa, sp, is_log) arrays."""
        n_out = max([r.output.index for r in self.spec.residuals], default=-1) + 1
        sa = [0.0] * n_out
        sp = [0.0] * n_out
        is_log = np.zeros(n_out, dtype=bool)
        for r in self.spec.residuals:
            vals = {}
            for name, prior in r.priors.items():
                vals[name] = (jnp.asarray(prior.args[0]) if prior.is_fixed
                              else numpyro.sample(name, prior.to_numpyro("positive")))
            i = r.output.index
            nm = r.output.name
            if r.model == "additive":
                sa[i] = vals[f"sigma_{nm}"]
            elif r.model == "proportional":
                sp[i] = vals[f"sigma_{nm}"]
            elif r.model == "combined":
                sa[i] = vals[f"sigma_add_{nm}"]
                sp[i] = vals[f"sigma_prop_{nm}"]
            else:
                sa[i] = vals[f"sigma_{nm}"]
                is_log[i] = True
        out = self.obs.output
        if n_out == 1:
            return (jnp.broadcast_to(jnp.asarray(sa[0], dtype=float), out.shape),
                    jnp.broadcast_to(jnp.asarray(sp[0], dtype=float), out.shape), is_log[out])
        sa_o = jnp.stack([jnp.asarray(s, dtype=float) for s in sa])[out]
        sp_o = jnp.stack([jnp.asarray(s, dtype=float) for s in sp])[out]
        return sa_o, sp_o, is_log[out]

    def parameters(self) -> dict:
        """The parameter part of the model: typical values, covariate terms, random effects and
        the individual parameters (name -> (n_subjects,)), recorded as ``ind_<P>``."""
        tv = self.typical_values()
        terms = self.covariate_terms()
        eta = self.random_effects(tv, terms)
        params = self.individual_parameters(tv, eta, terms)
        if self.varying:
            with numpyro.plate("subject", self.n_subjects):
                for name in self.varying:
                    numpyro.deterministic(f"ind_{name}", params[name])
        return params

    def __call__(self, obs=None):
        """The NumPyro model. ``obs``: observed values (fit) or None (simulate)."""
        params = self.parameters()
        pred, ok = self.predict_fn(params)
        si = self.obs.subject
        # on the (subject, column) grid, then the used entries: no per-row gather of ``ok``
        good = jnp.asarray(ok, dtype=bool)[:, None] & jnp.isfinite(pred)
        pred_o = self._observed_entries(pred)
        good_o = self._observed_entries(good)
        all_ok = jnp.all(good_o) & jnp.all(jnp.asarray(ok, dtype=bool))
        numpyro.factor("solver_ok", jnp.where(all_ok, 0.0, -jnp.inf))
        pred_o = jnp.where(good_o, pred_o, 1.0)
        sa, sp, is_log = self.residual_arrays()
        with numpyro.plate("obs", len(si)):
            numpyro.sample("DV", ResidualError(pred_o, sa, sp, is_log, self.obs.blq,
                                               self.obs.lloq, groups=self._groups(is_log)),
                           obs=obs)

    def _flat_index(self, shape) -> np.ndarray:
        return self.obs.subject * shape[1] + self.obs.column

    def _observed_entries(self, pred):
        """The used entries of *pred* (S, O_max), in obs-plate order; a plain reshape when
        every entry is used in row-major order (no gather in the gradient)."""
        idx = self._flat_index(pred.shape)
        flat = jnp.reshape(pred, (-1,))
        if idx.size == flat.shape[0] and np.array_equal(idx, np.arange(idx.size)):
            return flat
        return flat[idx]

    def _groups(self, is_log):
        key = "_row_groups"
        g = self.__dict__.get(key)
        if g is None:
            g = RowGroups(np.asarray(is_log), self.obs.blq)
            object.__setattr__(self, key, g)
        return g


def _get(events, name, default=None):
    v = getattr(events, name, default)
    return default if v is None else v


def observation_table(events, outputs_for_cmt: dict | None = None) -> ObservationTable:
    """Flatten the used observations of *events* into an ObservationTable.

    Used: ``obs_used`` (MDV 0) where the events carry it, else ``obs_mask``.
    """
    used = getattr(events, "obs_used", None)
    mask = np.asarray(events.obs_mask if used is None else used, dtype=bool)
    si, ci = np.nonzero(mask)
    dv = np.asarray(events.dv, dtype=float)[si, ci]
    blq = np.asarray(_get(events, "blq", np.zeros(mask.shape, bool)), dtype=bool)[si, ci]
    lloq = np.asarray(_get(events, "lloq", np.full(mask.shape, np.nan)), dtype=float)[si, ci]
    output = np.asarray(_get(events, "obs_output", np.zeros(mask.shape, int)))[si, ci]

    def opt(name):
        v = getattr(events, name, None)
        return None if v is None else np.asarray(v)[si, ci]

    dv_used = np.where(blq, lloq, dv)
    return ObservationTable(subject=si, column=ci, dv=dv_used, blq=blq, lloq=lloq,
                            output=output.astype(int), time=opt("obs_time"),
                            dvid=opt("obs_dvid"), cmt=opt("obs_cmt"), row=opt("obs_row"))


def _check_observations(table: ObservationTable, spec: PopulationSpec, ids: np.ndarray,
                        line_of=None) -> None:
    import pandas as pd

    problems = []
    log_outputs = {r.output.index: r.output.name for r in spec.residuals if r.model == "lognormal"}

    def where(mask):
        idx = np.nonzero(mask)[0]
        subj = sorted({int(ids[table.subject[i]]) for i in idx})
        lines = [int(line_of(table.row[i])) for i in idx] if (line_of is not None and
                                                                table.row is not None) else []
        return subj, lines

    bad = ~table.blq & ~np.isfinite(table.dv)
    if bad.any():
        s, ln = where(bad)
        problems.append(("finite_dv", "DV", s, ln, "observation without a finite DV"))
    bad = table.blq & ~(np.isfinite(table.lloq))
    if bad.any():
        s, ln = where(bad)
        problems.append(("blq_needs_lloq", "LLOQ", s, ln,
                         "BLQ row without a finite LLOQ (M3 needs the limit)"))
    for i, name in log_outputs.items():
        bad = (table.output == i) & ~table.blq & ~(table.dv > 0)
        if bad.any():
            s, ln = where(bad)
            problems.append(("lognormal_positive_dv", "DV", s, ln,
                             f"output {name} has a log-normal error but DV <= 0; flag the row "
                             "BLQ or use an additive/combined error"))
        bad = (table.output == i) & table.blq & ~(table.lloq > 0)
        if bad.any():
            s, ln = where(bad)
            problems.append(("lognormal_positive_lloq", "LLOQ", s, ln,
                             f"output {name} has a log-normal error but LLOQ <= 0 on a BLQ row"))
    if problems:
        df = pd.DataFrame([{"rule": r, "column": c, "ID": ", ".join(map(str, s[:20])),
                            "lines": ", ".join(map(str, ln[:20])), "message": m}
                           for r, c, s, ln, m in problems])
        raise DatasetError(f"{len(problems)} problem(s) with the observations for this "
                           "population model: " + "; ".join(p[4] for p in problems) + ".",
                           violations=df)


def build_population_model(spec: PopulationSpec, events, predict_fn: PredictFn, *,
                           line_of=None) -> PopulationModel:
    """Build the NumPyro population model.

    Parameters
    ----------
    spec : PopulationSpec
        From :func:`il2pkpd.inference.spec.build_spec`.
    events : il2pkpd.engine.EventArrays
        Needs ``obs_mask, dv`` (n_subjects, n_obs_max); uses ``blq, lloq, obs_output,
        obs_time, obs_dvid, obs_cmt, obs_row, ids, cov, cov_names`` when present.
    predict_fn : callable
        ``f(params: dict[str, Array (n_subjects,)]) -> (pred (n_subjects, n_obs_max),
        ok (n_subjects,))`` from :func:`il2pkpd.engine.make_predict_fn`.
    line_of : callable, optional
        Maps ``obs_row`` to a file line number for error messages.

    Returns
    -------
    PopulationModel
    """
    table = observation_table(events)
    n_subj = np.asarray(events.obs_mask).shape[0]
    ids = np.asarray(_get(events, "ids", np.arange(1, n_subj + 1)))
    _check_observations(table, spec, ids, line_of)
    cov_names = list(_get(events, "cov_names", ()) or ())
    cov = np.asarray(_get(events, "cov", np.zeros((n_subj, 0))), dtype=float)
    covariates = {}
    for c in spec.covariates:
        if c.covariate not in cov_names:
            raise DatasetError(f"covariate '{c.covariate}' (effect on {c.parameter}) is not a "
                               "column of the dataset; covariates: "
                               f"{', '.join(cov_names) or 'none'}.")
        x = cov[:, cov_names.index(c.covariate)]
        bad = ~np.isfinite(x) | ((x <= 0) if c.model == "power" else np.zeros_like(x, bool))
        if bad.any():
            raise DatasetError(f"covariate '{c.covariate}': subjects "
                               f"{', '.join(map(str, ids[bad][:20]))} have "
                               + ("non-positive or missing values; a power effect needs x > 0."
                                  if c.model == "power" else "missing values."))
        covariates[c.covariate] = x
    return PopulationModel(spec=spec, ids=ids, obs=table, covariates=covariates,
                           predict_fn=predict_fn)
