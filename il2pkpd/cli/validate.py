"""`il2pkpd validate DATA [--model MODEL]`: check a dataset and summarise it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from il2pkpd.data import Dataset
from il2pkpd.data._validate import model_outputs


def _fmt(x: float) -> str:
    return f"{x:g}"


def _route(rate: float) -> str:
    if rate > 0:
        return "infusion"
    if rate == -1:
        return "infusion, modelled rate"
    if rate == -2:
        return "infusion, modelled duration"
    return "bolus"


def summarise(ds: Dataset, model: object | None = None) -> str:
    """A short text summary of a dataset (what ``il2pkpd validate`` prints).

    Parameters
    ----------
    ds : Dataset
        A validated dataset.
    model : object, optional
        A model; when given, compartments and outputs are named.

    Returns
    -------
    str
    """
    df = ds.df
    compartments: dict[int, str] = {}
    outputs: dict[int, object] = {}
    if model is not None:
        compartments = {int(k): str(v) for k, v in dict(getattr(model, "compartments",
                                                                 {}) or {}).items()}
        outputs = model_outputs(model)
    units = ds.units
    t_unit = f" {units.time}" if units.time else ""
    lines = [f"dataset: {ds.source}"]
    if model is not None:
        lines.append(f"model: {getattr(model, 'name', type(model).__name__)}")
    lo, hi = (int(df["LINE"].min()), int(df["LINE"].max())) if len(df) else (0, 0)
    span = f"file line {lo}" if lo == hi else f"file lines {lo}-{hi}"
    lines.append(f"records: {len(df):,} ({span})")
    n_ids = df["ID"].nunique()
    extra = f" ({n_ids:,} distinct IDs)" if n_ids != ds.n_subjects else ""
    lines.append(f"subjects: {ds.n_subjects:,}{extra}")

    doses = ds.doses
    n_total = int((doses["ADDL"] + 1).sum()) if len(doses) else 0
    lines.append(f"dose records: {len(doses):,} ({n_total:,} doses with ADDL)"
                 + (f", amount unit {units.amount}" if units.amount else ""))
    if len(doses):
        routes = doses.assign(route=doses["RATE"].map(_route))
        for (cmt, route), group in routes.groupby(["CMT", "route"], sort=True):
            name = f" ({compartments[int(cmt)]})" if int(cmt) in compartments else ""
            amts = group["AMT"]
            lines.append(f"  CMT {cmt}{name}, {route}: {len(group):,} records, AMT "
                         f"{_fmt(amts.min())}-{_fmt(amts.max())}")

    obs = df[df["EVID"] == 0]
    used = obs[obs["MDV"] == 0]
    lines.append(f"observations: {len(used):,} used (EVID 0, MDV 0)"
                 + (f", {len(obs) - len(used):,} not used (MDV 1)" if len(obs) > len(used)
                    else ""))
    if len(used):
        key = "DVID" if ds.has_dvid else "CMT"
        for value, group in used.groupby(key, sort=True):
            label = ""
            if ds.has_dvid and int(value) in outputs:
                label = f" ({getattr(outputs[int(value)], 'name', '')})"
            elif not ds.has_dvid and int(value) in compartments:
                label = f" ({compartments[int(value)]})"
            lines.append(f"  {key} {value}{label}: {len(group):,}")
        n_blq = int(used["BLQ"].sum())
        lines.append(f"BLQ: {n_blq:,} of {len(used):,} ({100.0 * n_blq / len(used):.1f}%)")
    if len(df):
        lines.append(f"time: {_fmt(df['TIME'].min())} to {_fmt(df['TIME'].max())}{t_unit}")
    if ds.covariates:
        parts = []
        for c in ds.covariates:
            v = df[c].to_numpy(dtype=np.float64)
            finite = v[np.isfinite(v)]
            rng = f"{_fmt(finite.min())}-{_fmt(finite.max())}" if finite.size else "all missing"
            parts.append(f"{c} [{rng}]")
        lines.append("covariates: " + ", ".join(parts))
    else:
        lines.append("covariates: none")
    for note in ds.notes:
        lines.append(f"note: {note}")
    for warning in ds.warnings:
        lines.append(f"warning: {warning}")
    lines.append("valid: yes")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add the ``validate`` command to *app*."""

    @app.command("validate")
    def validate(
        data: Path = typer.Argument(..., help="NONMEM-style CSV dataset."),
        model: str | None = typer.Option(
            None, "--model", "-m",
            help="Model name (in models/) or TOML path; checks CMT and DVID against it."),
        time_unit: str | None = typer.Option(
            None, "--time-unit", help="Unit of TIME and II in the file (h, min, day)."),
        amount_unit: str | None = typer.Option(
            None, "--amount-unit",
            help="Unit of AMT in the file (IU, MIU, mg, ug, IU/kg, MIU/m2)."),
        conc_unit: str | None = typer.Option(
            None, "--conc-unit", help="Unit of DV and LLOQ in the file (IU/mL, pg/mL, pM)."),
    ) -> None:
        """Check a dataset against every rule and print a summary.

        Exits 0 when the dataset is valid; otherwise prints a table of every problem
        (rule, column, subject ID, file lines, message) and exits 2.
        """
        from il2pkpd.data import read_dataset
        from il2pkpd.units import DataUnits

        model_obj = None
        if model is not None:
            from il2pkpd.models import load_model

            model_obj = load_model(model)
        units = None
        if time_unit or amount_unit or conc_unit:
            units = DataUnits(time=time_unit, amount=amount_unit, concentration=conc_unit)
        ds = read_dataset(data, model=model_obj, units=units)
        typer.echo(summarise(ds, model_obj))
