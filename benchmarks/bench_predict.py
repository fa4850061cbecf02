"""Predictions and gradients per second: two_cmt_iv on the public single-dose benchmark data.

Data: iv_2cmt_single_dose.csv from the PumasAI-Labs Bayesian-Benchmarks repository (120
subjects, 1,800 observations; see ../shared/benchmarks/README.md), with each subject's true
parameters. Compares the closed form against the ODE path (diffrax Tsit5) of the same model,
measured in the same run, and prints the ratio. Writes benchmarks/results/bench_predict.json.

    .venv/bin/python benchmarks/bench_predict.py [--data-dir ../shared/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import il2pkpd

il2pkpd.enable_x64()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from il2pkpd.engine import build_events, make_predict_fn  # noqa: E402
from il2pkpd.models import load_model  # noqa: E402

HERE = Path(__file__).resolve().parent


def _read(data_dir: Path):
    path = data_dir / "iv_2cmt_single_dose.csv"
    try:
        from il2pkpd.data import read_dataset
        ds = read_dataset(path)
    except ImportError:
        ds = pd.read_csv(path, na_values=["."])
    truth = pd.read_csv(data_dir / "iv_2cmt_single_dose_true_params.csv")
    truth = truth.rename(columns={"VC": "V1", "VP": "V2"})
    return ds, truth


def _timeit(fn, *args, min_time: float = 2.0, min_reps: int = 5) -> tuple[float, int]:
    """Median seconds per call over repetitions (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        if len(times) > 100000:
            break
    return float(np.median(times)), len(times)


def run(data_dir: Path, ode_solver: str, rtol: float, atol: float) -> dict:
    model = load_model("two_cmt_iv")
    ds, truth = _read(data_dir)
    ev = build_events(ds, model)
    ids = np.asarray(ev.ids)
    truth = truth.set_index("ID").loc[ids]
    x0 = jnp.asarray(np.log(truth[["CL", "V1", "Q", "V2"]].to_numpy()))
    dv = jnp.asarray(ev.dv)
    used = jnp.asarray(ev.obs_used)
    results = {"data": str(data_dir / "iv_2cmt_single_dose.csv"), "n_subjects": len(ids),
               "n_obs": int(ev.n_obs), "jax": jax.__version__, "machine": platform.machine(),
               "cpu_count": __import__("os").cpu_count(), "methods": {}}
    preds = {}
    for label, kwargs in (("closed_form", {"method": "closed_form"}),
                          (f"ode_{ode_solver}", {"method": "ode", "solver": ode_solver,
                                                 "rtol": rtol, "atol": atol})):
        f = make_predict_fn(model, ev, **kwargs)

        def params(x):
            return {"CL": jnp.exp(x[:, 0]), "V1": jnp.exp(x[:, 1]), "Q": jnp.exp(x[:, 2]),
                    "V2": jnp.exp(x[:, 3])}

        pred_fn = jax.jit(lambda x, f=f: f(params(x)))

        def loss(x, f=f):
            pred, ok = f(params(x))
            r = jnp.where(used, jnp.log(jnp.where(used, pred, 1.0)) - jnp.log(
                jnp.where(used, dv, 1.0)), 0.0)
            return jnp.sum(r ** 2) + jnp.sum(jnp.where(ok, 0.0, jnp.inf))

        grad_fn = jax.jit(jax.value_and_grad(loss))
        t0 = time.perf_counter()
        jax.block_until_ready(pred_fn(x0))
        compile_pred = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(grad_fn(x0))
        compile_grad = time.perf_counter() - t0
        t_pred, n_pred = _timeit(pred_fn, x0)
        t_grad, n_grad = _timeit(grad_fn, x0)
        preds[label] = np.asarray(pred_fn(x0)[0])
        results["methods"][label] = {
            "compile_predict_s": compile_pred, "compile_gradient_s": compile_grad,
            "predict_s": t_pred, "gradient_s": t_grad,
            "predictions_per_s": 1.0 / t_pred, "gradients_per_s": 1.0 / t_grad,
            "subject_predictions_per_s": len(ids) / t_pred, "reps": [n_pred, n_grad],
        }
        print(f"{label:>14}: predict {t_pred * 1e3:9.3f} ms ({1 / t_pred:10.1f}/s), gradient "
              f"{t_grad * 1e3:9.3f} ms ({1 / t_grad:10.1f}/s); compile {compile_pred:.1f} s + "
              f"{compile_grad:.1f} s")
    a, b = preds["closed_form"], preds[f"ode_{ode_solver}"]
    mask = np.asarray(ev.obs_mask)
    rel = float(np.max(np.abs(a - b)[mask] / np.abs(a)[mask]))
    cf, od = results["methods"]["closed_form"], results["methods"][f"ode_{ode_solver}"]
    results["ode_vs_closed_max_rel_diff"] = rel
    results["speedup_closed_over_ode"] = {"predict": od["predict_s"] / cf["predict_s"],
                                          "gradient": od["gradient_s"] / cf["gradient_s"]}
    print(f"closed form is {results['speedup_closed_over_ode']['predict']:.0f}x faster to "
          f"predict and {results['speedup_closed_over_ode']['gradient']:.0f}x faster to "
          f"differentiate; max relative difference ODE vs closed form {rel:.2e}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "benchmarks")
    ap.add_argument("--solver", default="tsit5")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-9)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_predict.json")
    args = ap.parse_args()
    results = run(args.data_dir, args.solver, args.rtol, args.atol)
    from il2pkpd._io import atomic_write_text
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
