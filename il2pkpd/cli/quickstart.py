"""`il2pkpd quickstart`: the README's main job on the bundled data.

1. reads and validates the bundled (SIMULATED) low-dose IL-2 trial against the canonical
   model ``il2_pkpd`` and prints its summary;
2. fits the canonical model to it (population model of the model file: nine parameters
   estimated with log-normal IIV, log-normal residual error per output, M3 for BLQ IL-2) by
   FOCE-I-type Laplace estimation (method focei) on the batched Rodas4 solver, writing ``OUT/fit``
   (posterior.nc, summary.csv, individual.csv) and the diagnostic report
   ``OUT/fit/report.html``;
3. simulates two low-dose regimens over virtual patients drawn from that fit (parameter
   uncertainty and between-subject variability) and writes ``OUT/simulation`` (metrics.csv,
   profiles.csv and the comparison plots).

NUTS is one flag away (``il2pkpd fit ... --method nuts``) but takes far longer than the quick
start's ten minutes on a 2-core machine for this ODE model.
"""

from __future__ import annotations

from pathlib import Path

import typer

from il2pkpd._paths import DATASETS_DIR
from il2pkpd.errors import OptionError

MODEL = "il2_pkpd"
DEFAULT_REGIMENS = ("1 MIU SC daily x5", "1 MIU SC qod x3")


def quickstart_command(
    out: Path = typer.Option(Path("results/quickstart"), "--out", "-o",
                             help="Output folder (fit/ and simulation/ inside)."),
    n: int = typer.Option(2000, help="Virtual patients per regimen."),
    seed: int = typer.Option(2026, help="Random seed."),
    subjects: int = typer.Option(0, help="Fit only N subjects spread over the trial's arms "
                                         "(0: all 48); a quicker look."),
    draws: int = typer.Option(500, help="Draws of the fit's Gaussian approximation."),
    fit: bool = typer.Option(True, "--fit/--no-fit",
                             help="Fit the trial (several minutes) and simulate from the fit, "
                                  "or only simulate the model's default population."),
) -> None:
    """Validate the bundled IL-2 trial, fit the canonical model, compare two regimens."""
    import tempfile

    from il2pkpd._config import use_all_cpu_cores
    from il2pkpd.cli import app

    use_all_cpu_cores()              # before JAX starts: the simulation shards over devices
    if subjects < 0 or n < 1 or draws < 1:
        raise OptionError("--subjects must be >= 0, --n and --draws >= 1.")
    data = DATASETS_DIR / "il2_lowdose_sc.csv"
    typer.echo(f"== 1. il2pkpd validate {data.name} (a SIMULATED trial) --model {MODEL}")
    app(args=["validate", str(data), "--model", MODEL], standalone_mode=False)

    fit_dir = out / "fit"
    with tempfile.TemporaryDirectory() as tmp:
        if not fit:
            typer.echo("\n== 2. (fit skipped: --no-fit)")
        fit_data = data
        if fit and subjects:
            fit_data = Path(tmp) / data.name
            _subset(data, fit_data, subjects)
        if fit:
            typer.echo(f"\n== 2. il2pkpd fit {data.name} --model {MODEL} --method focei "
                       f"({subjects or 'all'} subjects)")
            app(args=["fit", str(fit_data), "--model", MODEL, "--method", "focei",
                      "--draws", str(draws), "--seed", str(seed), "--out", str(fit_dir)],
                standalone_mode=False)

    source = "drawn from the fit" if fit else "of the model's default population"
    typer.echo(f"\n== 3. il2pkpd simulate: {n} virtual patients per regimen {source}")
    args = ["simulate", "--model", MODEL, "--n", str(n), "--days", "28", "--seed", str(seed),
            "--target", "treg_fold>=1.5 and nk_fold<=1.5", "--out", str(out / "simulation")]
    if fit:
        args += ["--posterior", str(fit_dir)]
    for regimen in DEFAULT_REGIMENS:
        args += ["--regimen", regimen]
    app(args=args, standalone_mode=False)
    if fit:
        typer.echo(f"\nreport: {fit_dir / 'report.html'}")


def _subset(src: Path, dst: Path, n: int) -> None:
    """Copy *src* keeping its comment lines, its header and *n* subjects spread evenly over
    the (ID-sorted) file, so that every arm is represented."""
    import numpy as np

    lines = src.read_text().splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith("#")]
    rows = [ln for ln in lines if not ln.startswith("#")]
    header, body = rows[0], rows[1:]
    ids = list(dict.fromkeys(ln.split(",", 1)[0] for ln in body))
    pick = {ids[int(i)] for i in np.unique(np.linspace(0, len(ids) - 1, min(n, len(ids)))
                                           .round())}
    dst.write_text("".join(head + [header] + [ln for ln in body
                                              if ln.split(",", 1)[0] in pick]))


def register(app: typer.Typer) -> None:
    """Add ``quickstart`` to *app*."""
    app.command("quickstart")(quickstart_command)
