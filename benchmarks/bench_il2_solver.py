"""Virtual patients per second for the canonical IL-2 model: il2pkpd.solve vs plain diffrax.

Regimen: 1 MIU SC daily for 5 days, 28 days simulated, outputs every 12 h (57 times, 3
outputs), log-normal variability (omega 0.3) on every parameter (logit-normal, sd 0.3, for
the fractions F1 and IMAX). Measured in the same run:

- ``il2pkpd.solve`` (Rodas4, per-patient adaptive steps, structured linear solve) at one or
  more relative tolerances, in float32 and float64 (``--dtype``), chunked;
- the baseline: a plain vmapped diffrax Tsit5 solve (rtol 1e-6), piecewise between doses;
- accuracy of both against scipy ``solve_ivp`` (Radau, rtol 1e-10) on the first patients;
- the cost of a forward-mode gradient of the sum of all outputs w.r.t. every parameter of
  48 subjects (what a fit needs), relative to the plain solve of the same subjects.

Relative errors: |x - ref| / max(|ref|, floor) with floor 1e-3 IU/mL for IL-2 (about 100x below
assay LLOQs; later IL-2 values fall to 1e-20 IU/mL, where relative error is meaningless) and
no floor for the cell counts. Writes benchmarks/results/bench_il2_solver.json.

Wall-clock rates on a shared machine depend on the other processes; the rates per CPU-second
(process time of all threads) are printed beside them. ``--devices 2`` splits the CPU into two
JAX devices (``jax_num_cpu_devices``) so that ``solve_population`` solves two chunks at once.

    .venv/bin/python benchmarks/bench_il2_solver.py [--n 16384] [--n-baseline 128]
        [--devices 2] [--rtol 3e-5 2e-5] [--dtype float32 float64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import il2pkpd

il2pkpd.enable_x64()

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from il2pkpd._io import atomic_write_text  # noqa: E402
from il2pkpd.solve import Doses, make_population_fn, param_matrix, solve_population  # noqa: E402
from il2pkpd.solve.il2 import IL2_ATOL, il2_system  # noqa: E402

HERE = Path(__file__).resolve().parent
T_OUT = np.arange(0.0, 672.0001, 12.0)
DOSE_T = 24.0 * np.arange(5)
DOSE_AMT = np.full(5, 1e6)
FLOOR = np.array([1e-3, 0.0, 0.0])


def population(system, n, seed=2026, omega=0.3):
    """Log-normal (logit-normal for F1, IMAX) variability around the model defaults."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in system.param_names:
        v = system.defaults[k]
        z = omega * rng.standard_normal(n)
        if k in ("F1", "IMAX"):
            out[k] = 1.0 / (1.0 + np.exp(-(np.log(v / (1 - v)) + z)))
        else:
            out[k] = v * np.exp(z)
    return out


def scipy_reference(p, rtol=1e-10):
    """Independent numpy/scipy implementation of DOMAIN.md section 5 for this regimen."""
    def f(t, y):
        a, c, q, t1, t2, t3, tr, n1, n2, n3, nk = y
        conc = c / p["V1"] / 1000.0
        sink = p["VMAX"] * tr / p["TREG0"] * conc / (p["KM"] + conc)
        ch = max(conc, 0.0) ** p["HILL"]
        st = p["EMAX_T"] * ch / (p["EC50_T"] ** p["HILL"] + ch)
        sn = p["EMAX_N"] * conc / (p["EC50_N"] + conc)
        kt, kn = 3.0 / p["MTT_T"], 3.0 / p["MTT_N"]
        return [-p["KA"] * a,
                p["KA"] * a - (p["CL"] + p["Q"]) / p["V1"] * c + p["Q"] / p["V2"] * q - sink,
                p["Q"] / p["V1"] * c - p["Q"] / p["V2"] * q,
                kt * (st - t1), kt * (t1 - t2), kt * (t2 - t3),
                p["KOUT_T"] * (p["TREG0"] * (1.0 + t3) - tr),
                kn * (sn - n1), kn * (n1 - n2), kn * (n2 - n3),
                p["KOUT_N"] * (p["NK0"] * (1.0 + n3) - nk)]

    y = np.zeros(11)
    y[6], y[10] = p["TREG0"], p["NK0"]
    bounds = [0.0] + list(DOSE_T + p["TLAG1"]) + [T_OUT[-1]]
    res = np.zeros((11, T_OUT.size))
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        sel = ((T_OUT >= lo) if k == 0 else (T_OUT > lo)) & (T_OUT <= hi)
        sol = solve_ivp(f, (lo, hi), y, method="Radau", rtol=rtol, atol=1e-14,
                        dense_output=True)
        if sel.any():
            res[:, sel] = sol.sol(T_OUT[sel])
        y = sol.y[:, -1].copy()
        if k < len(DOSE_T):
            y[0] += p["F1"] * DOSE_AMT[k]
    conc = res[1] / p["V1"] / 1000.0
    blood = 1.0 - p["IMAX"] * conc / (p["IC50"] + conc)
    return np.stack([conc, res[6] * blood, res[10] * blood])


def rel_errors(out, ref):
    """Max relative error per output over patients and times (see module docstring)."""
    err = np.abs(out - ref) / np.maximum(np.abs(ref), FLOOR[None, :, None])
    return err.max(axis=(0, 2))


def diffrax_population_fn(system, rtol=1e-6, atol=1e-8, max_steps=16384):
    """Plain vmapped diffrax Tsit5, solved piecewise between the (lagged) SC doses."""
    names = system.param_names

    def field(t, y, args):
        return jnp.stack(system.rhs_t(tuple(y[i] for i in range(11)), args))

    term = diffrax.ODETerm(field)
    t_out = jnp.asarray(T_OUT)

    def one(pv):
        p = {k: pv[i] for i, k in enumerate(names)}
        y = jnp.stack(system.initial_t(p))
        bounds = [jnp.asarray(0.0)] + [DOSE_T[k] + p["TLAG1"] for k in range(5)] + [
            jnp.asarray(T_OUT[-1])]
        out = jnp.zeros((T_OUT.size, 3))
        steps = 0
        for k in range(6):
            lo, hi = bounds[k], bounds[k + 1]
            ts = jnp.clip(t_out, lo, hi)
            sol = diffrax.diffeqsolve(
                term, diffrax.Tsit5(), lo, hi, dt0=0.01, y0=y, args=p,
                saveat=diffrax.SaveAt(ts=ts, t1=True),
                stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                max_steps=max_steps, throw=False)
            ys = sol.ys[:-1]
            vals = jax.vmap(lambda yy: jnp.stack(system.outputs_t(
                tuple(yy[i] for i in range(11)), p)))(ys)
            sel = ((t_out >= lo) if k == 0 else (t_out > lo)) & (t_out <= hi)
            out = jnp.where(sel[:, None], vals, out)
            y = sol.ys[-1]
            if k < 5:
                y = y.at[0].add(p["F1"] * DOSE_AMT[k])
            steps = steps + sol.stats["num_accepted_steps"] + sol.stats["num_rejected_steps"]
        return out.T, steps

    return jax.jit(jax.vmap(one))


def timed(fn, repeats, cpu=None):
    """Run ``fn`` (already compiled) ``repeats`` times; return all wall times (s).

    ``cpu``, a list, receives the process (CPU) times of the same runs.
    """
    times = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16384, help="virtual patients (il2pkpd.solve)")
    ap.add_argument("--n-baseline", type=int, default=128, help="patients for diffrax")
    ap.add_argument("--n-ref", type=int, default=48, help="patients with a scipy reference")
    ap.add_argument("--chunk", type=int, default=16384, help="patients per compiled call")
    ap.add_argument("--lanes", type=int, default=1024, help="patients advanced together")
    ap.add_argument("--rtol", type=float, nargs="+", default=[3e-5, 2e-5])
    ap.add_argument("--atol-amounts", type=float, default=1e-4,
                    help="absolute tolerance of the three IL-2 amounts (IU; model default "
                         "1e-3): IL-2 troughs near the 1e-3 IU/mL floor set the max error")
    ap.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                    choices=["float32", "float64"], help="precision of the il2pkpd solves")
    ap.add_argument("--grad-rtol", type=float, default=1e-5, help="rtol of the gradient check")
    ap.add_argument("--devices", type=int, default=1,
                    help="JAX CPU devices (chunks are solved concurrently, one per device)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = ap.parse_args()
    if args.devices > 1:   # before any array exists
        jax.config.update("jax_num_cpu_devices", args.devices)
    if args.quick:
        args.n, args.n_baseline, args.n_ref, args.chunk, args.repeats = 512, 16, 3, 512, 1
        args.lanes = 256

    system = il2_system()
    pars = population(system, args.n)
    doses = Doses(DOSE_T, DOSE_AMT, np.ones(5, int))
    result = {"regimen": "1 MIU SC daily x5, 28 days, outputs every 12 h (57 x 3)",
              "variability": "log-normal omega 0.3 (logit-normal 0.3 for F1, IMAX)",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_avg_start": os.getloadavg(), "jax": jax.__version__,
                          "diffrax": diffrax.__version__},
              "error_metric": "max |x-ref|/max(|ref|, floor); floor 1e-3 IU/mL for IL-2",
              }

    t0 = time.perf_counter()
    refs = np.stack([scipy_reference({k: v[i] for k, v in pars.items()})
                     for i in range(args.n_ref)])
    result["reference"] = {"method": "scipy solve_ivp Radau rtol 1e-10 atol 1e-14",
                           "n": args.n_ref, "seconds": time.perf_counter() - t0}
    print(f"scipy reference: {args.n_ref} patients in {result['reference']['seconds']:.1f} s")

    # il2pkpd.solve ---------------------------------------------------------------------------
    atol = (args.atol_amounts,) * 3 + tuple(IL2_ATOL[3:])
    result["atol"] = list(atol)
    result["il2pkpd_solve"] = []
    for dtype, rtol in ((d, r) for d in args.dtype for r in args.rtol):
        def run(rtol=rtol, dtype=dtype):
            return solve_population(system, pars, doses, T_OUT, rtol=rtol, dtype=dtype,
                                    atol=atol, chunk_size=args.chunk, lanes=args.lanes).outputs
        t0 = time.perf_counter()
        sol = solve_population(system, pars, doses, T_OUT, rtol=rtol, chunk_size=args.chunk,
                               lanes=args.lanes, dtype=dtype, atol=atol)
        jax.block_until_ready(sol.outputs)
        first = time.perf_counter() - t0
        cpu = []
        times = timed(run, args.repeats, cpu)
        err = rel_errors(np.asarray(sol.outputs[: args.n_ref], dtype=float), refs)
        row = {"dtype": dtype, "rtol": rtol, "n": args.n, "chunk": args.chunk, "lanes": args.lanes,
               "seconds": times, "first_call_seconds_incl_compile": first,
               "patients_per_s_best": args.n / min(times),
               "patients_per_s_median": args.n / float(np.median(times)),
               "cpu_seconds": cpu, "patients_per_cpu_s_best": args.n / min(cpu),
               "devices": len(jax.devices()),
               "steps_mean": float(np.mean(sol.n_steps)), "steps_max": int(np.max(sol.n_steps)),
               "rejected_mean": float(np.mean(sol.n_rejected)),
               "status_nonzero": int(np.sum(np.asarray(sol.status) != 0)),
               "max_rel_err": dict(zip(system.output_names, err.tolist(), strict=True))}
        result["il2pkpd_solve"].append(row)
        print(f"il2pkpd.solve {dtype} rtol {rtol:g}: {row['patients_per_s_median']:.0f} patients/s "
              f"(best {row['patients_per_s_best']:.0f}; {row['patients_per_cpu_s_best']:.0f} "
              f"per CPU-second, {row['devices']} device(s)), steps mean {row['steps_mean']:.0f} "
              f"max {row['steps_max']}, rejected {row['rejected_mean']:.0f}, "
              f"max rel err {err}")

    # diffrax baseline ------------------------------------------------------------------------
    nb = args.n_baseline
    pm_b = param_matrix(system, {k: v[:nb] for k, v in pars.items()})
    fb = diffrax_population_fn(il2_system(structured=False))   # the model file's own rhs
    t0 = time.perf_counter()
    out_b, steps_b = jax.block_until_ready(fb(pm_b))
    first = time.perf_counter() - t0
    cpu_b = []
    times = timed(lambda: fb(pm_b), args.repeats, cpu_b)
    err_b = rel_errors(np.asarray(out_b[: args.n_ref]), refs[: min(nb, args.n_ref)])
    base = {"solver": "diffrax Tsit5, PIDController rtol 1e-6 atol 1e-8, vmapped, piecewise",
            "n": nb, "seconds": times, "first_call_seconds_incl_compile": first,
            "patients_per_s_best": nb / min(times),
            "patients_per_s_median": nb / float(np.median(times)),
            "patients_per_cpu_s_best": nb / min(cpu_b),
            "steps_mean": float(np.mean(steps_b)), "steps_max": int(np.max(steps_b)),
            "max_rel_err": dict(zip(system.output_names, err_b.tolist(), strict=True))}
    result["diffrax_baseline"] = base
    print(f"diffrax Tsit5 baseline: {base['patients_per_s_median']:.0f} patients/s "
          f"(best {base['patients_per_s_best']:.0f}; {base['patients_per_cpu_s_best']:.0f} per "
          f"CPU-second), steps mean {base['steps_mean']:.0f}, "
          f"max rel err {err_b}")
    for row in result["il2pkpd_solve"]:
        row["speedup_vs_diffrax_median"] = (row["patients_per_s_median"]
                                            / base["patients_per_s_median"])
        row["speedup_vs_diffrax_per_cpu_s"] = (row["patients_per_cpu_s_best"]
                                               / base["patients_per_cpu_s_best"])
        print(f"  speed-up {row['dtype']} rtol {row['rtol']:g}: {row['speedup_vs_diffrax_median']:.0f}x "
              f"(per CPU-second {row['speedup_vs_diffrax_per_cpu_s']:.0f}x)")

    # gradient cost ---------------------------------------------------------------------------
    ng = 48
    rtol_g = args.grad_rtol
    pm_g = param_matrix(system, {k: v[:ng] for k, v in pars.items()})
    f = make_population_fn(system, doses, T_OUT, rtol=rtol_g)
    primal = jax.jit(lambda pm: f(pm).outputs.sum())
    grad = jax.jit(jax.vmap(jax.jacfwd(lambda p: f(p[None]).outputs.sum())))
    jax.block_until_ready(primal(pm_g))
    t0 = time.perf_counter()
    g = jax.block_until_ready(grad(pm_g))
    first = time.perf_counter() - t0
    cp, cg = [], []
    tp = timed(lambda: primal(pm_g), args.repeats, cp)
    tg = timed(lambda: grad(pm_g), args.repeats, cg)
    # one gradient entry against a central finite difference of a tight-tolerance solve
    i, j, eps = 0, system.param_names.index("CL"), 1e-5
    f_tight = make_population_fn(system, doses, T_OUT, rtol=1e-11, atol=1e-12, max_steps=200000)
    dp = jnp.zeros_like(pm_g[:1]).at[0, j].set(eps * pm_g[i, j])
    fd = ((f_tight(pm_g[:1] + dp).outputs.sum() - f_tight(pm_g[:1] - dp).outputs.sum())
          / (2 * dp[0, j]))
    result["gradient"] = {
        "what": "d(sum of all outputs)/d(all 22 parameters) for 48 subjects, forward mode "
                "(vmap of jacfwd per subject)", "rtol": rtol_g, "n_subjects": ng,
        "primal_seconds_median": float(np.median(tp)),
        "gradient_seconds_median": float(np.median(tg)),
        "primal_cpu_seconds_best": min(cp), "gradient_cpu_seconds_best": min(cg),
        "gradient_first_call_incl_compile": first,
        "ratio_gradient_to_primal": float(np.median(tg) / np.median(tp)),
        "fd_check_rel_diff_CL": float(abs(g[i, j] - fd) / abs(fd)),
        "fd_check": "forward-mode derivative at this rtol vs central difference at rtol 1e-11, "
                    "atol 1e-12"}
    print(f"gradient (48 subjects x 22 parameters, forward mode): "
          f"{1e3 * np.median(tg):.0f} ms vs solve {1e3 * np.median(tp):.0f} ms "
          f"({result['gradient']['ratio_gradient_to_primal']:.1f}x; CPU {1e3 * min(cg):.0f} ms "
          f"vs {1e3 * min(cp):.0f} ms); "
          f"FD check rel diff {result['gradient']['fd_check_rel_diff_CL']:.1e}")

    result["machine"]["load_avg_end"] = os.getloadavg()
    out = HERE / "results" / "bench_il2_solver.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
