"""Exposure and response metrics of simulated profiles, per virtual patient.

Every function works on a batch: times ``t`` of shape ``(n_t,)`` (hours, sorted, possibly with a
repeated time where an IV bolus makes the concentration jump: the first copy is the value before
the dose, the second after it) and values of shape ``(n, n_t)``. They are written in
``jax.numpy`` so they run on the device right after the solver, inside ``jit``.

Areas use the linear-up / log-down trapezoidal rule, which is exact for a mono-exponential
decline between samples (so the AUC of a one-compartment bolus is exact on any grid) and
second-order accurate elsewhere.

Metric names, units and meaning (:data:`METRICS`):

=====================  ==========  =============================================================
name                   unit        meaning
=====================  ==========  =============================================================
cmax                   IU/mL       highest IL-2 concentration on the simulation grid
tmax                   h           time of ``cmax``
auc_course             IU*h/mL     AUC over the whole simulation (0 to the end of the horizon)
auc_tau_first          IU*h/mL     AUC over the first dosing interval
auc_tau_max            IU*h/mL     largest AUC over any dosing interval
auc_day_first          IU*h/mL     AUC over day 1 (0-24 h)
auc_day_max            IU*h/mL     largest AUC over any calendar day
time_above             h           time with IL-2 above the threshold (default 250 IU/mL)
cum_dose               MIU         total dose given
cum_dose_per_kg        IU/kg       total dose given per kg body weight
treg_fold              1           peak blood Treg count / baseline (before the first dose)
treg_tpeak             day         time of the Treg peak
nk_fold                1           peak blood NK count / baseline
nk_tpeak               day         time of the NK peak
selectivity            1           treg_fold / nk_fold
=====================  ==========  =============================================================

Examples
--------
>>> import numpy as np
>>> t = np.linspace(0.0, 24.0, 25)
>>> c = 10.0 * np.exp(-0.3 * t)[None, :]          # one-compartment bolus, C0 10, k 0.3/h
>>> float(auc_cumulative(t, c)[0, -1])            # exact: 10/0.3 * (1 - exp(-7.2))
33.30...
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from il2pkpd.errors import OptionError

__all__ = [
    "METRICS",
    "DEFAULT_THRESHOLD",
    "auc_segments",
    "auc_cumulative",
    "auc_windows",
    "time_above",
    "peak",
    "exposure_metrics",
    "response_metrics",
    "Target",
    "parse_target",
    "summarize",
    "attainment",
]

#: Default IL-2 threshold for ``time_above``: about the βγ-receptor affinity (DOMAIN.md §2).
DEFAULT_THRESHOLD = 250.0

#: Metric name -> (unit, description).
METRICS: dict[str, tuple[str, str]] = {
    "cmax": ("IU/mL", "highest IL-2 concentration"),
    "tmax": ("h", "time of the highest IL-2 concentration"),
    "auc_course": ("IU*h/mL", "IL-2 AUC over the whole simulation"),
    "auc_tau_first": ("IU*h/mL", "IL-2 AUC over the first dosing interval"),
    "auc_tau_max": ("IU*h/mL", "largest IL-2 AUC over a dosing interval"),
    "auc_day_first": ("IU*h/mL", "IL-2 AUC over day 1"),
    "auc_day_max": ("IU*h/mL", "largest IL-2 AUC over a calendar day"),
    "time_above": ("h", "time with IL-2 above the threshold"),
    "cum_dose": ("MIU", "total dose given"),
    "cum_dose_per_kg": ("IU/kg", "total dose given per kg body weight"),
    "treg_fold": ("1", "peak blood Treg count / baseline"),
    "treg_tpeak": ("day", "time of the Treg peak"),
    "nk_fold": ("1", "peak blood NK count / baseline"),
    "nk_tpeak": ("day", "time of the NK peak"),
    "selectivity": ("1", "Treg peak fold / NK peak fold"),
}


def auc_segments(t, values):
    """Area of each interval between consecutive samples (linear up, log down).

    Parameters
    ----------
    t : array (n_t,), h
        Sample times, non-decreasing.
    values : array (n, n_t)
        Concentrations (e.g. IU/mL).

    Returns
    -------
    array (n, n_t - 1)
        Areas in concentration * h; 0 over a repeated time.
    """
    t = jnp.asarray(t)
    v = jnp.asarray(values)
    dt = jnp.diff(t)[None, :]
    c0, c1 = v[:, :-1], v[:, 1:]
    linear = 0.5 * (c0 + c1) * dt
    down = (c1 < c0 * (1.0 - 1e-9)) & (c1 > 0.0)
    safe0 = jnp.where(down, c0, 2.0)
    safe1 = jnp.where(down, c1, 1.0)
    log_area = (safe0 - safe1) * dt / jnp.log(safe0 / safe1)
    return jnp.where(down, log_area, linear)


def auc_cumulative(t, values):
    """Cumulative area from ``t[0]`` to each sample time, shape ``(n, n_t)`` (starts at 0)."""
    seg = auc_segments(t, values)
    return jnp.concatenate([jnp.zeros_like(seg[:, :1]), jnp.cumsum(seg, axis=1)], axis=1)


def _cumulative_at(t, cum, times):
    """Cumulative area at *times* (linear interpolation between samples; exact on samples)."""
    t = np.asarray(t, dtype=float)
    times = np.asarray(times, dtype=float)
    idx = np.clip(np.searchsorted(t, times, side="left"), 1, len(t) - 1)
    t0, t1 = t[idx - 1], t[idx]
    w = np.where(t1 > t0, (times - t0) / np.where(t1 > t0, t1 - t0, 1.0), 1.0)
    w = np.clip(w, 0.0, 1.0)
    return cum[:, idx - 1] * (1.0 - w) + cum[:, idx] * w


def auc_windows(t, values, bounds):
    """Area over consecutive windows ``[bounds[k], bounds[k+1]]``, shape ``(n, len(bounds)-1)``.

    Exact (to the trapezoid rule) when every bound is a sample time; otherwise the cumulative
    area is interpolated linearly between the neighbouring samples.
    """
    cum = auc_cumulative(t, values)
    at = _cumulative_at(t, cum, bounds)
    return at[:, 1:] - at[:, :-1]


def time_above(t, values, threshold):
    """Time (h) with *values* above *threshold*.

    A crossing between two samples is placed by log-linear interpolation when both values are
    positive (exact for an exponential decline) and by linear interpolation otherwise.

    Parameters
    ----------
    t : array (n_t,), h
    values : array (n, n_t)
    threshold : float
        Same unit as *values* (> 0).

    Returns
    -------
    array (n,), h
    """
    t = jnp.asarray(t)
    v = jnp.asarray(values)
    dt = jnp.diff(t)[None, :]
    c0, c1 = v[:, :-1], v[:, 1:]
    a0, a1 = c0 > threshold, c1 > threshold
    both = a0 & a1
    cross = a0 != a1
    # fraction of the segment, from its start, at which the threshold is crossed
    lin_den = jnp.where(cross, c1 - c0, 1.0)
    lin = (threshold - c0) / lin_den
    positive = cross & (c0 > 0) & (c1 > 0)
    l0 = jnp.log(jnp.where(positive, c0, 1.0))
    l1 = jnp.log(jnp.where(positive, c1, 2.0))
    logf = (jnp.log(threshold) - l0) / (l1 - l0)
    frac = jnp.clip(jnp.where(positive, logf, lin), 0.0, 1.0)
    above = jnp.where(a0, frac, 1.0 - frac)
    return jnp.sum(jnp.where(both, dt, 0.0) + jnp.where(cross, above * dt, 0.0), axis=1)


def peak(t, values, smooth=None):
    """Highest value and its time: ``(vmax (n,), tmax (n,) h)``.

    Where the highest sample lies between two lower ones and *smooth* marks that sample as a
    smooth point (not a dose time, the end of an infusion or a bolus jump), the peak is refined
    by the parabola through the three samples, whose error falls with the cube of the sample
    spacing instead of its square.

    Parameters
    ----------
    t : array (n_t,), h
    values : array (n, n_t)
    smooth : array of bool (n_t,), optional
        Samples where refinement is allowed (default: none, the plain sample maximum).
    """
    v = jnp.asarray(values)
    t = jnp.asarray(t)
    i = jnp.argmax(v, axis=1)
    vmax = jnp.take_along_axis(v, i[:, None], axis=1)[:, 0]
    tmax = t[i]
    if smooth is None or v.shape[1] < 3:
        return vmax, tmax
    n_t = v.shape[1]
    ic = jnp.clip(i, 1, n_t - 2)
    t0, t1, t2 = t[ic - 1], t[ic], t[ic + 1]
    c0 = jnp.take_along_axis(v, (ic - 1)[:, None], axis=1)[:, 0]
    c1 = jnp.take_along_axis(v, ic[:, None], axis=1)[:, 0]
    c2 = jnp.take_along_axis(v, (ic + 1)[:, None], axis=1)[:, 0]
    ok = (i == ic) & jnp.asarray(smooth)[ic] & (t1 > t0) & (t2 > t1)
    d1 = (c1 - c0) / jnp.where(ok, t1 - t0, 1.0)
    d2 = (c2 - c1) / jnp.where(ok, t2 - t1, 1.0)
    a = (d2 - d1) / jnp.where(ok, t2 - t0, 1.0)
    ok = ok & (a < 0)
    a_safe = jnp.where(ok, a, -1.0)
    ts = 0.5 * (t0 + t1) - d1 / (2.0 * a_safe)
    ok = ok & (ts >= t0) & (ts <= t2)
    vs = c0 + d1 * (ts - t0) + a_safe * (ts - t0) * (ts - t1)
    ok = ok & (vs >= vmax)
    return jnp.where(ok, vs, vmax), jnp.where(ok, ts, tmax)


def exposure_metrics(t, conc, *, dose_times: Sequence[float], tau_end: float, horizon: float,
                     threshold: float = DEFAULT_THRESHOLD, smooth=None) -> dict:
    """IL-2 exposure metrics of each profile.

    Parameters
    ----------
    t : array (n_t,), h
        Sample times from 0 to *horizon*; should contain every dose time and day boundary.
    conc : array (n, n_t), IU/mL
        IL-2 concentration profiles.
    dose_times : sequence of float, h
        Times of the doses given (sorted).
    tau_end : float, h
        End of the last dosing interval (last dose time + its interval).
    horizon : float, h
        End of the simulation.
    threshold : float, IU/mL
        Threshold for ``time_above``.
    smooth : array of bool (n_t,), optional
        Samples where the peak may be refined by a parabola (see :func:`peak`).

    Returns
    -------
    dict
        ``cmax, tmax, auc_course, auc_tau_first, auc_tau_max, auc_day_first, auc_day_max,
        time_above``, each of shape ``(n,)``.
    """
    dose_times = np.asarray(dose_times, dtype=float)
    cmax, tmax = peak(t, conc, smooth)
    tau_bounds = np.minimum(np.append(dose_times, max(tau_end, dose_times[-1])), horizon)
    tau = auc_windows(t, conc, tau_bounds)
    n_days = max(1, math.ceil(horizon / 24.0 - 1e-9))
    day_bounds = np.minimum(np.arange(n_days + 1) * 24.0, horizon)
    day = auc_windows(t, conc, day_bounds)
    course = auc_windows(t, conc, np.array([0.0, horizon]))[:, 0]
    return {
        "cmax": cmax,
        "tmax": tmax,
        "auc_course": course,
        "auc_tau_first": tau[:, 0],
        "auc_tau_max": jnp.max(tau, axis=1),
        "auc_day_first": day[:, 0],
        "auc_day_max": jnp.max(day, axis=1),
        "time_above": time_above(t, conc, threshold),
    }


def response_metrics(t, treg, nk, *, treg_baseline=None, nk_baseline=None,
                     smooth=None) -> dict:
    """Treg and NK peak fold-change from baseline, time to peak, and selectivity.

    Parameters
    ----------
    t : array (n_t,), h
    treg, nk : array (n, n_t), cells/µL
        Blood counts.
    treg_baseline, nk_baseline : array (n,), cells/µL, optional
        Baseline counts; by default the first sample (which must precede the first dose).
    smooth : array of bool (n_t,), optional
        Samples where the peak may be refined by a parabola (see :func:`peak`).

    Returns
    -------
    dict
        ``treg_fold, treg_tpeak (day), nk_fold, nk_tpeak (day), selectivity``, each ``(n,)``.
    """
    treg = jnp.asarray(treg)
    nk = jnp.asarray(nk)
    tb = treg[:, 0] if treg_baseline is None else jnp.asarray(treg_baseline)
    nb = nk[:, 0] if nk_baseline is None else jnp.asarray(nk_baseline)
    tpk, ttp = peak(t, treg, smooth)
    npk, ntp = peak(t, nk, smooth)
    treg_fold = tpk / tb
    nk_fold = npk / nb
    return {
        "treg_fold": treg_fold,
        "treg_tpeak": ttp / 24.0,
        "nk_fold": nk_fold,
        "nk_tpeak": ntp / 24.0,
        "selectivity": treg_fold / nk_fold,
    }


# --------------------------------------------------------------------------------------------
# Targets: "treg_fold>=2 and nk_fold<=1.5", parsed into a tree (no eval).

#: Short names accepted in targets besides the metric names.
TARGET_ALIASES = {
    "treg": "treg_fold", "nk": "nk_fold", "auc": "auc_course", "auc_day": "auc_day_max",
    "auc_tau": "auc_tau_max", "dose_per_kg": "cum_dose_per_kg",
}

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<op>>=|<=|==|!=|>|<)"
                    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<paren>[()])|(?P<sym>&&|\|\||[&|!]))")

_COMPARE: dict[str, Callable] = {
    ">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less,
    "==": np.equal, "!=": np.not_equal,
}


@dataclass(frozen=True)
class Target:
    """A parsed target expression: call it on a mapping of metric arrays to get booleans.

    Parameters
    ----------
    text : str
        The expression as written.
    tree : tuple
        ``("cmp", name, op, value)``, ``("and", a, b)``, ``("or", a, b)`` or ``("not", a)``.
    """

    text: str
    tree: tuple

    @property
    def names(self) -> frozenset[str]:
        """Metric names the expression uses."""
        def walk(node):
            if node[0] == "cmp":
                return {node[1]}
            return set().union(*(walk(k) for k in node[1:]))
        return frozenset(walk(self.tree))

    def __call__(self, metrics: Mapping[str, np.ndarray]) -> np.ndarray:
        def ev(node):
            kind = node[0]
            if kind == "cmp":
                _, name, op, value = node
                return _COMPARE[op](np.asarray(metrics[name]), value)
            if kind == "and":
                return ev(node[1]) & ev(node[2])
            if kind == "or":
                return ev(node[1]) | ev(node[2])
            return ~ev(node[1])
        return np.asarray(ev(self.tree), dtype=bool)


def parse_target(text: str, names: Sequence[str] | None = None) -> Target:
    """Parse a target such as ``"treg_fold>=2 and nk_fold<=1.5"`` without ``eval``.

    Grammar: ``expr := term ("or" term)*``, ``term := factor ("and" factor)*``,
    ``factor := "not" factor | "(" expr ")" | NAME OP NUMBER | NUMBER OP NAME`` with
    ``OP`` one of ``>= <= > < == !=``; ``&``/``&&``, ``|``/``||`` and ``!`` also work.
    Names are the metrics of :data:`METRICS` (or *names*) and the aliases ``treg``, ``nk``,
    ``auc``, ``auc_day``, ``auc_tau``, ``dose_per_kg``.

    Raises
    ------
    OptionError
        With the text, a caret at the position and what was expected.

    Examples
    --------
    >>> tgt = parse_target("treg_fold>=2 and nk_fold<=1.5")
    >>> tgt({"treg_fold": np.array([2.5, 1.5]), "nk_fold": np.array([1.2, 1.0])})
    array([ True, False])
    """
    allowed = set(METRICS if names is None else names)
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise _target_error(text, pos + (len(text[pos:]) - len(text[pos:].lstrip())),
                                "a metric name, a number, a comparison, 'and', 'or', 'not' or "
                                "a parenthesis")
        kind = m.lastgroup
        start = m.start(kind)
        value = m.group(kind)
        if kind == "name" and value.lower() in ("and", "or", "not"):
            kind, value = "sym", value.lower()
        elif kind == "sym":
            value = {"&": "and", "&&": "and", "|": "or", "||": "or", "!": "not"}[value]
        tokens.append((kind, value, start))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    i = 0

    def expect(what):
        kind, value, p = tokens[i]
        found = "the end of the text" if kind == "end" else f"'{value}'"
        raise _target_error(text, p, what, found)

    def name_of(tok):
        n = TARGET_ALIASES.get(tok[1], tok[1])
        if n not in allowed:
            raise _target_error(text, tok[2], "a metric name: " + ", ".join(sorted(allowed)),
                                f"'{tok[1]}'")
        return n

    def parse_expr():
        nonlocal i
        node = parse_term()
        while tokens[i][:2] == ("sym", "or"):
            i += 1
            node = ("or", node, parse_term())
        return node

    def parse_term():
        nonlocal i
        node = parse_factor()
        while tokens[i][:2] == ("sym", "and"):
            i += 1
            node = ("and", node, parse_factor())
        return node

    def parse_factor():
        nonlocal i
        kind, value, _ = tokens[i]
        if (kind, value) == ("sym", "not"):
            i += 1
            return ("not", parse_factor())
        if (kind, value) == ("paren", "("):
            i += 1
            node = parse_expr()
            if tokens[i][:2] != ("paren", ")"):
                expect("')'")
            i += 1
            return node
        if kind == "name":
            name = name_of(tokens[i])
            i += 1
            if tokens[i][0] != "op":
                expect("a comparison: >=, <=, >, <, == or !=")
            op = tokens[i][1]
            i += 1
            if tokens[i][0] != "num":
                expect("a number")
            number = float(tokens[i][1])
            i += 1
            return ("cmp", name, op, number)
        if kind == "num":
            number = float(value)
            i += 1
            if tokens[i][0] != "op":
                expect("a comparison: >=, <=, >, <, == or !=")
            op = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}.get(tokens[i][1], tokens[i][1])
            i += 1
            if tokens[i][0] != "name":
                expect("a metric name")
            name = name_of(tokens[i])
            i += 1
            return ("cmp", name, op, number)
        expect("a metric name, a number, 'not' or '('")

    tree = parse_expr()
    if tokens[i][0] != "end":
        expect("'and', 'or' or the end of the target")
    return Target(text=text.strip(), tree=tree)


def _target_error(text: str, pos: int, expected: str, found: str | None = None) -> OptionError:
    if found is None:
        m = re.compile(r"\S+").match(text, pos)
        found = f"'{m.group(0)}'" if m else "the end of the text"
    return OptionError(
        f"cannot read the target at character {pos + 1}: expected {expected}, found {found}\n"
        f"  {text}\n  {' ' * pos}^\n"
        "Example: 'treg_fold>=2 and nk_fold<=1.5'")


# --------------------------------------------------------------------------------------------
# Summaries across the population and the posterior.


def summarize(values: np.ndarray, probs: Sequence[float] = (0.05, 0.5, 0.95)) -> dict:
    """``{"q5", "median", "q95"}`` of *values* (NaN ignored), pooled over patients and draws."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"q5": math.nan, "median": math.nan, "q95": math.nan}
    q = np.quantile(v, probs)
    return {"q5": float(q[0]), "median": float(q[1]), "q95": float(q[2])}


def attainment(hit: np.ndarray, draw: np.ndarray | None = None) -> dict:
    """Probability of target attainment with a 90% interval.

    Parameters
    ----------
    hit : array of bool (n,)
        Whether each virtual patient reaches the target.
    draw : array of int (n,), optional
        The posterior draw of each patient. With several draws the interval is the 5-95%
        range of the per-draw attainment (parameter uncertainty); with one draw (or none) it is
        the Wilson 90% interval of the proportion (Monte Carlo uncertainty).

    Returns
    -------
    dict
        ``{"median", "q5", "q95"}``; ``median`` is the pooled proportion.
    """
    hit = np.asarray(hit, dtype=bool)
    n = hit.size
    p = float(hit.mean()) if n else math.nan
    if draw is not None and len(np.unique(draw)) > 1:
        draws = np.unique(draw)
        per = np.array([hit[draw == d].mean() for d in draws])
        q = np.quantile(per, [0.05, 0.95])
        return {"median": p, "q5": float(q[0]), "q95": float(q[1])}
    z = 1.6448536269514722
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return {"median": p, "q5": max(0.0, centre - half), "q95": min(1.0, centre + half)}
