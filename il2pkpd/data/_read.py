"""Reading NONMEM-style datasets: parse, apply NONMEM defaults, validate, convert units."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from il2pkpd.data._columns import (
    CANONICAL,
    CANONICAL_DTYPES,
    INTEGER_COLUMNS,
    KNOWN,
    MISSING_TEXT,
)
from il2pkpd.data._dataset import Dataset
from il2pkpd.data._validate import check_model, check_rows, model_outputs
from il2pkpd.data._violations import Violations
from il2pkpd.errors import DatasetError, OptionError, UnitError
from il2pkpd.units import DataUnits, body_size, conversion_factor, split_per_size

__all__ = ["read_dataset", "validate"]

_DATAFRAME_LABEL = "<DataFrame>"


# --------------------------------------------------------------------------------------------
# Loading text


def _split_line(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter))


def _field_count(line: str, delimiter: str | None) -> int:
    if delimiter is None:
        return len(line.split())
    if '"' in line:
        return len(_split_line(line, delimiter))
    return line.count(delimiter) + 1


def _load_text(text: str, label: str, viol: Violations) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Split CSV (or whitespace-separated) text into a table and file line numbers.

    Numbers are parsed by pandas' C reader; a column holding text stays text, and is judged
    later (:func:`_numeric`).
    """
    raw_lines = text.splitlines()
    header_at = None
    for i, line in enumerate(raw_lines):
        if line.strip() and not line.lstrip().startswith("#"):
            header_at = i
            break
    if header_at is None:
        raise DatasetError(f"dataset {label} is empty: no header line with column names "
                           "(ID, TIME, AMT, DV, ...) was found")
    header_line = raw_lines[header_at].lstrip("\ufeff")
    if "," in header_line:
        delimiter: str | None = ","
    elif "\t" in header_line:
        delimiter = "\t"
    elif ";" in header_line:
        delimiter = ";"
    else:
        delimiter = None
    header = [h.strip() for h in _split_line(header_line, delimiter)]
    width = len(header)
    kept: list[str] = []
    lines: list[int] = []
    for i in range(header_at + 1, len(raw_lines)):
        line = raw_lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        n = _field_count(line, delimiter)
        if n == width + 1 and delimiter is not None and line.rstrip().endswith(delimiter):
            line = line.rstrip()[:-1]  # a trailing delimiter is harmless
        elif n != width:
            viol.add("row_length", "(row)", f"{n} fields but the header has {width} columns; "
                     "every line needs one value per column (use '.' for missing)",
                     lines=[i + 1])
            continue
        kept.append(line)
        lines.append(i + 1)
    if kept:
        table = pd.read_csv(
            io.StringIO("\n".join(kept)), header=None, names=list(range(width)),
            sep=delimiter if delimiter is not None else r"\s+", engine="c" if delimiter else
            "python", na_values=sorted(MISSING_TEXT), keep_default_na=False,
            skipinitialspace=True, skip_blank_lines=False, dtype=None, index_col=False,
        )
    else:
        table = pd.DataFrame({j: pd.Series([], dtype=object) for j in range(width)})
    table.columns = header
    return table, np.asarray(lines, dtype=np.int64), header_at + 1


def _load(source: Any, viol: Violations) -> tuple[pd.DataFrame, np.ndarray, int | None, str]:
    """Return the raw table, file lines, header line (None for a DataFrame) and a label."""
    if isinstance(source, pd.DataFrame):
        table = source.reset_index(drop=True).copy()
        table.columns = [str(c) for c in table.columns]
        lines = np.arange(2, len(table) + 2, dtype=np.int64)
        if "LINE" in table.columns:
            v = pd.to_numeric(table["LINE"], errors="coerce").to_numpy(dtype=np.float64)
            if np.all(np.isfinite(v)) and np.all(v == np.round(v)):
                lines = v.astype(np.int64)
            table = table.drop(columns="LINE")
        return table, lines, None, _DATAFRAME_LABEL
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(2, "No such file", str(path))
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            text = path.read_text(encoding="latin-1")
        table, lines, header = _load_text(text, str(path), viol)
        return table, lines, header, str(path)
    if isinstance(source, io.TextIOBase):
        label = getattr(source, "name", "<stream>")
        table, lines, header = _load_text(source.read(), str(label), viol)
        return table, lines, header, str(label)
    raise DatasetError(f"cannot read a dataset from {type(source).__name__}; pass a CSV path "
                       "or a pandas DataFrame")


def _numeric(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values (float64), missing mask, non-numeric mask of one column."""
    n = len(s)
    if is_bool_dtype(s.dtype):
        v = s.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return v, np.isnan(v), np.zeros(n, dtype=bool)
    if is_numeric_dtype(s.dtype):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        return v, np.isnan(v), np.zeros(n, dtype=bool)

    def _text(x: object) -> str:
        if x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x)):
            return ""
        return str(x).strip()

    obj = s.astype(object)
    if all(type(x) is str for x in obj):
        text = obj.str.strip()
    else:
        text = obj.map(_text)
    missing = text.isin(MISSING_TEXT).to_numpy()
    v = pd.to_numeric(text.mask(missing, "nan"), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(v) & ~missing
    return v, missing, bad


# --------------------------------------------------------------------------------------------
# Building the canonical table


def _normalise_columns(table: pd.DataFrame, header_lines: list[int], viol: Violations,
                       notes: list[str]) -> pd.DataFrame:
    names: list[str] = []
    seen: dict[str, int] = {}
    keep: list[int] = []
    for j, raw in enumerate(table.columns):
        name = str(raw).strip()
        up = name.upper()
        if up in KNOWN:
            name = up
        if not name or name.startswith("Unnamed:"):
            notes.append(f"column {j + 1} has no name: dropped (name it to use it as a "
                         "covariate)")
            continue
        if name in seen:
            viol.add("duplicate_column", name,
                     f"the column appears twice (columns {seen[name] + 1} and {j + 1}); keep one",
                     lines=header_lines)
            continue
        seen[name] = j
        names.append(name)
        keep.append(j)
    out = table.iloc[:, keep].copy()
    out.columns = names
    return out


def _apply_defaults_and_flags(
    values: dict[str, np.ndarray],
    present: set[str],
    ids: np.ndarray,
    lines: np.ndarray,
    viol: Violations,
    notes: list[str],
) -> dict[str, np.ndarray]:
    """NONMEM defaults, derived EVID/MDV, and the BLQ/LLOQ columns."""
    n = len(lines)

    def col(name: str, default: float) -> np.ndarray:
        if name in present:
            v = values[name].copy()
            v[np.isnan(v)] = default
            return v
        return np.full(n, default)

    amt = col("AMT", 0.0)
    rate = col("RATE", 0.0)
    ii = col("II", 0.0)
    addl = col("ADDL", 0.0)
    ss = col("SS", 0.0)
    dv = values["DV"].copy() if "DV" in present else np.full(n, np.nan)

    # BLQ from a flag column (BLQ or BLOQ) with LLOQ, and/or from CENS (+ LIMIT).
    blq = np.zeros(n, dtype=bool)
    lloq = values["LLOQ"].copy() if "LLOQ" in present else np.full(n, np.nan)
    for flag in ("BLQ", "BLOQ"):
        if flag in present:
            f = values[flag]
            bad = ~np.isnan(f) & ~np.isin(f, (0.0, 1.0))
            viol.add_rows("blq_flag_invalid", flag, bad, ids, lines,
                          "value {values} is not a BLQ flag; allowed 1 (below the "
                          "quantification limit in LLOQ), 0 or '.' (not censored)", f)
            blq |= f == 1.0
    if "CENS" in present:
        c = values["CENS"]
        bad = ~np.isnan(c) & ~np.isin(c, (-1.0, 0.0, 1.0))
        viol.add_rows("cens_invalid", "CENS", bad, ids, lines,
                      "value {values} is not a censoring code; allowed 0 (observed) and 1 "
                      "(below the limit in DV)", c)
        viol.add_rows("cens_unsupported", "CENS", c == -1.0, ids, lines,
                      "CENS=-1 (above an upper limit) is not supported: only below-limit (M3) "
                      "censoring is; drop these rows or set CENS to 0", c)
        cens = c == 1.0
        if "LIMIT" in present:
            lim = values["LIMIT"]
            above = cens & np.isfinite(dv) & np.isfinite(lim) & (lim > dv)
            viol.add_rows("cens_limit", "LIMIT", above, ids, lines,
                          "LIMIT {values} is above DV on a CENS=1 row; in the CENS/LIMIT "
                          "convention (Monolix, nlmixr2) DV holds the quantification limit and "
                          "LIMIT the lower end of the interval; put the LLOQ in DV", lim)
            # LIMIT as the limit itself when DV is empty.
            use_lim = cens & np.isnan(lloq) & np.isnan(dv) & np.isfinite(lim)
            lloq[use_lim] = lim[use_lim]
            if np.any(cens & np.isfinite(lim) & (lim > 0) & ~above):
                notes.append("LIMIT (the lower end of a CENS=1 interval) is not used: "
                             "censored values are treated as anywhere below the limit (M3)")
        use_dv = cens & np.isnan(lloq) & np.isfinite(dv)
        lloq[use_dv] = dv[use_dv]
        blq |= cens
    if blq.any():
        # With a BLQ/BLOQ flag the limit must be in LLOQ: DV on such rows is often an imputed
        # value (LLOQ/2, 0), so it is never taken as the limit.
        flag_col = next((c for c in ("BLQ", "BLOQ", "CENS") if c in present), "BLQ")
        viol.add_rows("blq_without_lloq", "LLOQ", blq & np.isnan(lloq), ids, lines,
                      f"a row flagged below the limit ({flag_col}) has no quantification limit; "
                      "give it in an LLOQ column")

    # EVID derived from AMT and MDV where absent or missing; MDV derived from EVID and DV.
    blq_ok = blq & np.isfinite(lloq)
    mdv_given = values["MDV"] if "MDV" in present else np.full(n, np.nan)
    no_dv = np.isnan(dv) & ~blq_ok
    mdv_guess = np.where(np.isnan(mdv_given), np.where(no_dv, 1.0, 0.0), mdv_given)
    is_dose = (amt > 0) | ((rate > 0) & (ss > 0))  # a dose, or a steady-state infusion
    evid_derived = np.where(is_dose, 1.0, np.where(mdv_guess == 1.0, 2.0, 0.0))
    if "EVID" in present:
        evid = values["EVID"].copy()
        fill = np.isnan(evid)
        evid[fill] = evid_derived[fill]
    else:
        evid = evid_derived
        notes.append("no EVID column: EVID derived (1 where AMT > 0 or a steady-state "
                     "infusion, 2 where MDV = 1 or DV is missing, else 0)")
    mdv_derived = np.where((evid != 0) | no_dv, 1.0, 0.0)
    if "MDV" in present:
        mdv = values["MDV"].copy()
        fill = np.isnan(mdv)
        mdv[fill] = mdv_derived[fill]
    else:
        mdv = mdv_derived
    cmt = values["CMT"].copy() if "CMT" in present else np.full(n, np.nan)  # filled later
    dvid = col("DVID", 1.0)
    return {"AMT": amt, "RATE": rate, "II": ii, "ADDL": addl, "SS": ss, "EVID": evid,
            "CMT": cmt, "MDV": mdv, "DV": dv, "DVID": dvid, "BLQ": blq, "LLOQ": lloq}


def _build(source: Any, model: Any, units: DataUnits | None, target_units: DataUnits | None
           ) -> tuple[Dataset | None, Violations, str]:
    viol = Violations()
    notes: list[str] = []
    if isinstance(source, Dataset):
        if units is not None or target_units is not None:
            raise OptionError("units apply when a file or DataFrame is read; pass units= to "
                              "read_dataset with the file (or source.df), not with a Dataset")
        if model is not None:
            check_model(source.df, source.has_dvid, True, model, viol)
        return source, viol, source.source
    table, lines, header_line, label = _load(source, viol)
    header_lines = [header_line] if header_line is not None else []
    table = _normalise_columns(table, header_lines, viol, notes)
    present = set(table.columns)

    for name in ("ID", "TIME"):
        if name not in present:
            viol.add("missing_column", name,
                     f"required column {name} is missing "
                     f"(the header has {', '.join(table.columns) or 'no columns'}); "
                     f"add it", lines=header_lines)
    if "DV" not in present and "AMT" not in present:
        viol.add("missing_column", "DV",
                 "the dataset needs a DV column (observations) "
                 "or an AMT column (doses); add DV and/or AMT", lines=header_lines)
    if "ID" not in present or "TIME" not in present:
        return None, viol, label
    if len(table) == 0:
        viol.add("no_records", "(row)", "the dataset has a header but no records",
                 lines=header_lines)
        return None, viol, label

    values: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] = {}
    covariates: list[str] = []
    id_vals, _, id_bad = _numeric(table["ID"])
    ids_for_msgs = np.where(np.isfinite(id_vals) & (id_vals == np.round(id_vals)),
                            id_vals, np.nan)
    flagged = np.zeros(len(lines), dtype=bool)  # rows with an unreadable value
    for name in table.columns:
        if name == "LINE":
            notes.append("column LINE ignored: LINE is the reader's own file line number")
            continue
        v, miss, bad = _numeric(table[name])
        known = name in KNOWN
        if not known:
            if bad.any() and bad.sum() == (~miss).sum():
                notes.append(f"column {name} is not numeric (for example "
                             f"{str(table[name][bad].iloc[0])!r}) and is not a NONMEM column: "
                             "dropped (covariates must be numbers)")
                continue
        raw = table[name].astype(object).to_numpy()
        viol.add_rows("non_numeric", name, bad, ids_for_msgs, lines,
                      "value {values} is not a number; write a number, or '.' for missing",
                      raw)
        inf = np.isinf(v)
        viol.add_rows("non_finite", name, inf, ids_for_msgs, lines,
                      "value {values} is not finite; write a finite number, or '.' for "
                      "missing", v)
        v = np.where(bad | inf, np.nan, v)
        flagged |= bad | inf
        if name in INTEGER_COLUMNS:
            frac = np.isfinite(v) & (v != np.round(v))
            viol.add_rows("non_integer", name, frac, ids_for_msgs, lines,
                          f"value {{values}} is not a whole number; {name} takes integers", v)
            v = np.where(frac, np.nan, v)
            flagged |= frac
        values[name] = v
        missing[name] = miss
        if not known:
            covariates.append(name)

    for name in ("ID", "TIME"):
        gone = missing[name]
        viol.add_rows("missing_value", name, gone, ids_for_msgs, lines,
                      f"{name} is missing; every record needs {name}", values[name])
    ids = values["ID"]
    have_id = np.isfinite(ids)
    if not have_id.all():
        # Rows without a usable ID cannot be placed in a subject: report and stop here.
        return None, viol, label
    present = set(values)

    canon = _apply_defaults_and_flags(values, present, ids, lines, viol, notes)
    _default_cmt(canon, model, notes)
    if "DVID" not in present:
        notes.append("no DVID column: DVID = 1 for every record")

    df = pd.DataFrame({
        "ID": ids, "TIME": values["TIME"], **canon, "LINE": lines,
    })
    # Covariates: carried forward, then backward, within each subject block.
    block = np.cumsum(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, int)
    for name in covariates:
        df[name] = values[name]
    if covariates:
        filled = df.groupby(block, sort=False)[covariates].ffill()
        filled = filled.groupby(block, sort=False).bfill()
        df[covariates] = filled[covariates]
    warnings = check_rows(df, present, block, viol, skip=flagged)
    for name in covariates:
        allnan = df[name].isna().groupby(block).all()
        for b in np.flatnonzero(allnan.to_numpy()):
            sid = int(ids[np.argmax(block == allnan.index[b])])
            warnings.append(f"covariate {name} is missing on every record of subject {sid}")

    if model is not None:
        check_model(df, "DVID" in present, "CMT" in present, model, viol)
    if len(viol):
        return None, viol, label

    for name, dtype in CANONICAL_DTYPES.items():
        df[name] = df[name].astype(dtype)
    df = df[list(CANONICAL) + covariates]

    declared = units if units is not None else DataUnits()
    target = target_units if target_units is not None else _model_units(model)
    df, final_units = _convert_units(df, covariates, declared, target, label)
    ds = Dataset(df=df.reset_index(drop=True), covariates=tuple(covariates),
                 has_dvid="DVID" in present, units=final_units, source=label,
                 warnings=tuple(warnings), notes=tuple(notes))
    return ds, viol, label


def _default_cmt(canon: dict[str, np.ndarray], model: Any, notes: list[str]) -> None:
    """Fill missing CMT: 1 without a model; with a model, as NONMEM's defaults do, doses go to
    the first dosing compartment and observations to the compartment of their output."""
    cmt = canon["CMT"]
    gone = np.isnan(cmt)
    if not gone.any():
        return
    dose_cmt, obs_cmt = 1.0, 1.0
    if model is not None:
        dosing = [int(c) for c in (getattr(model, "dosing_cmts", None) or ())]
        comps = sorted(int(c) for c in dict(getattr(model, "compartments", None) or {}))
        dose_cmt = float(dosing[0] if dosing else (comps[0] if comps else 1))
        outs = model_outputs(model)
        out_cmts = [getattr(o, "cmt", None) if not isinstance(o, Mapping) else o.get("cmt")
                    for o in outs.values()]
        known = [int(c) for c in out_cmts if c is not None]
        obs_cmt = float(known[0] if known else dose_cmt)
    dose = np.isin(canon["EVID"], (1.0, 4.0))
    cmt[gone & dose] = dose_cmt
    cmt[gone & ~dose] = obs_cmt
    canon["CMT"] = cmt
    notes.append(f"CMT missing on {int(gone.sum())} record(s): doses go to CMT {int(dose_cmt)}, "
                 f"other records to CMT {int(obs_cmt)}"
                 + (" (the model's defaults)" if model is not None else ""))


# --------------------------------------------------------------------------------------------
# Units at the boundary


def _model_units(model: Any) -> DataUnits | None:
    if model is None:
        return None
    conc: dict[int, str] = {}
    for dvid, spec in model_outputs(model).items():
        unit = spec.get("unit") if isinstance(spec, Mapping) else getattr(spec, "unit", None)
        if unit:
            conc[int(dvid)] = str(unit)
    time_unit = getattr(model, "time_unit", None)
    amount_unit = getattr(model, "amount_unit", None)
    if time_unit is None and amount_unit is None and not conc:
        return None
    return DataUnits(time=time_unit, amount=amount_unit, concentration=conc or None)


def _covariate(df: pd.DataFrame, covariates: list[str], name: str) -> np.ndarray | None:
    for c in covariates:
        if c.upper() == name:
            return df[c].to_numpy(dtype=np.float64)
    return None


def _convert_units(df: pd.DataFrame, covariates: list[str], declared: DataUnits,
                   target: DataUnits | None, label: str) -> tuple[pd.DataFrame, DataUnits]:
    """Convert TIME/II/RATE, AMT/RATE and DV/LLOQ from declared to target units."""
    if not declared.declared:
        return df, declared
    target = target or DataUnits()
    df = df.copy()
    sa = declared.specific_activity or target.specific_activity
    mw = declared.molecular_weight or target.molecular_weight
    time_unit, amount_unit = declared.time, declared.amount
    rate_code = df["RATE"].isin((-1.0, -2.0)).to_numpy()
    if declared.time is not None and target.time is not None:
        f = conversion_factor(declared.time, target.time)
        df["TIME"] = df["TIME"] * f
        df["II"] = df["II"] * f
        df.loc[~rate_code, "RATE"] = df.loc[~rate_code, "RATE"] / f
        time_unit = target.time
    if declared.amount is not None:
        base, per = split_per_size(declared.amount)
        to = target.amount if target.amount is not None else base
        if split_per_size(to)[1] is not None:
            raise UnitError(f"the target amount unit {to} must be an absolute amount "
                            f"(IU, MIU, mg); doses declared in {declared.amount} are resolved "
                            "to absolute amounts")
        f = conversion_factor(base, to, specific_activity=sa, molecular_weight=mw)
        scale = np.full(len(df), f)
        if per is not None:
            dosing = (df["AMT"].to_numpy() != 0) | (df["RATE"].to_numpy() > 0)
            wt = _covariate(df, covariates, "WT")
            bsa_cov = _covariate(df, covariates, "BSA")
            ht = _covariate(df, covariates, "HT")
            try:
                size = body_size(per, unit=declared.amount, to=to,
                                 wt_kg=None if wt is None else wt[dosing],
                                 bsa_m2=None if bsa_cov is None else bsa_cov[dosing],
                                 ht_cm=None if ht is None else ht[dosing],
                                 bsa_formula=declared.bsa_formula)
            except UnitError as err:
                raise UnitError(f"{label}: {err} (covariate columns WT in kg, BSA in m2, HT "
                                "in cm)") from None
            scale[dosing] = f * np.asarray(size)
        df["AMT"] = df["AMT"] * scale
        df.loc[~rate_code, "RATE"] = df.loc[~rate_code, "RATE"] * scale[~rate_code]
        amount_unit = to
    conc_units = declared.concentration_map()
    new_conc: dict[int, str] | None = None
    if conc_units:
        new_conc = {}
        dvids = df["DVID"].to_numpy()
        for dvid in np.unique(dvids):
            src = declared.concentration_for(int(dvid))
            dst = target.concentration_for(int(dvid))
            if src is None:
                continue
            if dst is None:
                new_conc[int(dvid)] = src
                continue
            try:
                f = conversion_factor(src, dst, specific_activity=sa, molecular_weight=mw)
            except UnitError as err:
                raise UnitError(f"{label}, DV of DVID {int(dvid)}: {err} (declare the unit of "
                                "each DVID: concentration={1: 'pg/mL', 2: 'cells/uL'}; CLI: "
                                "--conc-unit '1=pg/mL,2=cells/uL')") from None
            rows = dvids == dvid
            df.loc[rows, "DV"] = df.loc[rows, "DV"] * f
            df.loc[rows, "LLOQ"] = df.loc[rows, "LLOQ"] * f
            new_conc[int(dvid)] = dst
        if len(set(new_conc.values())) == 1 and None in conc_units:
            new_conc = {None: next(iter(new_conc.values()))}  # type: ignore[dict-item]
    conc_out: str | dict[int, str] | None
    if new_conc is None:
        conc_out = None
    elif None in new_conc:
        conc_out = new_conc[None]  # type: ignore[index]
    else:
        conc_out = new_conc
    return df, DataUnits(time=time_unit, amount=amount_unit, concentration=conc_out,
                         specific_activity=sa, molecular_weight=mw,
                         bsa_formula=declared.bsa_formula)


# --------------------------------------------------------------------------------------------
# Public functions


def read_dataset(
    source: str | os.PathLike | pd.DataFrame | Dataset,
    *,
    model: Any = None,
    units: DataUnits | None = None,
    target_units: DataUnits | None = None,
) -> Dataset:
    """Read and validate a NONMEM-style dataset.

    Parameters
    ----------
    source : path, pandas.DataFrame or Dataset
        A CSV file (comma, tab, semicolon or whitespace separated; ``.``, empty and ``NA`` are
        missing; lines starting with ``#`` are skipped), or a DataFrame with the same columns.
    model : object, optional
        A model (``il2pkpd.models.load_model``) or any object with ``compartments`` (dict CMT ->
        state name) and ``outputs`` (dict DVID -> spec with an optional ``cmt``); when given,
        CMT and DVID values it does not define are violations, and its ``time_unit``,
        ``amount_unit`` and output ``unit`` are the conversion target of ``units``.
    units : DataUnits, optional
        The units the file is written in. Default: not declared, no conversion.
    target_units : DataUnits, optional
        The units wanted (overrides the model's). Doses per kg or per m2 are always resolved
        to absolute amounts from the WT (kg), BSA (m2) or WT and HT (cm) covariates.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        With ``violations`` (columns ``rule, column, ID, lines, message``) listing every
        problem at once.
    UnitError
        Incompatible or unknown units, or per-size doses without body size.
    FileNotFoundError
        When the path does not exist.

    Notes
    -----
    Defaults as in NONMEM: AMT, RATE, II, ADDL, SS are 0 when absent or missing; EVID is 1
    where AMT > 0, 2 where MDV = 1 (or DV is missing), else 0; MDV is 1 for non-observation
    records and missing DV; CMT and DVID are 1 when absent. Below-limit data: a ``BLQ`` or
    ``BLOQ`` flag (1 = below) with ``LLOQ``, or ``CENS`` = 1 with the limit in DV (Monolix,
    nlmixr2). Every other numeric column is a covariate; non-numeric extra columns are dropped
    (see :attr:`Dataset.notes`).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 1.0], "AMT": [100.0, 0.0],
    ...                    "DV": [None, 4.2], "WT": [70.0, None]})
    >>> ds = read_dataset(df)
    >>> ds.df[["EVID", "MDV", "WT"]].to_numpy().tolist()
    [[1.0, 1.0, 70.0], [0.0, 0.0, 70.0]]
    """
    ds, viol, label = _build(source, model, units, target_units)
    viol.raise_if_any(label)
    if ds is None:  # pragma: no cover  (no violations always yields a dataset)
        raise RuntimeError(f"internal error: {label} produced neither a dataset nor violations")
    return ds


def validate(
    source: str | os.PathLike | pd.DataFrame | Dataset,
    *,
    model: Any = None,
    units: DataUnits | None = None,
) -> pd.DataFrame:
    """Every problem of a dataset as a table, without raising.

    Parameters
    ----------
    source : path, pandas.DataFrame or Dataset
        As for :func:`read_dataset`.
    model : object, optional
        As for :func:`read_dataset`.
    units : DataUnits, optional
        As for :func:`read_dataset`.

    Returns
    -------
    pandas.DataFrame
        Columns ``rule, column, ID, lines, message``; empty when the dataset is valid.
    """
    _, viol, _ = _build(source, model, units, None)
    return viol.table()
