"""`il2pkpd quickstart`: the README's main job on the bundled data.

1. reads and validates the bundled (SIMULATED) low-dose IL-2 trial against the canonical
   model ``il2_pkpd`` and prints its summary;
2. simulates two low-dose regimens over a virtual population of the canonical model and
   writes ``metrics.csv``, ``profiles.csv`` and the comparison plots.

A population fit of the canonical model is not part of the quick start yet: on this 2-core
machine it does not finish within the quick start's ten minutes (see the README's status).
"""

from __future__ import annotations

from pathlib import Path

import typer

from il2pkpd._paths import DATASETS_DIR

MODEL = "il2_pkpd"
DEFAULT_REGIMENS = ("1 MIU SC daily x5", "1 MIU SC qod x3")


def quickstart_command(
    out: Path = typer.Option(Path("results/quickstart"), "--out", "-o",
                             help="Output folder for the simulation."),
    n: int = typer.Option(2000, help="Virtual patients per regimen."),
    seed: int = typer.Option(2026, help="Random seed."),
) -> None:
    """Validate the bundled IL-2 trial and compare two low-dose regimens by simulation."""
    from il2pkpd.cli import app

    data = DATASETS_DIR / "il2_lowdose_sc.csv"
    typer.echo(f"== 1. il2pkpd validate {data.name} (a SIMULATED trial) --model {MODEL}")
    app(args=["validate", str(data), "--model", MODEL], standalone_mode=False)

    typer.echo(f"\n== 2. il2pkpd simulate: {n} virtual patients of {MODEL} per regimen")
    args = ["simulate", "--model", MODEL, "--n", str(n), "--days", "28", "--seed",
            str(seed), "--target", "treg_fold>=1.5 and nk_fold<=1.5", "--out", str(out)]
    for regimen in DEFAULT_REGIMENS:
        args += ["--regimen", regimen]
    app(args=args, standalone_mode=False)


def register(app: typer.Typer) -> None:
    """Add ``quickstart`` to *app*."""
    app.command("quickstart")(quickstart_command)
