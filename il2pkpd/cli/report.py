"""`il2pkpd report DIR`: write DIR/report.html (self-contained) and DIR/figures/*.png."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to *app*."""

    @app.command("report")
    def report(
        fit_dir: Path = typer.Argument(..., help="Fit directory (holds posterior.nc)."),
        bins: int = typer.Option(8, "--bins", min=1, help="Time bins of the VPC."),
        per_page: int = typer.Option(12, "--per-page", min=1,
                                     help="Subjects per individual-fit figure."),
        max_tree_depth: int = typer.Option(
            10, "--max-tree-depth", min=1,
            help="NUTS maximum tree depth of the fit (when the sample stats do not say)."),
    ) -> None:
        """Build the posterior diagnostic report of a fit directory."""
        import matplotlib

        matplotlib.use("Agg")  # the command line draws off screen
        from il2pkpd.report import build_report

        out = build_report(fit_dir, n_bins=bins, subjects_per_page=per_page,
                           max_tree_depth=max_tree_depth)
        typer.echo(f"wrote {out}")
