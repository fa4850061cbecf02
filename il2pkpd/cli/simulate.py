"""`il2pkpd simulate`: compare dosing regimens over a virtual population.

Writes, each file atomically, ``OUT/metrics.csv`` (regimen, metric, median, q5, q95, unit),
``OUT/profiles.csv`` (regimen, output, time, median, q5, q95), ``OUT/profiles.png`` and
``OUT/metrics.png`` (comparison plots), ``OUT/simulation.json`` (settings, timing), optionally
``OUT/patients.csv`` (one row per patient and regimen), and last ``OUT/_COMPLETE``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from il2pkpd.errors import OptionError

#: Metrics shown in the comparison plot (those the model gives).
PLOT_METRICS = ("cmax", "auc_course", "auc_day_max", "time_above", "treg_fold", "nk_fold",
                "selectivity")


def simulate_command(
    model: str = typer.Option(..., "--model", "-m",
                              help="Bundled model name (il2_pkpd) or model file path."),
    regimen: list[str] = typer.Option(..., "--regimen", "-r",
                                      help="A regimen, e.g. '1 MIU SC daily x5' or "
                                           "'600000 IU/kg IV 15min q8h x14 hold 5,6'; "
                                           "repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    posterior: Path = typer.Option(None, "--posterior",
                                   help="Fit folder (posterior.nc) to draw patients from; "
                                        "default: model defaults with --omega variability."),
    n: int = typer.Option(1000, "--n", help="Virtual patients per regimen."),
    days: float = typer.Option(28.0, "--days", help="Simulated days."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    target: list[str] = typer.Option([], "--target",
                                     help="Target to attain, e.g. 'treg_fold>=2 and "
                                          "nk_fold<=1.5'; repeatable."),
    threshold: float = typer.Option(250.0, "--threshold",
                                    help="Concentration threshold for time_above, in the "
                                         "model's concentration unit (IU/mL for IL-2)."),
    omega: float = typer.Option(0.3, "--omega",
                                help="Between-subject SD (log scale) without a posterior."),
    covariates: Path = typer.Option(None, "--covariates",
                                    help="Dataset CSV whose subjects' covariates are "
                                         "resampled (default: the fitted data, else a stated "
                                         "adult distribution)."),
    n_draws: int = typer.Option(100, "--n-draws", help="Posterior draws used."),
    iu_per_mg: float = typer.Option(None, "--iu-per-mg",
                                    help="Specific activity for doses in mg/ug (IU per mg; "
                                         "aldesleukin label: 16.4e6)."),
    rtol: float = typer.Option(1e-4, "--rtol", help="Solver relative tolerance."),
    resolution: str = typer.Option("fine", "--resolution",
                                   help="Output grid after doses: fine (peaks ~1e-4, AUC "
                                        "~1e-3) or fast (about 1%, several times faster)."),
    precision: str = typer.Option("double", "--precision",
                                  help="ODE solves in double or single precision (single: "
                                       "about 1.9x faster, ~1e-5 more relative error)."),
    patients: bool = typer.Option(False, "--patients/--no-patients",
                                  help="Also write patients.csv (one row per patient)."),
) -> None:
    """Simulate regimens over virtual patients; write metrics.csv, profiles.csv and plots."""
    from il2pkpd._config import use_all_cpu_cores

    use_all_cpu_cores()              # before JAX starts: the simulation shards over devices
    from il2pkpd._io import atomic_path, atomic_write_text, mark_complete, mark_incomplete
    from il2pkpd._version import __version__
    from il2pkpd.models import load_model
    from il2pkpd.simulate import parse_regimen, parse_target
    from il2pkpd.simulate.runner import simulate

    if n < 1:
        raise OptionError(f"--n must be at least 1, got {n}.")
    if not (math.isfinite(days) and days > 0):
        raise OptionError(f"--days must be a positive number, got {days}.")
    if not (math.isfinite(threshold) and threshold > 0):
        raise OptionError(f"--threshold must be a positive number (IU/mL), got {threshold}.")
    if not (math.isfinite(omega) and omega >= 0):
        raise OptionError(f"--omega must be >= 0, got {omega}.")
    if n_draws < 1:
        raise OptionError(f"--n-draws must be at least 1, got {n_draws}.")
    if not 0 < rtol < 1:
        raise OptionError(f"--rtol must lie between 0 and 1, got {rtol}.")
    if resolution not in ("fine", "fast"):
        raise OptionError(f"--resolution must be fine or fast, got {resolution!r}.")
    if precision not in ("double", "single"):
        raise OptionError(f"--precision must be double or single, got {precision!r}.")
    if posterior is not None and not posterior.exists():
        raise OptionError(f"--posterior {posterior} does not exist.")
    if covariates is not None and not covariates.exists():
        raise OptionError(f"--covariates {covariates} does not exist.")
    if len(set(regimen)) != len(regimen):
        raise OptionError("the same --regimen is given twice.")
    regs = {r.strip(): parse_regimen(r) for r in regimen}   # parse all before any work
    for t in target:
        parse_target(t)
    sa = None
    if iu_per_mg is not None:
        from il2pkpd.units import SpecificActivity

        if not (math.isfinite(iu_per_mg) and iu_per_mg > 0):
            raise OptionError(f"--iu-per-mg must be a positive number, got {iu_per_mg}.")
        sa = SpecificActivity(activity=iu_per_mg, activity_unit="IU", mass=1.0, mass_unit="mg")
    m = load_model(model)

    res = simulate(m, regs, n=n, days=days, seed=seed, posterior=posterior,
                   covariates=covariates, omega=omega, n_draws=n_draws, targets=target,
                   threshold=threshold, specific_activity=sa, rtol=rtol,
                   resolution=resolution, precision=precision)

    out.mkdir(parents=True, exist_ok=True)
    mark_incomplete(out)
    with atomic_path(out / "metrics.csv") as tmp:
        res.metrics.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out / "profiles.csv") as tmp:
        res.profiles.to_csv(tmp, index=False, float_format="%.6g")
    if patients:
        import pandas as pd

        table = pd.concat([df.assign(regimen=k) for k, df in res.patients.items()],
                          ignore_index=True)
        with atomic_path(out / "patients.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
    plot_profiles(res, m, out / "profiles.png")
    plot_metrics(res, out / "metrics.png")
    settings = {
        "il2pkpd": __version__, "model": m.name, "model_path": str(m.path),
        "regimens": list(regs), "n": n, "days": days, "seed": seed,
        "posterior": None if posterior is None else str(posterior),
        "covariates": None if covariates is None else str(covariates),
        "omega": omega if posterior is None else None, "n_draws": n_draws,
        "targets": list(target), "threshold_iu_per_ml": threshold, "rtol": rtol,
        "resolution": resolution, "precision": precision,
        "population": res.population.source, "failed_solves": res.n_failed,
        "timing": res.timing,
    }
    atomic_write_text(out / "simulation.json", json.dumps(settings, indent=2, default=str) + "\n")
    mark_complete(out)

    show = res.metrics.copy()
    typer.echo(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    total = res.timing.get("total", float("nan"))
    typer.echo(f"{len(regs)} regimen(s) x {n} patients in {total:.1f} s "
               f"({res.population.source}); wrote {out}/metrics.csv, profiles.csv, "
               "profiles.png, metrics.png")
    failed = {k: v for k, v in res.n_failed.items() if v}
    if failed:
        typer.secho(f"warning: solver failures (patients left out of the metrics): {failed}",
                    err=True, fg=typer.colors.YELLOW)


def _figure(**kw):
    """A matplotlib Figure rendered with Agg (no pyplot, no global backend change)."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def plot_profiles(res, model, path: Path) -> Path:
    """Median and 90% band of every output over time, one panel per output, one colour per
    regimen; written atomically as PNG."""
    from il2pkpd._io import atomic_path

    outputs = list(dict.fromkeys(res.profiles["output"]))
    units = {o.name: o.unit for o in model.outputs}
    fig = _figure(figsize=(9, 2.8 * len(outputs)))
    axes = fig.subplots(len(outputs), 1, sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], outputs, strict=True):
        for k, (label, block) in enumerate(res.profiles[res.profiles["output"] == name]
                                           .groupby("regimen", sort=False)):
            days = block["time"].to_numpy() / 24.0
            ax.plot(days, block["median"], color=f"C{k}", lw=1.2, label=label)
            ax.fill_between(days, block["q5"], block["q95"], color=f"C{k}", alpha=0.2, lw=0)
        ax.set_ylabel(f"{name} ({units.get(name, '')})")
        if name.upper() == "IL2":
            ax.set_yscale("symlog", linthresh=0.1)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("time (days)")
    fig.suptitle("Median and 90% interval across virtual patients", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def plot_metrics(res, path: Path) -> Path:
    """Median and 90% interval of the main metrics (and target attainment) per regimen."""
    from il2pkpd._io import atomic_path

    table = res.metrics
    names = [m for m in PLOT_METRICS if m in set(table["metric"])]
    names += [m for m in dict.fromkeys(table["metric"]) if str(m).startswith("P(")]
    regs = list(dict.fromkeys(table["regimen"]))
    cols = 3
    rows = max(1, math.ceil(len(names) / cols))
    fig = _figure(figsize=(11, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        sub = table[table["metric"] == name].set_index("regimen").reindex(regs)
        y = range(len(regs))
        med = sub["median"].to_numpy(float)
        lo = med - sub["q5"].to_numpy(float)
        hi = sub["q95"].to_numpy(float) - med
        for k in y:
            ax.errorbar(med[k], k, xerr=[[lo[k]], [hi[k]]], fmt="o", color=f"C{k}", capsize=3)
        lo_all, hi_all = sub["q5"].min(), sub["q95"].max()
        if lo_all > 0 and hi_all / lo_all > 50:
            ax.set_xscale("log")
        ax.set_yticks(list(y))
        ax.set_yticklabels([r if len(r) <= 28 else r[:26] + "…" for r in regs], fontsize=7)
        ax.invert_yaxis()
        unit = sub["unit"].dropna().iloc[0] if sub["unit"].notna().any() else ""
        ax.set_title(f"{name} ({unit})" if unit and unit != "1" else name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to *app*."""
    app.command("simulate")(simulate_command)
