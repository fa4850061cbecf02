"""From a dataset to padded per-subject event arrays (host side, numpy, static).

NONMEM semantics implemented here, once, for both the closed-form and the ODE paths:

- ADDL implied doses are expanded into explicit doses at ``TIME + k * II``; an implied dose
  that falls at the same time as a record is given before that record; implied doses after the
  last record of their epoch (they can reach no observation) are dropped.
- Records are ordered by *epoch* (the number of resets before them), then time, then file
  order. A reset (EVID 3, EVID 4 before its dose, and an SS=1 dose before its dose) starts a
  new epoch: doses of an earlier epoch never contribute afterwards (ongoing infusions and
  pending lagged doses are cancelled). Time may restart after a reset.
- A dose contributes to an observation when both lie in the same epoch and the dose record
  comes first; lag times only shift the dose (contributions at negative times are zero).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax
import numpy as np
import pandas as pd

from il2pkpd.errors import DatasetError
from il2pkpd.models import Model

__all__ = ["DoseKind", "EventArrays", "build_events"]


class DoseKind(enum.IntEnum):
    """Dose kinds; the single mapping from NONMEM columns is :func:`dose_kind_of`."""

    BOLUS = 0              #: RATE = 0: amount F*AMT at TIME + TLAG
    INFUSION = 1           #: RATE > 0: rate RATE for duration F*AMT/RATE
    RATE_PARAM = 2         #: RATE = -1: rate R<n>, duration F*AMT/R<n>
    DURATION_PARAM = 3     #: RATE = -2: duration D<n>, rate F*AMT/D<n>
    CONSTANT_INFUSION = 4  #: AMT 0, RATE > 0 (or -1: R<n>), SS 1: infusion at steady state
    #:                        that continues; F does not apply (as in NONMEM)


def dose_kind_of(amt: float, rate: float, ss: int) -> DoseKind:
    """The :class:`DoseKind` of a dose record with these AMT, RATE and SS values."""
    if amt == 0 and ss == 1 and (rate > 0 or rate == -1):
        return DoseKind.CONSTANT_INFUSION
    if rate == -1:
        return DoseKind.RATE_PARAM
    if rate == -2:
        return DoseKind.DURATION_PARAM
    if rate > 0:
        return DoseKind.INFUSION
    return DoseKind.BOLUS


_CANONICAL_DEFAULTS: dict[str, Any] = {
    "AMT": 0.0, "RATE": 0.0, "II": 0.0, "ADDL": 0, "SS": 0, "EVID": 0, "CMT": 1, "MDV": None,
    "DV": np.nan, "DVID": 1, "BLQ": False, "LLOQ": np.nan,
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EventArrays:
    """Padded per-subject arrays of doses and observations (numpy; a JAX pytree).

    Shapes: ``S`` subjects, ``D`` doses (after ADDL expansion), ``O`` observation records,
    ``R`` resets, each padded to the largest subject. Masks are false on padding; padded
    entries hold harmless finite values.

    Attributes
    ----------
    ids : (S,) int64
        Subject IDs.
    dose_time, dose_amt, dose_rate, dose_ii : (S, D) float64
        Record time, AMT, RATE (as in the data, -1/-2 kept) and II of each dose (II is 1
        where the data have 0: it only matters for SS doses).
    dose_kind : (S, D) int32
        :class:`DoseKind` code.
    dose_ss : (S, D) int32
        SS code 0, 1 or 2.
    dose_cmt : (S, D) int64
        NONMEM compartment number.
    dose_slot : (S, D) int32
        Index into ``model.dosing_cmts`` (selects TLAG<n>, F<n>, R<n>, D<n>).
    dose_state : (S, D) int32
        Index into ``model.states``.
    dose_row : (S, D) int64
        Row index into ``dataset.df`` of the dose record (of the ADDL record for implied
        doses; -1 on padding).
    dose_epoch, dose_rank : (S, D) int32
        Epoch and position in the subject's ordered record sequence.
    dose_mask : (S, D) bool
    obs_time : (S, O) float64
    obs_cmt, obs_dvid : (S, O) int64
    obs_output : (S, O) int32
        Index into ``model.outputs``.
    obs_mask : (S, O) bool
        True for observation records (EVID 0), whatever their MDV.
    obs_used : (S, O) bool
        True where the observation enters a fit (MDV 0).
    dv, lloq : (S, O) float64
    blq : (S, O) bool
    obs_row : (S, O) int64
        Row index into ``dataset.df`` (-1 on padding).
    obs_epoch, obs_rank : (S, O) int32
    contrib : (S, O, D) bool
        Dose d can contribute to observation o (same epoch, dose record first).
    reset_time : (S, R) float64
    reset_epoch, reset_rank : (S, R) int32
        Epoch the reset starts.
    reset_mask : (S, R) bool
    cov : (S, C) float64
        Baseline covariate values (first record of each subject).
    cov_names : tuple of str
        Covariate names (static).
    """

    ids: np.ndarray
    dose_time: np.ndarray
    dose_amt: np.ndarray
    dose_rate: np.ndarray
    dose_ii: np.ndarray
    dose_kind: np.ndarray
    dose_ss: np.ndarray
    dose_cmt: np.ndarray
    dose_slot: np.ndarray
    dose_state: np.ndarray
    dose_row: np.ndarray
    dose_epoch: np.ndarray
    dose_rank: np.ndarray
    dose_mask: np.ndarray
    obs_time: np.ndarray
    obs_cmt: np.ndarray
    obs_dvid: np.ndarray
    obs_output: np.ndarray
    obs_mask: np.ndarray
    obs_used: np.ndarray
    dv: np.ndarray
    blq: np.ndarray
    lloq: np.ndarray
    obs_row: np.ndarray
    obs_epoch: np.ndarray
    obs_rank: np.ndarray
    contrib: np.ndarray
    reset_time: np.ndarray
    reset_epoch: np.ndarray
    reset_rank: np.ndarray
    reset_mask: np.ndarray
    cov: np.ndarray
    cov_names: tuple[str, ...] = dataclasses.field(metadata={"static": True}, default=())

    @property
    def n_subjects(self) -> int:
        """Number of subjects."""
        return int(self.ids.shape[0])

    @property
    def n_obs(self) -> int:
        """Number of observation records (all subjects, padding excluded)."""
        return int(np.asarray(self.obs_mask).sum())

    def kinds_present(self) -> frozenset[tuple[int, int]]:
        """Set of (DoseKind, SS) pairs present among real doses (static specialisation)."""
        k = np.asarray(self.dose_kind)[np.asarray(self.dose_mask)]
        s = np.asarray(self.dose_ss)[np.asarray(self.dose_mask)]
        return frozenset(zip(k.tolist(), s.tolist(), strict=True))


def _frame(dataset: Any) -> tuple[pd.DataFrame, tuple[str, ...], bool, np.ndarray]:
    """The canonical frame, covariate names, has_dvid and subject index of *dataset*."""
    if isinstance(dataset, pd.DataFrame):
        df = dataset.reset_index(drop=True).copy()
        has_dvid = "DVID" in df.columns
        for col in ("ID", "TIME"):
            if col not in df.columns:
                raise DatasetError(f"the data has no {col} column; NONMEM-style data need "
                                   "ID and TIME (read files with il2pkpd.data.read_dataset)")
        for col, default in _CANONICAL_DEFAULTS.items():
            if col not in df.columns:
                if col == "MDV":
                    evid = df["EVID"] if "EVID" in df.columns else 0
                    df[col] = np.where(np.asarray(evid) == 0, 0, 1)
                else:
                    df[col] = default
        if "EVID" not in dataset.columns:
            df["EVID"] = np.where(df["AMT"].to_numpy() != 0, 1, 0)
            df["MDV"] = df["EVID"]
        if "LINE" not in df.columns:
            df["LINE"] = np.arange(len(df)) + 2
        known = set(_CANONICAL_DEFAULTS) | {"ID", "TIME", "LINE"}
        covs = tuple(c for c in df.columns if c not in known
                     and pd.api.types.is_numeric_dtype(df[c]))
    else:
        df = dataset.df
        covs = tuple(getattr(dataset, "covariates", ()))
        has_dvid = bool(getattr(dataset, "has_dvid", False))
    ids = df["ID"].to_numpy()
    starts = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
    subj = np.cumsum(starts).astype(np.int64) - 1
    return df, covs, has_dvid, subj


def _pad(rows: list[list], width: int, fill: Any, dtype: Any) -> np.ndarray:
    out = np.full((len(rows), max(width, 1)), fill, dtype=dtype)
    for i, r in enumerate(rows):
        if r:
            out[i, :len(r)] = r
    return out


def build_events(dataset: Any, model: Model) -> EventArrays:
    """Expand and pad the events of *dataset* for *model*.

    Parameters
    ----------
    dataset : il2pkpd.data.Dataset or pandas.DataFrame
        A Dataset, or a DataFrame with (a subset of) the canonical columns; missing columns take
        NONMEM defaults (AMT 0, RATE 0, II 0, ADDL 0, SS 0, EVID 0 or 1 from AMT, CMT 1, DVID 1).
    model : Model
        The structural model (compartment numbers, dosing compartments, outputs).

    Returns
    -------
    EventArrays

    Raises
    ------
    DatasetError
        Doses into a compartment that is not a dosing compartment of the model, observations
        that map to no output, SS doses without a positive II, RATE -1/-2 with AMT 0.

    Examples
    --------
    >>> import pandas as pd
    >>> from il2pkpd.models import load_model
    >>> df = pd.DataFrame({"ID": [1, 1, 1], "TIME": [0.0, 1.0, 13.0], "AMT": [100.0, 0, 0],
    ...                    "EVID": [1, 0, 0], "ADDL": [2, 0, 0], "II": [12.0, 0, 0]})
    >>> ev = build_events(df, load_model("one_cmt_iv"))
    >>> ev.dose_time.tolist(), ev.obs_time.tolist()   # the dose at 24 h reaches no observation
    ([[0.0, 12.0]], [[1.0, 13.0]])
    """
    df, covs, has_dvid, subj = _frame(dataset)
    n_subj = int(subj[-1]) + 1 if len(subj) else 0
    if n_subj == 0:
        raise DatasetError("the data have no records")
    problems: list[dict[str, Any]] = []

    def bad(rule: str, column: str, sid: Any, lines: list[int], message: str) -> None:
        problems.append({"rule": rule, "column": column, "ID": sid,
                         "lines": ",".join(map(str, lines)), "message": message})

    dosing = {n: i for i, n in enumerate(model.dosing_cmts)}
    out_by_dvid = {o.dvid: i for i, o in enumerate(model.outputs)}
    out_by_cmt = {o.cmt: i for i, o in enumerate(model.outputs) if o.cmt is not None}

    cols = {c: df[c].to_numpy() for c in ("ID", "TIME", "AMT", "RATE", "II", "ADDL", "SS",
                                           "EVID", "CMT", "MDV", "DV", "DVID", "BLQ", "LLOQ",
                                           "LINE")}
    dose_rows: list[list[tuple]] = [[] for _ in range(n_subj)]
    obs_rows: list[list[tuple]] = [[] for _ in range(n_subj)]
    reset_rows: list[list[tuple]] = [[] for _ in range(n_subj)]
    ids = np.zeros(n_subj, dtype=np.int64)
    first_row = np.full(n_subj, -1, dtype=np.int64)

    # pass 1: epochs, resets, explicit records
    epoch = np.zeros(n_subj, dtype=np.int64)
    for r in range(len(df)):
        s = subj[r]
        if first_row[s] < 0:
            first_row[s] = r
            ids[s] = cols["ID"][r]
        t = float(cols["TIME"][r])
        evid = int(cols["EVID"][r])
        line = int(cols["LINE"][r])
        sid = cols["ID"][r]
        if evid in (3, 4) or (evid in (1, 4) and int(cols["SS"][r]) == 1):
            epoch[s] += 1
            reset_rows[s].append((t, int(epoch[s]), r, 0))
        if evid == 0:
            if has_dvid:
                oi = out_by_dvid.get(int(cols["DVID"][r]))
                if oi is None:
                    bad("unknown_dvid", "DVID", sid, [line],
                        f"DVID {int(cols['DVID'][r])} is not an output of model {model.name} "
                        f"(outputs: {sorted(out_by_dvid)})")
                    oi = 0
            else:
                oi = out_by_cmt.get(int(cols["CMT"][r]))
                if oi is None:
                    if len(model.outputs) == 1 and model.outputs[0].cmt is None:
                        oi = 0
                    else:
                        bad("unmapped_cmt", "CMT", sid, [line],
                            f"observation CMT {int(cols['CMT'][r])} maps to no output of model "
                            f"{model.name} (as in NONMEM, the observation compartment selects "
                            f"the output); use CMT {sorted(out_by_cmt)} or add a DVID column")
                        oi = 0
            obs_rows[s].append((t, int(epoch[s]), r, 1, oi))
        elif evid in (1, 4):
            amt, rate, ii = float(cols["AMT"][r]), float(cols["RATE"][r]), float(cols["II"][r])
            ss, addl, cmt = int(cols["SS"][r]), int(cols["ADDL"][r]), int(cols["CMT"][r])
            if cmt not in dosing:
                bad("dose_cmt", "CMT", sid, [line],
                    f"dose into compartment {cmt}, which model {model.name} cannot dose "
                    f"(dosing compartments: {list(model.dosing_cmts)})")
                continue
            kind = dose_kind_of(amt, rate, ss)
            if kind == DoseKind.CONSTANT_INFUSION:
                if ii != 0 or addl != 0:
                    bad("constant_infusion", "II", sid, [line],
                        "a steady-state constant infusion (AMT 0, RATE > 0, SS 1) needs II 0 "
                        "and ADDL 0")
            elif kind == DoseKind.INFUSION and amt <= 0:
                bad("infusion_amt", "AMT", sid, [line],
                    f"RATE {rate:g} with AMT {amt:g}: an infusion needs AMT > 0 (AMT 0 with "
                    "RATE > 0 is a steady-state constant infusion only with SS 1)")
            elif ss in (1, 2) and not ii > 0:
                bad("ss_ii", "II", sid, [line], f"SS={ss} dose needs II > 0")
            if rate in (-1, -2) and amt <= 0 and kind != DoseKind.CONSTANT_INFUSION:
                bad("rate_code_amt", "AMT", sid, [line], f"RATE {rate:g} needs AMT > 0")
            if addl > 0 and not ii > 0:
                bad("addl_ii", "II", sid, [line], "ADDL > 0 needs II > 0")
            if kind == DoseKind.CONSTANT_INFUSION and ss == 2:
                bad("constant_infusion", "SS", sid, [line], "AMT 0 with RATE > 0 needs SS 1")
            base = (amt, rate, ii, int(kind), ss, cmt, dosing[cmt],
                    model.states.index(model.compartments[cmt]))
            dose_rows[s].append((t, int(epoch[s]), r, 1) + base + (r,))
            for k in range(1, addl + 1 if ii > 0 else 1):
                # implied doses are plain repetitions (not steady-state doses themselves)
                dose_rows[s].append((t + k * ii, int(epoch[s]), -1, k)
                                    + (amt, rate, ii, int(kind), 0, cmt,
                                       dosing[cmt], base[-1], r))
    if problems:
        viol = pd.DataFrame(problems)
        raise DatasetError(f"{len(problems)} record(s) cannot be used with model "
                           f"{model.name}:", violations=viol)

    # pass 2: drop implied doses at/after the next reset; rank everything
    for s in range(n_subj):
        # an implied dose after the last record of its epoch can reach no observation
        last: dict[int, float] = {}
        for x in obs_rows[s] + [d for d in dose_rows[s] if d[2] >= 0]:
            last[x[1]] = max(last.get(x[1], -np.inf), x[0])
        dose_rows[s] = [d for d in dose_rows[s] if d[2] >= 0 or d[0] <= last[d[1]]]

        def key(x: tuple) -> tuple:
            t, e, r, minor = x[0], x[1], x[2], x[3]
            return (e, t, r, minor)

        allrec = ([("d", i, key(x)) for i, x in enumerate(dose_rows[s])]
                  + [("o", i, key(x)) for i, x in enumerate(obs_rows[s])]
                  + [("r", i, key(x)) for i, x in enumerate(reset_rows[s])])
        allrec.sort(key=lambda z: z[2])
        ranks = {(z[0], z[1]): pos for pos, z in enumerate(allrec)}
        dose_rows[s] = [x + (ranks[("d", i)],) for i, x in enumerate(dose_rows[s])]
        obs_rows[s] = [x + (ranks[("o", i)],) for i, x in enumerate(obs_rows[s])]
        reset_rows[s] = [x + (ranks[("r", i)],) for i, x in enumerate(reset_rows[s])]
        # doses in time order within an epoch (cosmetic, helps debugging)
        dose_rows[s].sort(key=lambda x: x[-1])
        obs_rows[s].sort(key=lambda x: x[-1])

    nd = max(len(x) for x in dose_rows)
    no = max(len(x) for x in obs_rows)
    nr = max(len(x) for x in reset_rows)

    def dcol(j: int) -> list[list]:
        return [[x[j] for x in rows] for rows in dose_rows]

    def ocol(j: int) -> list[list]:
        return [[x[j] for x in rows] for rows in obs_rows]

    def rcol(j: int) -> list[list]:
        return [[x[j] for x in rows] for rows in reset_rows]

    obs_r = _pad(ocol(2), no, -1, np.int64)
    valid = obs_r >= 0
    safe_r = np.where(valid, obs_r, 0)
    d_rank = _pad(dcol(13), nd, 0, np.int32)
    d_epoch = _pad(dcol(1), nd, -1, np.int32)
    d_mask = _pad([[True] * len(x) for x in dose_rows], nd, False, bool)
    o_rank = _pad(ocol(5), no, 0, np.int32)
    o_epoch = _pad(ocol(1), no, -2, np.int32)
    contrib = ((d_epoch[:, None, :] == o_epoch[:, :, None])
               & (d_rank[:, None, :] < o_rank[:, :, None])
               & d_mask[:, None, :] & valid[:, :, None])
    if covs:
        cov = df[list(covs)].to_numpy(dtype=np.float64)[first_row]
    else:
        cov = np.zeros((n_subj, 0))
    ii = _pad(dcol(6), nd, 1.0, np.float64)
    return EventArrays(
        ids=ids,
        dose_time=_pad(dcol(0), nd, 0.0, np.float64),
        dose_amt=_pad(dcol(4), nd, 0.0, np.float64),
        dose_rate=_pad(dcol(5), nd, 0.0, np.float64),
        dose_ii=np.where(ii > 0, ii, 1.0),   # 1 where unused (keeps formulas finite)
        dose_kind=_pad(dcol(7), nd, 0, np.int32),
        dose_ss=_pad(dcol(8), nd, 0, np.int32),
        dose_cmt=_pad(dcol(9), nd, model.dosing_cmts[0], np.int64),
        dose_slot=_pad(dcol(10), nd, 0, np.int32),
        dose_state=_pad(dcol(11), nd, 0, np.int32),
        dose_row=_pad(dcol(12), nd, -1, np.int64),
        dose_epoch=d_epoch,
        dose_rank=d_rank,
        dose_mask=d_mask,
        obs_time=np.where(valid, _pad(ocol(0), no, 0.0, np.float64), 0.0),
        obs_cmt=np.where(valid, cols["CMT"][safe_r], 0).astype(np.int64),
        obs_dvid=np.where(valid, cols["DVID"][safe_r], 0).astype(np.int64),
        obs_output=_pad(ocol(4), no, 0, np.int32),
        obs_mask=valid,
        obs_used=valid & (cols["MDV"][safe_r] == 0),
        dv=np.where(valid & np.isfinite(cols["DV"][safe_r].astype(float)),
                    cols["DV"][safe_r].astype(float), 0.0),
        blq=valid & cols["BLQ"][safe_r].astype(bool),
        lloq=np.where(valid, cols["LLOQ"][safe_r].astype(float), np.nan),
        obs_row=obs_r,
        obs_epoch=o_epoch,
        obs_rank=o_rank,
        contrib=contrib,
        reset_time=_pad(rcol(0), nr, 0.0, np.float64),
        reset_epoch=_pad(rcol(1), nr, 0, np.int32),
        reset_rank=_pad(rcol(4), nr, 0, np.int32),
        reset_mask=_pad([[True] * len(x) for x in reset_rows], nr, False, bool),
        cov=cov,
        cov_names=covs,
    )
