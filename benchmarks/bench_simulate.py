"""Benchmark: virtual patients per second for `il2pkpd simulate` (three 28-day regimens).

The goal (issue 7): 100,000 virtual patients for each of three 28-day regimens within one
minute on a 2-core machine. This script times the whole pipeline (doses, batched Rodas4 solve,
on-device metrics, quantiles) per regimen, after a warm-up that compiles, and, in the same run,
the bare solver (``il2pkpd.solve.solve_population`` with 12-hourly outputs, no metrics) on the
same patients as the baseline; it prints patients per second and the ratio, and writes
``benchmarks/results/bench_simulate.json``.

Usage::

    .venv/bin/python benchmarks/bench_simulate.py [--n 100000] [--resolution fine|fast]
        [--cpu-devices N]

As ``il2pkpd simulate`` does, every CPU core is a JAX device by default (``--cpu-devices``,
default the core count; 1 for a single device), and the simulation is sharded over them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REGIMENS = ("1 MIU SC daily x5", "1 MIU/m2 SC qd x28", "600000 IU/kg IV 15min q8h x14")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="virtual patients per regimen")
    ap.add_argument("--baseline-n", type=int, default=2048,
                    help="patients for the bare-solver baseline")
    ap.add_argument("--resolution", default="fast", choices=("fine", "fast"))
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--precision", default="double", choices=("double", "single"),
                    help="floating type of the ODE solves (simulation and bare baseline)")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--days", type=float, default=28.0)
    ap.add_argument("--cpu-devices", type=int, default=None,
                    help="JAX CPU devices (default: the core count, as the CLI)")
    args = ap.parse_args(argv)

    import os

    if args.cpu_devices is not None:
        os.environ["IL2PKPD_CPU_DEVICES"] = str(args.cpu_devices)
    from il2pkpd._config import use_all_cpu_cores

    use_all_cpu_cores()

    import jax

    import il2pkpd

    il2pkpd.enable_x64()
    from il2pkpd.models import load_model
    from il2pkpd.simulate import default_population, dose_schedule, parse_regimen
    from il2pkpd.simulate.runner import simulate_population, system_for_model
    from il2pkpd.solve import Doses, solve_population

    model = load_model("il2_pkpd")
    devices = jax.devices()
    print(f"devices: {devices}; n = {args.n} per regimen; resolution {args.resolution}; "
          f"rtol {args.rtol}; precision {args.precision}")
    opts = dict(days=args.days, rtol=args.rtol, chunk_size=args.chunk,
                resolution=args.resolution, profile_n=2000, precision=args.precision)
    dtype = "float32" if args.precision == "single" else "float64"
    warm = default_population(model, min(args.chunk, args.n), seed=99)
    t0 = time.perf_counter()
    simulate_population(model, REGIMENS, warm, **opts)
    compile_s = time.perf_counter() - t0
    print(f"warm-up (compile + {warm.n} patients x 3): {compile_s:.1f} s")

    pop = default_population(model, args.n, seed=1)
    t0 = time.perf_counter()
    res = simulate_population(model, REGIMENS, pop, **opts)
    total = time.perf_counter() - t0
    rows = []
    for reg in REGIMENS:
        tm = res.timing[reg]
        rows.append({"regimen": reg, "patients": args.n, "seconds": tm["seconds"],
                     "patients_per_s": tm["patients_per_s"], "mean_steps": tm["mean_steps"],
                     "grid_points": tm["grid_points"], "failed": res.n_failed[reg]})

    # baseline: the bare batched solver, 12-hourly outputs, same patients (a subset)
    system = system_for_model(model)
    nb = min(args.baseline_n, args.n)
    sub = default_population(model, nb, seed=1)
    params = {k: v for k, v in sub.params.items() if k in system.param_names}
    t_out = np.arange(0.0, args.days * 24 + 1e-9, 12.0)
    for row, reg in zip(rows, REGIMENS, strict=True):
        sched = dose_schedule(parse_regimen(reg), model, sub.covariates)
        doses = Doses(np.broadcast_to(sched.time, sched.amount.shape).copy(), sched.amount,
                      np.broadcast_to(sched.cmt, sched.amount.shape).copy(),
                      np.broadcast_to(sched.duration, sched.amount.shape).copy())
        solve_population(system, params, doses, t_out, rtol=args.rtol, chunk_size=args.chunk,
                         dtype=dtype)
        tb = time.perf_counter()
        sol = solve_population(system, params, doses, t_out, rtol=args.rtol,
                               chunk_size=args.chunk, dtype=dtype)
        np.asarray(sol.outputs)
        sec = time.perf_counter() - tb
        row["baseline_patients_per_s"] = nb / sec
        row["ratio_to_baseline"] = row["patients_per_s"] / row["baseline_patients_per_s"]

    print(f"{'regimen':34s} {'patients/s':>11s} {'steps':>7s} {'grid':>6s} "
          f"{'bare solver/s':>13s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['regimen']:34s} {r['patients_per_s']:11.0f} {r['mean_steps']:7.0f} "
              f"{r['grid_points']:6d} {r['baseline_patients_per_s']:13.0f} "
              f"{r['ratio_to_baseline']:6.2f}")
    rate = 3 * args.n / total
    print(f"total: {3 * args.n} virtual patients in {total:.1f} s = {rate:.0f} patients/s; "
          f"100,000 x 3 regimens would take {3e5 / rate:.0f} s (goal: 60 s)")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_simulate.json").write_text(json.dumps({
        "devices": [str(d) for d in devices], "n": args.n, "resolution": args.resolution,
        "rtol": args.rtol, "precision": args.precision, "compile_s": compile_s, "total_s": total,
        "patients_per_s": rate, "regimens": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
