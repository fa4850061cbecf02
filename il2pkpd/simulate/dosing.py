"""From a regimen to dose amounts per subject and to the canonical event table (a Dataset).

Routes map to compartments by name: SC doses go to the model's ``depot`` compartment (where
``F<n>`` and ``TLAG<n>`` apply), IV doses (bolus or infusion) to ``central``. For the canonical
IL-2 model that is CMT 1 (depot) and CMT 2 (central). An IV infusion gets ``RATE = AMT /
duration``; a bolus and an SC dose have ``RATE = 0``.

Examples
--------
>>> import pandas as pd
>>> from il2pkpd.models import load_model
>>> from il2pkpd.simulate import parse_regimen
>>> ds = regimen_to_dataset(parse_regimen("600000 IU/kg IV 15min q8h x2"),
...                         pd.DataFrame({"ID": [1], "WT": [70.0]}), [1.0],
...                         load_model("il2_pkpd"), outputs=[1])
>>> ds.df[["TIME", "AMT", "RATE", "EVID", "CMT", "DVID"]].to_numpy().tolist()
[[0.0, 42000000.0, 168000000.0, 1.0, 2.0, 1.0], [1.0, 0.0, 0.0, 0.0, 2.0, 1.0], \
[8.0, 42000000.0, 168000000.0, 1.0, 2.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from il2pkpd.errors import RegimenError
from il2pkpd.simulate.regimen import Regimen, Route

__all__ = ["DoseSchedule", "route_compartments", "dose_schedule", "regimen_to_dataset"]


@dataclass(frozen=True)
class DoseSchedule:
    """The doses of one regimen for a set of subjects, in the model's units.

    Attributes
    ----------
    time : numpy.ndarray (n_doses,)
        Dose times (model time unit, h), sorted.
    amount : numpy.ndarray (n_subjects, n_doses)
        Amounts (model amount unit) before bioavailability.
    cmt : numpy.ndarray of int (n_doses,)
        NONMEM compartment of each dose.
    duration : numpy.ndarray (n_doses,)
        Infusion durations (h); 0 for a bolus or an SC dose.
    route : tuple of str
        ``"SC"`` or ``"IV"`` per dose.
    amount_unit : str
        The model's amount unit.
    """

    time: np.ndarray
    amount: np.ndarray
    cmt: np.ndarray
    duration: np.ndarray
    route: tuple[str, ...]
    amount_unit: str

    @property
    def shared(self) -> bool:
        """Whether every subject gets the same amounts."""
        return bool(np.all(self.amount == self.amount[:1]))


def route_compartments(model) -> dict[str, int]:
    """``{"SC": cmt, "IV": cmt}`` for the routes the model can take (by compartment name)."""
    by_name = {str(v).lower(): int(k) for k, v in model.compartments.items()}
    out = {}
    if "depot" in by_name:
        out["SC"] = by_name["depot"]
    if "central" in by_name:
        out["IV"] = by_name["central"]
    return out


def dose_schedule(regimen: Regimen, model, covariates: pd.DataFrame | None = None, *,
                  n: int | None = None, specific_activity=None, bsa_formula="mosteller"
                  ) -> DoseSchedule:
    """Resolve a regimen's doses for each subject (per kg / per m2 from ``WT`` / ``BSA``).

    Parameters
    ----------
    regimen : Regimen
    model : il2pkpd.models.Model
        Gives the compartments and the amount unit.
    covariates : pandas.DataFrame, optional
        One row per subject with ``WT`` (kg) and ``BSA`` (m2) (or ``HT`` cm to compute BSA)
        when the regimen doses per kg or per m2.
    n : int, optional
        Number of subjects when no covariates are given.
    specific_activity : il2pkpd.units.SpecificActivity, optional
        Needed for doses in mg/µg when the model's amounts are IU (and the reverse).
    bsa_formula : str
        BSA formula when BSA is computed from WT and HT.

    Returns
    -------
    DoseSchedule

    Raises
    ------
    RegimenError
        A route the model has no compartment for.
    UnitError
        A per-size dose without the body size it needs, or a mass dose without a potency.
    """
    from il2pkpd.units import dose_amount

    routes = route_compartments(model)
    n_sub = len(covariates) if covariates is not None else (1 if n is None else int(n))
    times, amounts, cmts, durs, rts = [], [], [], [], []
    for phase in regimen.phases:
        route = phase.route.value
        if route not in routes:
            need = "depot" if phase.route is Route.SC else "central"
            raise RegimenError(
                f"regimen '{regimen.text}': model {model.name} has no '{need}' compartment for "
                f"{route} doses (compartments: {dict(model.compartments)}); use "
                f"{' or '.join(routes) or 'another model'}")
        unit = phase.unit + (f"/{phase.per}" if phase.per else "")
        kw = {}
        if phase.per is not None:
            cov = covariates if covariates is not None else pd.DataFrame()
            kw = {"wt_kg": _col(cov, "WT"), "bsa_m2": _col(cov, "BSA"), "ht_cm": _col(cov, "HT")}
        value = dose_amount(phase.amount, unit, to=model.amount_unit,
                            specific_activity=specific_activity, bsa_formula=bsa_formula, **kw)
        per_subject = np.broadcast_to(np.asarray(value, dtype=float), (n_sub,))
        for t in phase.dose_times:
            times.append(float(t))
            amounts.append(per_subject)
            cmts.append(routes[route])
            durs.append(phase.duration)
            rts.append(route)
    order = np.argsort(np.asarray(times), kind="stable")
    return DoseSchedule(
        time=np.asarray(times, dtype=float)[order],
        amount=np.stack(amounts, axis=1)[:, order].astype(float),
        cmt=np.asarray(cmts, dtype=np.int64)[order],
        duration=np.asarray(durs, dtype=float)[order],
        route=tuple(np.asarray(rts, dtype=object)[order]),
        amount_unit=model.amount_unit,
    )


def _col(df: pd.DataFrame, name: str):
    return df[name].to_numpy(float) if name in df.columns else None


def regimen_to_dataset(regimen: Regimen, subjects, obs_times: Sequence[float], model, *,
                       outputs: Sequence[int] | None = None, specific_activity=None):
    """The canonical NONMEM event table of a regimen given to *subjects*, as a Dataset.

    Parameters
    ----------
    regimen : Regimen
    subjects : int or pandas.DataFrame
        A number of subjects (IDs 1..n, no covariates) or one row per subject with ``ID`` and
        covariate columns (``WT`` kg, ``BSA`` m2, ... : every column is kept as a covariate).
    obs_times : sequence of float, h
        Observation times, the same for every subject.
    model : il2pkpd.models.Model
    outputs : sequence of int, optional
        DVIDs to observe at each time (default: every model output).
    specific_activity : il2pkpd.units.SpecificActivity, optional
        For mass doses (see :func:`dose_schedule`).

    Returns
    -------
    il2pkpd.data.Dataset
        Dose records (``EVID 1``, ``MDV 1``, ``AMT``, ``RATE``, ``CMT``) and observation records
        (``EVID 0``, ``MDV 1``, ``DV`` missing, ``CMT`` of the output, ``DVID``); at equal times
        observations come first (they see the value just before the dose).
    """
    from il2pkpd.data import read_dataset

    if isinstance(subjects, int | np.integer):
        cov = pd.DataFrame({"ID": np.arange(1, int(subjects) + 1)})
    else:
        cov = pd.DataFrame(subjects).reset_index(drop=True)
        if "ID" not in cov.columns:
            cov.insert(0, "ID", np.arange(1, len(cov) + 1))
    sched = dose_schedule(regimen, model, cov, specific_activity=specific_activity)
    out_specs = {o.dvid: o for o in model.outputs}
    dvids = list(out_specs) if outputs is None else [int(d) for d in outputs]
    unknown = [d for d in dvids if d not in out_specs]
    if unknown:
        raise RegimenError(f"outputs {unknown} are not DVIDs of model {model.name} "
                           f"({sorted(out_specs)})")
    obs_times = np.asarray(sorted(set(float(t) for t in obs_times)), dtype=float)
    frames = []
    n_d = len(sched.time)
    for i, row in cov.iterrows():
        amt = sched.amount[i]
        rate = np.where(sched.duration > 0, amt / np.where(sched.duration > 0, sched.duration,
                                                           1.0), 0.0)
        doses = pd.DataFrame({"ID": row["ID"], "TIME": sched.time, "AMT": amt, "RATE": rate,
                              "EVID": 1, "CMT": sched.cmt, "MDV": 1, "DV": np.nan,
                              "DVID": 0, "_ORDER": 1})
        obs = pd.DataFrame({
            "ID": row["ID"],
            "TIME": np.repeat(obs_times, len(dvids)),
            "AMT": 0.0, "RATE": 0.0, "EVID": 0,
            "CMT": np.tile([out_specs[d].cmt or 1 for d in dvids], len(obs_times)),
            "MDV": 1, "DV": np.nan,
            "DVID": np.tile(dvids, len(obs_times)), "_ORDER": 0})
        block = pd.concat([obs, doses] if n_d else [obs], ignore_index=True)
        for c in cov.columns:
            if c != "ID":
                block[c] = float(row[c])
        frames.append(block.sort_values(["TIME", "_ORDER"], kind="stable"))
    df = pd.concat(frames, ignore_index=True).drop(columns="_ORDER")
    df.loc[df["EVID"] == 1, "DVID"] = dvids[0]
    return read_dataset(df, model=model)
