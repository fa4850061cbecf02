"""Population fit of the bundled low-dose IL-2 trial with the canonical model il2_pkpd.

Data: datasets/il2_lowdose_sc.csv (SIMULATED: 48 subjects, IL-2 concentrations with BLQ rows,
Treg and NK counts; generator, seed and true parameters in il2_lowdose_sc.meta.json). Model:
models/il2_pkpd.toml through the engine's batched Rodas4 path (what fits of ODE models use;
``--ode-method ode`` for diffrax). The nine parameters simulated with between-subject
variability (CL, V1, KA, VMAX, EMAX_T, EC50_T, TREG0, EMAX_N, NK0) are estimated with diagonal
log-normal IIV and lognormal(log(default), 1) priors; the others are fixed at their (true)
defaults; log-normal residual error per output, M3 for BLQ IL-2 values (the model file's own
[population] and [residual] tables).

Runs the fast methods first (``--methods``, default FOCE-I; also map, laplace, svi), then NUTS
with the requested settings (small by default: each gradient of the log density costs 40-95
ms CPU), chains in parallel (one XLA CPU device per chain; the Rodas4 path allows it), in
the IIV parametrization the first fast method's eta-shrinkage suggests (``--parametrization
suggested``: centred below 30%), started by ``--init laplace`` (the non-centred joint mode
mapped to that parametrization; the Laplace covariance there, cut to the mass matrix's
structure, a dense population block and a diagonal for the 432 random effects, is where
the adaptation starts), and prints wall times, the estimates against the true values (and
whether the 90% interval covers them), and for NUTS min bulk ESS, ESS/s, max R-hat,
divergences and leapfrog steps per draw.

    .venv/bin/python benchmarks/bench_fit_il2.py [--methods focei,svi] [--chains 2]
        [--warmup 100] [--samples 100] [--ode-method rodas|ode] [--no-nuts]
        [--init laplace|map|median]
        [--parametrization suggested|noncentred|centred|centred=P,...]
        [--chain-method parallel|sequential] [--compile-cache] [--no-progress-bar]

Writes benchmarks/results/bench_fit_il2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import il2pkpd

il2pkpd.enable_x64()


import numpy as np  # noqa: E402

from il2pkpd.inference import fit_population_model, prepare  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "datasets" / "il2_lowdose_sc.csv")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="unused (the IL-2 data are bundled); kept for a uniform interface")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--methods", default="focei",
                    help="comma-separated fast methods: focei, map, laplace, svi")
    ap.add_argument("--ode-method", choices=["rodas", "ode"], default="rodas")
    ap.add_argument("--solver", default="kvaerno5", help="diffrax solver (--ode-method ode)")
    ap.add_argument("--rtol", type=float, default=None,
                    help="default 1e-4 (rodas, as fits use) or 1e-5 (ode)")
    ap.add_argument("--svi-steps", type=int, default=2000)
    ap.add_argument("--no-nuts", action="store_true")
    ap.add_argument("--init", choices=["laplace", "map", "median"], default="laplace",
                    help="NUTS start (laplace: non-centred joint mode in the sampled "
                         "parametrization; the Laplace covariance there, cut to the mass "
                         "matrix's blocks, starts the adaptation)")
    ap.add_argument("--parametrization", default="suggested",
                    help="IIV parametrization NUTS samples: noncentred, centred, "
                         "centred=P,... (mixed) or suggested (the eta-shrinkage of the "
                         "first fast method that reports it, focei, laplace or svi: "
                         "centred below 30%%, else non-centred; noncentred when none does)")
    ap.add_argument("--chain-method", default="parallel",
                    help="parallel (one XLA CPU device per chain) | sequential | vectorized")
    ap.add_argument("--max-tree-depth", type=int, default=10)
    ap.add_argument("--no-progress-bar", action="store_true",
                    help="no NumPyro progress bar (one per chain, on stderr; shown by default "
                         "because a run takes tens of minutes)")
    ap.add_argument("--compile-cache", action="store_true",
                    help="keep XLA programs on disk between runs (as the CLI does)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_fit_il2.json")
    args = ap.parse_args()
    if args.chain_method == "parallel":
        import numpyro

        numpyro.set_host_device_count(args.chains)        # before JAX starts its backend
    if args.compile_cache:
        from il2pkpd._config import enable_compilation_cache

        enable_compilation_cache()

    meta = json.loads(args.data.with_suffix(".meta.json").read_text())
    estimate = list(meta["between_subject_sd_log"])
    residual = {str(k): {"model": "lognormal"} for k in meta["residual_error"]["sd_by_dvid"]}
    if args.ode_method == "rodas":
        solver = {"method": "rodas", "rtol": args.rtol or 1e-4}
    else:
        solver = {"method": "ode", "solver": args.solver, "rtol": args.rtol or 1e-5,
                  "atol": 1e-6}
    def build(parametrization):
        return prepare("il2_pkpd", args.data, population={
            "estimate": estimate, "iiv": estimate, "parametrization": parametrization},
                       residual=residual, solver_options=solver)[0]

    t0 = time.perf_counter()
    suggested = args.parametrization == "suggested"
    pm = build("noncentred" if suggested else args.parametrization)   # text parsed by the spec
    prep_s = time.perf_counter() - t0
    truth = {**meta["typical_values"],
             **{f"omega_{k}": v for k, v in meta["between_subject_sd_log"].items()}}
    for dvid, sd in meta["residual_error"]["sd_by_dvid"].items():
        name = next(r.output.name for r in pm.spec.residuals if str(r.output.dvid) == dvid)
        truth[f"sigma_{name}"] = sd
    res: dict = {"benchmark": "il2_lowdose_sc (simulated), il2_pkpd, 9 parameters with IIV",
                 "solver": solver, "n_subjects": pm.n_subjects, "n_obs": len(pm.obs.dv),
                 "n_blq": int(pm.obs.blq.sum()), "prepare_s": prep_s,
                 "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": sys.version.split()[0], "load_avg": os.getloadavg()}}
    print(f"{pm.n_subjects} subjects, {len(pm.obs.dv)} observations "
          f"({res['n_blq']} BLQ); estimating {', '.join(estimate)}", flush=True)

    def report(label, fr, wall):
        s = fr.summary.set_index("parameter")
        est = {k: float(s.loc[k, "median"]) for k in s.index}
        rows = {k: {"estimate": est[k], "true": truth.get(k),
                    "q5": float(s.loc[k, "q5"]), "q95": float(s.loc[k, "q95"])} for k in est}
        out = {"wall_s": wall, "estimates": rows, "warnings": fr.warnings}
        print(f"{label}: {wall:.0f} s")
        for k, v in rows.items():
            t = v["true"]
            cover = ("" if t is None else
                     "  covered" if v["q5"] <= t <= v["q95"] else "  NOT covered")
            print(f"  {k:12s} {v['estimate']:12.4g} [{v['q5']:.4g}, {v['q95']:.4g}]   true "
                  f"{t if t is None else f'{t:.4g}'}{cover}")
        return out, s

    suggestions: list = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        t0 = time.perf_counter()
        fr = fit_population_model(pm, method, seed=args.seed, svi_steps=args.svi_steps,
                                  draws=500, is_ode=True, posterior_predictive=False)
        res[method], _ = report(method.upper(), fr, time.perf_counter() - t0)
        res[method]["info"] = {k: v for k, v in fr.info.items() if k != "spec"}
        if "eta_shrinkage" in fr.info:
            print("  eta-shrinkage: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in
                                                  fr.info["eta_shrinkage"].items()))
            suggestions.append(fr.info["suggested_parametrization"])
    if suggested and not args.no_nuts:
        chosen = suggestions[0] if suggestions else "noncentred"
        print(f"NUTS samples the parametrization {chosen}", flush=True)
        if chosen != pm.spec.parametrization_value():
            t0 = time.perf_counter()
            pm = build(chosen)
            res["rebuild_s"] = time.perf_counter() - t0     # prepare_s is the first build
    if not args.no_nuts:
        t0 = time.perf_counter()
        fr = fit_population_model(pm, "nuts", chains=args.chains, warmup=args.warmup,
                                  samples=args.samples, seed=args.seed, init=args.init,
                                  is_ode=True, chain_method=args.chain_method,
                                  max_tree_depth=args.max_tree_depth,
                                  progress_bar=not args.no_progress_bar,
                                  posterior_predictive=False)
        wall = time.perf_counter() - t0
        steps = np.asarray(fr.datatree["sample_stats"]["n_steps"].values)
        out, s = report(f"NUTS {args.chains} x ({args.warmup} + {args.samples})", fr, wall)
        out.update({"min_ess_bulk": float(s["ess_bulk"].min()),
                    "max_r_hat": float(s["r_hat"].max()), "divergences": fr.info["divergences"],
                    "ess_per_s": float(s["ess_bulk"].min()) / wall,
                    "chain_method": fr.info["chain_method"], "init": args.init,
                    "parametrization": pm.spec.parametrization_value(), "metric": fr.info.get("metric"),
                    "laplace": fr.info.get("laplace"), "step_size": fr.info.get("step_size"),
                    "leapfrog_steps_mean": float(steps.mean()),
                    "leapfrog_steps_max": int(steps.max()), "cpu_s": time.process_time()})
        print(f"  min bulk ESS {out['min_ess_bulk']:.0f}, ESS/s {out['ess_per_s']:.3f}, max R-hat "
              f"{out['max_r_hat']:.3f}, divergences {out['divergences']}, leapfrog steps per "
              f"draw {steps.mean():.1f} (max {steps.max()}), chains {out['chain_method']}")
        res["nuts"] = out
    res["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
