"""`il2pkpd fit`: Bayesian population fit of a model to a dataset.

Writes ``OUT/posterior.nc`` (ArviZ DataTree), ``OUT/summary.csv``, ``OUT/individual.csv``,
``OUT/fit.json`` and, last, ``OUT/_COMPLETE`` (each file atomically: an interrupted fit leaves no
file that looks complete).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from il2pkpd.errors import OptionError


def _warn(msg: str) -> None:
    typer.secho(f"warning: {msg}", err=True, fg=typer.colors.YELLOW)


_POOLED_MIN_WARMUP = 40     # il2pkpd.inference.samplers.POOLED_MIN_WARMUP (not imported here:
#                             the CLI starts before JAX); tests check that they agree


def _tree_depths(text: str):
    """``--max-tree-depth`` N or W,S as samplers.tree_depths takes it (exit 2 otherwise)."""
    from il2pkpd.inference.samplers import tree_depths

    try:
        return tree_depths([int(v) for v in text.split(",")])
    except (ValueError, OptionError):
        raise OptionError(f"--max-tree-depth must be an integer from 1 to 30 (N), or two of "
                          f"them (W,S: warm-up, sampling), got {text!r}.") from None


def fit_command(
    data: Path = typer.Argument(..., help="NONMEM-style CSV dataset."),
    model: str = typer.Option(..., "--model", "-m",
                              help="Bundled model name (two_cmt_iv) or model file path."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    method: str = typer.Option("nuts", help="nuts | map | focei | laplace | svi (focei: "
                                            "fast marginal mode with IIV; nuts: full posterior)."),
    chains: int = typer.Option(4, help="NUTS chains (run in parallel on CPU cores)."),
    warmup: int = typer.Option(500, help="NUTS warm-up iterations per chain."),
    samples: int = typer.Option(1000, help="NUTS draws kept per chain."),
    thin: int = typer.Option(1, help="NUTS iterations per kept draw after warm-up (--samples "
                                     "draws kept from samples x thin; divergences counted "
                                     "over all)."),
    seed: int = typer.Option(0, help="Random seed."),
    target_accept: float = typer.Option(0.8, help="NUTS target acceptance probability."),
    max_tree_depth: str = typer.Option("10", help="NUTS maximum tree depth: N, or W,S (warm-up "
                                                  "W, sampling S, e.g. 10,6)."),
    dense_mass: str = typer.Option("auto",
                                   help="NUTS mass matrix: auto | full | population | diagonal."),
    init: str = typer.Option("median", help="NUTS start: median (prior medians) | map | "
                                             "laplace (non-centred joint mode with a "
                                             "metric from the Hessian there; rich data)."),
    adapt_mass: str = typer.Option("auto", help="NUTS mass matrix adaptation in warm-up: "
                                                "auto (yes, but a full dense laplace "
                                                "metric is kept: --dense-mass full, or auto "
                                                "up to 200 latent dimensions) "
                                                "| yes | no."),
    pooled_metric: bool = typer.Option(
        False, "--pooled-metric/--no-pooled-metric",
        help="NUTS cross-chain warm-up: after half the warm-up, a metric from all chains' "
             "draws pooled (correlations shrunk) replaces the stage-1 metric and is kept; the "
             "rest of warm-up adapts the step size (needs --warmup "
             f"{_POOLED_MIN_WARMUP} or more; NUTS only)."),
    stage1_parametrization: str = typer.Option(
        None, help="With --pooled-metric: the IIV parametrization the first half of warm-up "
                   "runs in (centred | noncentred | centred=CL,V1), with its own --init "
                   "start; its draws are carried exactly to the sampled parametrization "
                   "for the pooled metric (e.g. centred for a partially centred model)."),
    adaptive_centring: bool = typer.Option(
        False, "--adaptive-centring/--no-adaptive-centring",
        help="With --pooled-metric: after half the warm-up, partially centre every IIV "
             "parameter with weight (1 - s)^2 from its eta-shrinkage s so far, for the rest "
             "of the run (rich data: start it with --parametrization centred)."),
    centring_weights: str = typer.Option(
        "parameter", help="With --adaptive-centring: one weight per IIV parameter (parameter) "
                          "or one per subject and parameter, 1 - v_i / T from the subject's "
                          "eta variance v_i and the total eta variance T (subject: subjects "
                          "whose data differ in how much they say)."),
    shared_step_size: bool = typer.Option(
        False, "--shared-step-size/--no-shared-step-size",
        help="With --pooled-metric: after warm-up every chain samples with one step size, "
             "the median of those the chains adapted (a chain that ended warm-up on a small "
             "step size would otherwise take twice the others' leapfrog steps per draw)."),
    draws: int = typer.Option(1000, help="Draws of the focei / laplace / svi approximations."),
    pred_draws: int = typer.Option(200, help="Draws for the post hoc PRED/IPRED (0: all)."),
    prior_draws: int = typer.Option(300, help="Draws of the prior groups (0: none)."),
    prior: list[str] = typer.Option([], "--prior",
                                    help="Override a prior, e.g. CL=lognormal(1.4,0.5), "
                                         "omega_CL=halfnormal(0.3); repeatable."),
    fix: list[str] = typer.Option([], "--fix", help="Fix a parameter, e.g. KA=0.3; repeatable."),
    residual: list[str] = typer.Option([], "--residual",
                                       help="Residual error per output, e.g. CP=lognormal "
                                            "(additive|proportional|combined|lognormal)."),
    estimate: str = typer.Option(None, help="Estimate only these parameters, comma-separated "
                                            "(the others are fixed at their defaults)."),
    iiv: str = typer.Option(None, help="Parameters with IIV, comma-separated (CL,V1)."),
    covariance: str = typer.Option(None, help="IIV covariance: diagonal | block."),
    parametrization: str = typer.Option(
        None, help="IIV parametrization: noncentred (default; sparse data) | centred (rich "
                   "data: many samples per subject) | centred=CL,V1 (mixed: these centred, "
                   "the other IIV parameters non-centred given them; see the fit's "
                   "eta-shrinkage and suggested parametrization)."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="Progress on stderr: bars on a terminal, else about 20 "
                                       "plain lines (NUTS) or one line per round (FOCE-I)."),
    report: bool = typer.Option(True, "--report/--no-report",
                                help="Write OUT/report.html (diagnostics) after the fit."),
) -> None:
    """Fit a population model (NUTS by default) and write posterior.nc and summary.csv."""
    from il2pkpd.inference._fit import METHODS
    from il2pkpd.inference.samplers import DENSE_OPTIONS, INIT_OPTIONS, POOLED_MIN_WARMUP
    from il2pkpd.inference.spec import parse_assignments

    if method not in METHODS:
        raise OptionError(f"--method {method!r} is not allowed; use one of {', '.join(METHODS)}.")
    for name, v, lo in (("--chains", chains, 1), ("--warmup", warmup, 0),
                        ("--samples", samples, 1), ("--draws", draws, 1),
                        ("--thin", thin, 1),
                        ("--pred-draws", pred_draws, 0),
                        ("--prior-draws", prior_draws, 0)):
        if v < lo:
            raise OptionError(f"{name} must be at least {lo}, got {v}.")
    depths = _tree_depths(max_tree_depth)
    if not 0 < target_accept < 1:
        raise OptionError(f"--target-accept must lie between 0 and 1, got {target_accept}.")
    if dense_mass not in DENSE_OPTIONS:
        raise OptionError(f"--dense-mass {dense_mass!r} is not allowed; use one of "
                          f"{', '.join(DENSE_OPTIONS)}.")
    if init not in INIT_OPTIONS:
        raise OptionError(f"--init {init!r} is not allowed; use one of "
                          f"{', '.join(INIT_OPTIONS)}.")
    if pooled_metric and method != "nuts":
        raise OptionError(f"--pooled-metric applies to --method nuts only, not {method}.")
    if thin != 1 and method != "nuts":
        raise OptionError(f"--thin applies to --method nuts only, not {method}.")
    for name, on in (("--stage1-parametrization", stage1_parametrization is not None),
                     ("--adaptive-centring", adaptive_centring),
                     ("--shared-step-size", shared_step_size)):
        if on and not (method == "nuts" and pooled_metric):
            raise OptionError(f"{name} needs --method nuts and --pooled-metric.")
    if centring_weights not in ("parameter", "subject"):
        raise OptionError(f"--centring-weights {centring_weights!r} is not allowed; use "
                          "parameter or subject.")
    if centring_weights != "parameter" and not adaptive_centring:
        raise OptionError("--centring-weights needs --adaptive-centring.")
    if method == "nuts" and pooled_metric and warmup < POOLED_MIN_WARMUP:
        raise OptionError(f"--pooled-metric needs --warmup {POOLED_MIN_WARMUP} or more, got "
                          f"{warmup}.")
    if adapt_mass not in ("auto", "yes", "no"):
        raise OptionError(f"--adapt-mass {adapt_mass!r} is not allowed; use auto, yes or no.")
    if covariance is not None and covariance not in ("diagonal", "block"):
        raise OptionError(f"--covariance {covariance!r} is not allowed; use diagonal or block.")
    if not data.exists():
        raise OptionError(f"dataset {data} does not exist.")
    priors = parse_assignments(prior, "--prior")
    fixed = parse_assignments(fix, "--fix")
    res = parse_assignments(residual, "--residual")
    population = {}
    if estimate is not None:
        population["estimate"] = [p.strip() for p in estimate.split(",") if p.strip()]
    if iiv is not None:
        population["iiv"] = [p.strip() for p in iiv.split(",") if p.strip()]
    if covariance is not None:
        population["covariance"] = covariance
    if parametrization is not None:       # validated by build_spec (OptionError, exit 2)
        population["parametrization"] = parametrization

    # Parallel chains: one XLA CPU device per chain (NumPyro's "parallel" needs a device per
    # chain; more devices than cores share them, still faster than chains one after another),
    # set before JAX starts its backend.
    if method == "nuts" and chains > 1:
        import numpyro

        numpyro.set_host_device_count(chains)

    from il2pkpd.inference import fit

    result = fit(model, str(data), method=method, chains=chains, warmup=warmup, samples=samples,
                 seed=seed, target_accept=target_accept, max_tree_depth=depths,
                 dense_mass=dense_mass, init=init,
                 adapt_mass_matrix=None if adapt_mass == "auto" else adapt_mass == "yes",
                 pooled_metric=pooled_metric, stage1_parametrization=stage1_parametrization,
                 adaptive_centring=centring_weights if adaptive_centring else False,
                 thin=thin, shared_step_size=shared_step_size,
                 draws=draws, priors=priors, fix=fixed,
                 population=population or None, residual=res or None,
                 pred_draws=pred_draws or None, prior_draws=prior_draws,
                 progress_bar=(os.isatty(2) or "log") if progress else False, cli=True)
    out_dir = result.save(out)
    typer.echo(result.summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    info = result.info
    extra = ""
    if method == "nuts":
        extra = (f", {info['chains']} chains ({info['chain_method']}), "
                 f"{info['divergences']} divergences")
    typer.echo(f"{method}: {info.get('seconds', 0):.1f} s{extra}; wrote {out_dir}/posterior.nc, "
               "summary.csv, individual.csv")
    for msg in result.warnings:
        _warn(msg)
    if report:
        from il2pkpd.report import build_report

        typer.echo(f"wrote {build_report(out_dir)}")


def register(app: typer.Typer) -> None:
    """Add ``fit`` to *app*."""
    app.command("fit")(fit_command)
