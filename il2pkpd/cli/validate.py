"""`il2pkpd validate DATA [--model MODEL]`: check a dataset and summarise it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from il2pkpd.data import Dataset
from il2pkpd.data._validate import model_outputs


def _per_dvid(text: str | None) -> str | dict[int, str] | None:
    """``"pg/mL"`` or ``"1=pg/mL,2=cells/uL"`` (one unit per DVID)."""
    if text is None or "=" not in text:
        return text
    out: dict[int, str] = {}
    for part in text.split(","):
        key, sep, unit = part.partition("=")
        if not sep or not key.strip().isdigit() or not unit.strip():
            from il2pkpd.errors import OptionError

            raise OptionError(f"--conc-unit {text!r}: write one unit ('pg/mL') or DVID=unit "
                              "pairs separated by commas ('1=pg/mL,2=cells/uL')")
        out[int(key)] = unit.strip()
    return out


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
            lo, hi = group["AMT"].min(), group["AMT"].max()
            amt = _fmt(lo) if lo == hi else f"{_fmt(lo)}-{_fmt(hi)}"
            lines.append(f"  CMT {cmt}{name}, {route}: {len(group):,} records, AMT {amt}")

    obs = df[df["EVID"] == 0]
    used = obs[obs["MDV"] == 0]
    lines.append(f"observations: {len(used):,} used (EVID 0, MDV 0)"
                 + (f", {len(obs) - len(used):,} not used (MDV 1)" if len(obs) > len(used)
                    else ""))
    if len(used):
        keys = ["DVID", "CMT"] if ds.has_dvid else ["CMT"]
        for value, group in used.groupby(keys, sort=True):
            parts = []
            for k, v in zip(keys, value, strict=True):
                label = ""
                if k == "DVID" and int(v) in outputs:
                    label = f" ({getattr(outputs[int(v)], 'name', '')})"
                elif k == "CMT" and int(v) in compartments:
                    label = f" ({compartments[int(v)]})"
                parts.append(f"{k} {v}{label}")
            n_b = int(group["BLQ"].sum())
            blq = f" ({n_b:,} BLQ, {100.0 * n_b / len(group):.1f}%)" if n_b else ""
            lines.append(f"  {', '.join(parts)}: {len(group):,}{blq}")
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
            None, "--conc-unit",
            help="Unit of DV and LLOQ in the file (IU/mL, pg/mL, pM), or one per DVID: "
                 "'1=pg/mL,2=cells/uL'."),
        specific_activity: str | None = typer.Option(
            None, "--specific-activity",
            help="Allows mg <-> IU: '18 MIU per 1.1 mg', '16.4 MIU/mg' or 'label' "
                 "(aldesleukin, 18 MIU per 1.1 mg). Never assumed."),
        molecular_weight: float | None = typer.Option(
            None, "--molecular-weight", help="kDa; allows pM <-> pg/mL (aldesleukin 15.3)."),
        bsa_formula: str = typer.Option(
            "mosteller", "--bsa-formula",
            help="BSA for per-m2 doses from WT and HT: mosteller, dubois, haycock, "
                 "gehan_george."),
    ) -> None:
        """Check a dataset against every rule and print a summary.

        With --model, CMT and DVID values are checked against the model, and declared units
        (--time-unit, --amount-unit, --conc-unit) are converted to the model's units.

        Exits 0 when the dataset is valid; otherwise prints a table of every problem
        (rule, column, subject ID, file lines, message) and exits 2.
        """
        from il2pkpd.data import read_dataset
        from il2pkpd.units import DataUnits, MolecularWeight, SpecificActivity

        model_obj = None
        if model is not None:
            from il2pkpd.models import load_model

            model_obj = load_model(model)
        units = None
        if time_unit or amount_unit or conc_unit:
            units = DataUnits(
                time=time_unit, amount=amount_unit, concentration=_per_dvid(conc_unit),
                specific_activity=(SpecificActivity.parse(specific_activity)
                                   if specific_activity else None),
                molecular_weight=(MolecularWeight(molecular_weight)
                                  if molecular_weight is not None else None),
                bsa_formula=bsa_formula)
        ds = read_dataset(data, model=model_obj, units=units)
        typer.echo(summarise(ds, model_obj))
