"""The validation rules applied to a parsed dataset (each one a named check, all reported)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from il2pkpd.data._columns import DOSE_EVIDS, EVID_ALLOWED, RATE_CODES, RESET_EVIDS, SS_ALLOWED
from il2pkpd.data._violations import Violations

#: Every row rule: name -> what it checks (documentation; the CLI can list them).
RULES: dict[str, str] = {
    "missing_column": "ID and TIME, and DV or AMT, are present",
    "duplicate_column": "no column appears twice",
    "row_length": "every line has one value per column",
    "no_records": "the dataset has at least one record",
    "non_numeric": "NONMEM columns and covariates hold numbers ('.' or empty for missing)",
    "non_finite": "no inf values",
    "non_integer": "ID, ADDL, SS, EVID, CMT, MDV, DVID are whole numbers",
    "missing_value": "ID and TIME are given on every record",
    "evid_unknown": "EVID is 0, 1, 2, 3 or 4",
    "mdv_invalid": "MDV is 0 or 1",
    "amt_negative": "AMT >= 0",
    "rate_invalid": "RATE is -2, -1, 0 or positive",
    "ii_negative": "II >= 0",
    "addl_negative": "ADDL >= 0",
    "ss_invalid": "SS is 0, 1 or 2",
    "addl_without_ii": "ADDL > 0 needs II > 0",
    "ss_without_ii": "SS > 0 needs II > 0 (except a constant infusion: AMT 0, RATE > 0)",
    "rate_without_amt": "an infusion (RATE > 0) with AMT 0 is only a steady-state (SS=1) one",
    "obs_with_dose": "observation records (EVID 0) carry no dose (AMT 0)",
    "time_decreasing": "TIME does not decrease within a subject, except at EVID 3/4",
    "obs_missing_dv": "used observations (EVID 0, MDV 0) have DV (or are BLQ with LLOQ)",
    "blq_flag_invalid": "BLQ/BLOQ flags are 0 or 1",
    "blq_without_lloq": "BLQ rows have a quantification limit",
    "blq_dv_above_lloq": "a BLQ row's DV does not exceed its LLOQ",
    "blq_not_observation": "only observation records are flagged BLQ",
    "cens_invalid": "CENS is 0 or 1",
    "cens_unsupported": "CENS = -1 (above a limit) is not supported",
    "cens_limit": "on CENS = 1 rows LIMIT (lower end) does not exceed DV (the limit)",
    "cmt_unknown": "CMT values are compartments of the model",
    "dvid_unknown": "DVID values are outputs of the model",
    "cmt_no_output": "without DVID, observation CMTs map to a model output",
}


def check_rows(df: pd.DataFrame, present: set[str], block: np.ndarray, viol: Violations,
               skip: np.ndarray | None = None) -> list[str]:
    """Apply the row rules to the (float, pre-cast) canonical table; return warnings.

    Rows in *skip* (already reported as unreadable) are left out of the row rules, so that one
    typo gives one violation.
    """
    keep = np.ones(len(df), dtype=bool) if skip is None else ~np.asarray(skip, dtype=bool)
    ids = df["ID"].to_numpy(dtype=np.float64)
    lines = df["LINE"].to_numpy(dtype=np.int64)
    t = df["TIME"].to_numpy(dtype=np.float64)
    amt = df["AMT"].to_numpy(dtype=np.float64)
    rate = df["RATE"].to_numpy(dtype=np.float64)
    ii = df["II"].to_numpy(dtype=np.float64)
    addl = df["ADDL"].to_numpy(dtype=np.float64)
    ss = df["SS"].to_numpy(dtype=np.float64)
    evid = df["EVID"].to_numpy(dtype=np.float64)
    mdv = df["MDV"].to_numpy(dtype=np.float64)
    dv = df["DV"].to_numpy(dtype=np.float64)
    blq = df["BLQ"].to_numpy(dtype=bool)
    lloq = df["LLOQ"].to_numpy(dtype=np.float64)

    def add(rule, column, mask, ids_, lines_, message, values=None):
        viol.add_rows(rule, column, np.asarray(mask, dtype=bool) & keep, ids_, lines_, message,
                      values)

    add("evid_unknown", "EVID", ~np.isin(evid, sorted(EVID_ALLOWED)), ids, lines,
        "EVID {values} is unknown; allowed 0 (observation), 1 (dose), 2 (other), 3 (reset), "
        "4 (reset and dose)", evid)
    add("mdv_invalid", "MDV", ~np.isin(mdv, (0.0, 1.0)), ids, lines,
        "MDV {values} is not allowed; MDV is 0 (DV used) or 1 (DV missing or not used)", mdv)
    add("amt_negative", "AMT", amt < 0, ids, lines,
        "AMT {values} is negative; a dose amount is >= 0", amt)
    add("rate_invalid", "RATE", (rate < 0) & ~np.isin(rate, sorted(RATE_CODES)), ids, lines,
        "RATE {values} is not allowed; RATE is 0 (bolus), positive (infusion rate), -1 (rate "
        "modelled as R<n>) or -2 (duration modelled as D<n>)", rate)
    add("ii_negative", "II", ii < 0, ids, lines,
        "II {values} is negative; the dosing interval is >= 0", ii)
    add("addl_negative", "ADDL", addl < 0, ids, lines,
        "ADDL {values} is negative; the number of additional doses is >= 0", addl)
    add("ss_invalid", "SS", ~np.isin(ss, sorted(SS_ALLOWED)), ids, lines,
        "SS {values} is not allowed; SS is 0 (no steady state), 1 (steady state, reset) or 2 "
        "(steady state, superposed)", ss)
    add("addl_without_ii", "II", (addl > 0) & ~(ii > 0), ids, lines,
        "ADDL > 0 needs a positive interval II (got II {values}); give II or set ADDL to 0",
        ii)
    constant_infusion = (amt == 0) & (rate > 0)
    add("ss_without_ii", "II", (ss > 0) & ~(ii > 0) & ~constant_infusion, ids, lines,
        "SS > 0 needs a positive interval II (got II {values}), unless it is a constant "
        "infusion (AMT 0, RATE > 0); give II or set SS to 0", ii)
    dose = np.isin(evid, sorted(DOSE_EVIDS))
    add("rate_without_amt", "AMT", dose & (rate > 0) & (amt == 0) & (ss == 0), ids, lines,
        "an infusion with RATE > 0 has AMT 0 and SS 0; give the amount infused, or SS=1 for a "
        "constant steady-state infusion", amt)
    obs = evid == 0
    add("obs_with_dose", "AMT", obs & (amt != 0), ids, lines,
        "observation record (EVID 0) with AMT {values}; a dose needs EVID 1 (or 4)", amt)

    # Time must not decrease within a subject block, except at reset records (EVID 3, 4).
    same = np.r_[False, block[1:] == block[:-1]]
    prev_t = np.r_[np.nan, t[:-1]]
    back = same & (t < prev_t) & ~np.isin(evid, sorted(RESET_EVIDS))
    add("time_decreasing", "TIME", back, ids, lines,
        "TIME {values} is earlier than the record before it in this subject; sort by time "
        "within each subject, or reset with EVID 3 or 4", t)

    usable_blq = blq & np.isfinite(lloq)
    add("obs_missing_dv", "DV", obs & (mdv == 0) & np.isnan(dv) & ~usable_blq, ids, lines,
        "observation (EVID 0) with MDV 0 has no DV; give DV, or set MDV to 1", dv)
    add("blq_dv_above_lloq", "DV", blq & np.isfinite(dv) & np.isfinite(lloq) & (dv > lloq),
        ids, lines, "DV {values} is above the LLOQ of a row flagged below the limit; fix DV, "
        "LLOQ or the BLQ flag", dv)
    add("blq_not_observation", "BLQ", blq & ~obs, ids, lines,
        "a non-observation record (EVID {values}) is flagged below the limit; only EVID 0 rows "
        "can be censored", evid)

    # An ID that comes back after another ID: NONMEM starts a new subject (warn).
    warnings: list[str] = []
    if len(ids):
        starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
        first_seen: dict[float, int] = {}
        for s in starts:
            key = ids[s]
            if key in first_seen:
                warnings.append(
                    f"ID {int(key)} reappears at line {lines[s]} after other IDs (first seen at "
                    f"line {lines[first_seen[key]]}): as in NONMEM it is read as a separate "
                    "subject; give it its own ID, or sort the file by ID if it is the same "
                    "individual")
            else:
                first_seen[key] = int(s)
    return warnings


def _attr(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def model_outputs(model: Any) -> dict[int, Any]:
    """The model's outputs keyed by DVID (``outputs`` may be a mapping or specs with ``dvid``)."""
    outputs = _attr(model, "outputs") or {}
    if isinstance(outputs, Mapping):
        return {int(k): v for k, v in outputs.items()}
    return {int(_attr(spec, "dvid") if _attr(spec, "dvid") is not None else i + 1): spec
            for i, spec in enumerate(outputs)}


def check_model(df: pd.DataFrame, has_dvid: bool, has_cmt: bool, model: Any,
                viol: Violations) -> None:
    """CMT and DVID values that *model* does not define.

    *model* needs ``compartments`` (mapping CMT -> state name) and ``outputs`` (mapping DVID ->
    spec with an optional ``cmt``, or a sequence of specs with ``dvid``); an optional
    ``dosing_cmts`` restricts the compartments that take doses.
    """
    compartments = {int(k): str(v) for k, v in dict(_attr(model, "compartments") or {}).items()}
    outputs = model_outputs(model)
    dosing = [int(c) for c in (_attr(model, "dosing_cmts") or ())] or sorted(compartments)
    name = _attr(model, "name") or type(model).__name__
    ids = df["ID"].to_numpy(dtype=np.float64)
    lines = df["LINE"].to_numpy(dtype=np.int64)
    evid = df["EVID"].to_numpy(dtype=np.float64)
    cmt = df["CMT"].to_numpy(dtype=np.float64)
    dvid = df["DVID"].to_numpy(dtype=np.float64)
    known_cmt = sorted(compartments)
    cmt_list = ", ".join(f"{k} ({v})" for k, v in compartments.items()) or "none"
    dose_list = ", ".join(f"{k} ({compartments.get(k, '?')})" for k in dosing) or "none"
    dose = np.isin(evid, sorted(DOSE_EVIDS))
    viol.add_rows("cmt_unknown", "CMT", dose & ~np.isin(cmt, dosing), ids, lines,
                  f"dose into CMT {{values}}, which model {name} does not dose; its dosing "
                  f"compartments are {dose_list} (all compartments: {cmt_list})", cmt)
    obs = evid == 0
    if has_dvid:
        out_list = ", ".join(f"{k} ({_attr(v, 'name') or ''})".replace(" ()", "")
                             for k, v in outputs.items()) or "none"
        viol.add_rows("dvid_unknown", "DVID", obs & ~np.isin(dvid, sorted(outputs)), ids,
                      lines, f"DVID {{values}} is not an output of model {name}; its outputs "
                      f"are {out_list}", dvid)
        if has_cmt:
            viol.add_rows("cmt_unknown", "CMT", obs & ~np.isin(cmt, known_cmt), ids, lines,
                          f"observation in CMT {{values}}, which model {name} does not define; "
                          f"its compartments are {cmt_list}", cmt)
        return
    out_cmts = sorted({int(c) for c in (_attr(v, "cmt") for v in outputs.values())
                       if c is not None})
    if out_cmts:
        viol.add_rows("cmt_no_output", "CMT", obs & ~np.isin(cmt, out_cmts), ids, lines,
                      f"observation in CMT {{values}}, which no output of model {name} reads "
                      f"(the data has no DVID column; outputs read CMT "
                      f"{', '.join(map(str, out_cmts))}); fix CMT or add a DVID column", cmt)
    elif len(outputs) > 1 and obs.any():
        viol.add("cmt_no_output", "DVID",
                 f"model {name} has "
                 f"{len(outputs)} outputs and the data has no DVID column to say which one "
                 "each observation is; add DVID", lines=lines[obs].tolist())
