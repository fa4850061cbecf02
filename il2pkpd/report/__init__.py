"""Posterior diagnostics and the self-contained HTML report of a fit directory.

``build_report(fit_dir)`` reads only the fit directory (names: :mod:`il2pkpd.report.fitdir`)
and writes ``report.html`` plus ``figures/*.png``. The numerical pieces are public for reuse
and testing: :func:`npde` (normalised prediction distribution errors), :func:`vpc_table`
(prediction-corrected VPC statistics), and the diagnostics tables.
"""

from il2pkpd.report.build import SECTION_IDS, build_report
from il2pkpd.report.diagnostics import (
    convergence_table,
    loo_summary,
    parameter_table,
    sampler_checks,
    shrinkage_table,
)
from il2pkpd.report.fitdir import FitData, load_fit_dir
from il2pkpd.report.npde import npde, pde_subject
from il2pkpd.report.vpc import assign_bins, time_bin_edges, vpc_table

__all__ = [
    "build_report", "SECTION_IDS", "load_fit_dir", "FitData", "npde", "pde_subject",
    "vpc_table", "time_bin_edges", "assign_bins", "convergence_table", "sampler_checks",
    "parameter_table", "shrinkage_table", "loo_summary",
]
