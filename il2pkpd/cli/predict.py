"""`il2pkpd predict`: model predictions at every observation record of a dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from il2pkpd.errors import ParameterError


def _read_params(path: Path):
    import pandas as pd

    if not path.is_file():
        raise ParameterError(f"parameter file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ParameterError(f"{path}: not valid JSON ({err}); give an object such as "
                                 '{"CL": 4.0, "V1": 70.0}') from None
        if not isinstance(obj, dict):
            raise ParameterError(f"{path}: expected a JSON object of parameter values, got "
                                 f"{type(obj).__name__}")
        bad = [k for k, v in obj.items()
               if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)]
        if bad:
            raise ParameterError(f"{path}: parameter(s) {', '.join(bad)} are not finite numbers")
        return {k: float(v) for k, v in obj.items()}
    if path.suffix.lower() == ".csv":
        try:
            table = pd.read_csv(path)
        except Exception as err:  # pandas raises several types for malformed CSV
            raise ParameterError(f"{path}: cannot be read as CSV ({err})") from None
        table.columns = [c.strip() for c in table.columns]
        non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
        if non_numeric:
            raise ParameterError(f"{path}: column(s) {', '.join(non_numeric)} are not numeric")
        return table
    raise ParameterError(f"parameter file {path}: use a .json object or a .csv table with an "
                         "ID column and one column per parameter")


def _read_data(path: Path, model):
    try:
        from il2pkpd.data import read_dataset
    except ImportError:  # the data reader is not available: read the canonical CSV directly
        import pandas as pd

        return pd.read_csv(path, na_values=["."])
    return read_dataset(path, model=model)


def predict_command(
    data: Path = typer.Argument(..., help="NONMEM-style data file (CSV)."),
    model: str = typer.Option(..., "--model", "-m", help="Model name or path to a .toml file."),
    params: Path = typer.Option(..., "--params", "-p",
                                help="JSON object of values for all subjects, or CSV with ID "
                                     "and one column per parameter."),
    out: Path = typer.Option(..., "--out", "-o", help="Output CSV (ID, TIME, CMT, DVID, PRED)."),
    method: str = typer.Option("auto", help="auto, closed_form or ode."),
    solver: str = typer.Option("tsit5", help="ODE solver (tsit5, dopri5, kvaerno5, ...)."),
    rtol: float = typer.Option(1e-6, help="ODE relative tolerance."),
    atol: float = typer.Option(1e-9, help="ODE absolute tolerance (amount units)."),
) -> None:
    """Predict the model output at every observation record of DATA."""
    from il2pkpd._io import atomic_path
    from il2pkpd.engine import predict
    from il2pkpd.models import load_model

    mdl = load_model(model)
    values = _read_params(params)
    dataset = _read_data(data, mdl)
    result = predict(mdl, values, dataset, method=method, solver=solver, rtol=rtol, atol=atol)
    has_dvid = getattr(dataset, "has_dvid", None)
    if has_dvid is None:
        has_dvid = "DVID" in getattr(dataset, "columns", [])
    if not has_dvid:
        result = result.drop(columns=["DVID"])
    with atomic_path(out) as tmp:
        result.to_csv(tmp, index=False, float_format="%.10g")
    n_fail = int(result["PRED"].isna().sum())
    typer.echo(f"wrote {len(result)} predictions to {out}"
               + (f" ({n_fail} failed ODE solves: PRED empty)" if n_fail else ""))


def register(app: typer.Typer) -> None:
    """Add ``predict`` to *app*."""
    app.command("predict")(predict_command)
