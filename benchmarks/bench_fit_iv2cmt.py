"""NUTS on the public two-compartment benchmark: il2pkpd (NumPyro) against Stan (PyStan).

Data: iv_2cmt_single_dose.csv of the PumasAI-Labs Bayesian-Benchmarks repository (120
subjects, 1,800 observations, IV infusion; see ../shared/benchmarks/README.md). Model: two_cmt_iv
with log-normal IIV on CL, V1, Q, V2 (full 4x4 block; mixed parametrization: CL, V1 and V2
centred, their individual log parameters ~ MVN(log TV, Omega_CC), Q non-centred given them;
the posterior's eta-shrinkage is printed: CL and V1 are pinned down by every subject's 15
samples, Q and V2 only partly), log-normal residual error,
the benchmark's Stan-style reference priors: log typical values ~ Normal(log(4, 70, 4, 50), 1),
IIV SDs ~ half-normal(0.4), correlations ~ LKJ(2), residual SD ~ half-normal(0.5).
Both run 4 chains x (500 warm-up + 1,000 draws) on all cores (NumPyro: chains in parallel on
one XLA CPU device per chain; Stan: PyStan's parallel chains), in the same run; the script prints
wall time, min bulk ESS over population parameters, ESS/s, max R-hat and divergences of each,
and the ratio. Stan gets the same model written by hand (closed-form two-compartment infusion
and bolus superposition), with a diagonal metric (PyStan offers only that).

    .venv/bin/python benchmarks/bench_fit_iv2cmt.py [--data-dir ../shared/benchmarks]
        [--chains 4] [--warmup 500] [--samples 1000] [--thin 1] [--no-stan] [--compile-cache]

Wall time and ESS/s of il2pkpd count everything (XLA compilation of the sampler, about 20-30 s
of the total here, and the post-processing); the XLA compile time is printed and written
separately. Stan's wall time is its sampling only (PyStan caches the compiled model). With
``--compile-cache`` the XLA programs are kept on disk between runs, as the CLI does
(``il2pkpd._config.enable_compilation_cache``; folder benchmarks/results/jax_cache unless
``IL2PKPD_CACHE_DIR`` is set): a second run then compiles almost nothing, which is the
like-for-like comparison with Stan's cached build.

Seeds 1-4 with the defaults (--no-stan --compile-cache, 22 s wall each): min bulk ESS
398-484, always omega_Q's, max R-hat 1.0071-1.0192 (above 1.01 for seed 2, omega_Q). None of
these raised omega_Q's ESS over the same seeds (min bulk ESS, runs above R-hat 1.01):
``--target-accept 0.9`` 251-410, two of four; ``--parametrization centred=CL,V1 --partial
Q=0.5,V2=0.5`` 206-584, two of four (V2's own ESS rose to 542-1,105); Q's random effects in
the dense block with the population parameters 334 (seed 1, 104 s); three Metropolis moves
per iteration on log omega_Q with the individual Q values held fixed (the centred-space half
of ancillarity-sufficiency interweaving, Yu & Meng 2011; a prototype, not kept) 293-531,
three of four. With
ESS near 400 the worst of 15 parameters crosses R-hat 1.01 in about one run of three.

Why omega_Q mixes slowly (seed 1's draws): its slow direction is the Q-V2 covariance
(omega_Q, corr_Q_V2, V2 and omega_V2 have the lowest ESS; the conditional SD of Q given the
others has ESS 773 against omega_Q's 411, but the Q-V2 element of the covariance's Cholesky
factor 403), fed by subjects whose data leave a ridge in (Q_i, V2_i): subjects 45 and 47 peak
after the end of their 1-h infusion, their draws of eta_Q spread wider than the prior
(posterior SD 0.52-0.66 against omega_Q 0.36, Q-V2 correlation -0.65 to -0.82) and mix as
slowly as omega_Q (per-subject ESS 250-320). It is not a warm-up transient (R-hat of the
second half of seed 2's draws: 1.022). Per-subject partial centring (each subject its own
weight w_i = 1 - v_i / s^2, v_i the variance of its eta given its earlier block members and s^2
the prior's; the normal-normal optimum, Papaspiliopoulos, Roberts & Skold 2003, Gorinova et
al. 2020), prototypes not kept, with CL and V1 centred and Q and V2 partially centred:
weights from a finished fit's draws (an oracle) gave over seeds 1-8 min ESS 390-672 (mean 495;
defaults 299-484, mean 410) and R-hat <= 1.0084 in all eight (defaults: three of eight above
1.01), V2's and omega_V2's ESS 2-3x; weights from FOCE-I's per-subject Gauss-Newton
curvature (a Gaussian approximation: the ridge subjects get 0.2, where the oracle gives them
0 because their draws spread wider than the prior), seeds 1-6: 236-590, one of six above
R-hat 1.01; weights from the first half of warm-up, carried over mid-warm-up, seeds 1-4:
227-457, three of four above R-hat 1.01 (with the pooled metric, seeds 1-6: 337-544, two of
six). Sampling omega on a softplus scale instead of log: 338-432. None is a reliable gain over
the defaults. Per-parameter weights from the run itself (``--pooled-metric yes
--adaptive-centring``: after the first half of warm-up every IIV parameter partially centred
with ``(1 - s)^2`` from its eta-shrinkage, CL 0.89-0.91, V1 0.87-0.88, Q 0.33-0.35, V2
0.41-0.44), seeds 1-4: min ESS 293-688, R-hat 1.0033-1.0131, two of four above 1.01; no gain
either (on Friberg, where every parameter's shrinkage is 16-74%, the same mechanism did help:
bench_fit_friberg.py).

What did make R-hat reliable: more iterations per kept draw. ``--thin k`` keeps the 1,000
draws per chain from 1,000 x k iterations after warm-up (the wall time has room: 22-36 s of
the 120 s goal). Seeds 1-8 each, one after another on the same day
(``--no-stan --compile-cache --thin k --seed s``; benchmarks/reference/
bench_fit_iv2cmt_thin_sweep.json):

    thin  runs above R-hat 1.01  max R-hat  min bulk ESS (omega_Q)  wall        ESS/s
    1     3 of 8                 1.0192     299-484                 22-36 s     11-22
    2     0 of 8                 1.0098     565-799                 26-43 s     13-29
    3     0 of 8                 1.0091     898-1,163               31-36 s *   15-33

(* 61 s for the first thin-3 run, which compiled its sampler anew.) ESS/s rises with k
because compilation and warm-up are paid once. Why ESS decides: for a stationary chain the
split R-hat of a parameter with bulk ESS n (4,000 draws in 8 half-chains) is about
1 + (4 X / n - 0.001), X a chi-square with 7 degrees of freedom over 7; above 1.01 with
probability about 0.36 at n = 400 (omega_Q's ESS unthinned), 0.01 at n = 1,000.

PyStan comes from the optional dependency group: ``pip install -e '.[stan]'``.
Writes benchmarks/results/bench_fit_iv2cmt.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "benchmarks")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dense-mass", default="auto")
    ap.add_argument("--parametrization", default="centred=CL,V1,V2",
                    help="IIV parametrization: centred, noncentred, or mixed as "
                         "centred=CL,V1,V2 (default: the others non-centred) or noncentred=Q. "
                         "Min bulk ESS over 4 seeds: 398-484 with this default, 346-441 with "
                         "centred=CL,V1, 138 fully centred, about 300 fully non-centred")
    ap.add_argument("--partial", default=None,
                    help="partially centred IIV parameters with their centring weights, e.g. "
                         "Q=0.5,V2=0.5 (added to --parametrization's list form)")
    ap.add_argument("--target-accept", type=float, default=0.8)
    ap.add_argument("--max-tree-depth", type=int, default=10)
    ap.add_argument("--thin", type=int, default=1,
                    help="NUTS iterations per kept draw after warm-up (--samples kept)")
    ap.add_argument("--init", default="median", help="median, map or laplace")
    ap.add_argument("--adapt-mass", choices=["auto", "yes", "no"], default="auto",
                    help="mass matrix adaptation in warm-up (auto: yes, but a full dense "
                         "Laplace metric is kept)")
    ap.add_argument("--laplace-max-dim", type=int, default=600,
                    help="--init laplace: largest latent dimension given a Laplace metric "
                         "(495 here; with --dense-mass auto or population its population "
                         "block and the random effects' variances start the adaptation, "
                         "with --dense-mass full the dense metric is kept)")
    ap.add_argument("--pooled-metric", choices=["yes", "no"], default="no",
                    help="cross-chain warm-up: after half the warm-up, the metric from all "
                         "chains' pooled draws replaces the per-chain one")
    ap.add_argument("--adaptive-centring", action="store_true",
                    help="with --pooled-metric yes: after stage 1, partially centre every IIV "
                         "parameter with weight (1 - s)^2 from its eta-shrinkage s in stage 1")
    ap.add_argument("--chain-method", default=None,
                    help="parallel, vectorized or sequential (default: the package's choice)")
    ap.add_argument("--no-stan", action="store_true")
    ap.add_argument("--compile-cache", action="store_true",
                    help="keep compiled XLA programs on disk between runs (as the CLI does)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_fit_iv2cmt.json")
    return ap.parse_args()


ARGS = _parse()
import numpyro  # noqa: E402

# before JAX starts: one CPU device per chain (one device for vectorized chains)
numpyro.set_host_device_count(1 if ARGS.chain_method == "vectorized" else ARGS.chains)

import il2pkpd  # noqa: E402

il2pkpd.enable_x64()
if ARGS.compile_cache:
    os.environ.setdefault("IL2PKPD_CACHE_DIR", str(HERE / "results" / "jax_cache"))
    from il2pkpd._config import enable_compilation_cache

    CACHE_DIR = enable_compilation_cache()
    if CACHE_DIR:  # every program, also the many small post-processing ones
        import jax

        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
else:
    CACHE_DIR = None

import jax  # noqa: E402
import numpy as np  # noqa: E402

from il2pkpd.inference import fit_population_model, prepare  # noqa: E402


def _parametrization():
    """--parametrization (a word or ``centred=CL,V1``) and --partial as the population table's
    ``parametrization`` value."""
    if not ARGS.partial:
        return ARGS.parametrization
    table = {}
    if "=" in ARGS.parametrization:
        key, _, names = ARGS.parametrization.partition("=")
        table[key] = [n.strip() for n in names.split(",") if n.strip()]
    table["partial"] = {k.strip(): float(v) for k, v in
                        (item.split("=") for item in ARGS.partial.split(","))}
    return table


PARAMETRIZATION = _parametrization()
POPULATION = {"covariance": "block", "omega_prior": {"dist": "halfnormal", "scale": 0.4},
              "lkj_concentration": 2.0, "parametrization": PARAMETRIZATION}
RESIDUAL = {"CP": {"model": "lognormal", "sigma_prior": {"dist": "halfnormal", "scale": 0.5}}}
POP_NAMES = ["CL", "V1", "Q", "V2", "omega_CL", "omega_V1", "omega_Q", "omega_V2",
             "corr_CL_V1", "corr_CL_Q", "corr_CL_V2", "corr_V1_Q", "corr_V1_V2", "corr_Q_V2",
             "sigma_CP"]

STAN_PROGRAM = """
data {
  int<lower=1> S;                       // subjects
  int<lower=1> N;                       // observations
  int<lower=1> ND;                      // doses
  array[N] int<lower=1, upper=S> subj;  // subject of each observation
  vector[N] t;                          // observation time (h)
  vector<lower=0>[N] dv;                // observed concentration (mg/L)
  array[N] int<lower=0, upper=1> blq;   // censored below lloq (M3)
  vector[N] lloq;
  array[ND] int<lower=1, upper=S> dsubj;
  vector[ND] dtime;                     // dose time (h)
  vector[ND] damt;                      // amount (mg)
  vector[ND] drate;                     // infusion rate (mg/h), 0 = bolus
}
parameters {
  real<lower=0> CL;
  real<lower=0> V1;
  real<lower=0> Q;
  real<lower=0> V2;
  vector<lower=0>[4] omega;
  cholesky_factor_corr[4] L;
  real<lower=0> sigma;
  matrix[4, S] z;
}
model {
  matrix[S, 4] eta = (diag_pre_multiply(omega, L) * z)';
  vector[S] cl = CL * exp(eta[, 1]);
  vector[S] v1 = V1 * exp(eta[, 2]);
  vector[S] q = Q * exp(eta[, 3]);
  vector[S] v2 = V2 * exp(eta[, 4]);
  vector[N] pred = rep_vector(0, N);
  for (d in 1:ND) {
    int s = dsubj[d];
    real k10 = cl[s] / v1[s];
    real k12 = q[s] / v1[s];
    real k21 = q[s] / v2[s];
    real sum_k = k10 + k12 + k21;
    real disc = sqrt(sum_k^2 - 4 * k10 * k21);
    real a = 0.5 * (sum_k + disc);
    real b = 0.5 * (sum_k - disc);
    real ca = (a - k21) / ((a - b) * v1[s]);
    real cb = (k21 - b) / ((a - b) * v1[s]);
    for (i in 1:N) {
      if (subj[i] == s && t[i] >= dtime[d]) {
        real tt = t[i] - dtime[d];
        if (drate[d] > 0) {
          real dur = damt[d] / drate[d];
          real tin = fmin(tt, dur);
          pred[i] += drate[d] * (ca / a * (1 - exp(-a * tin)) * exp(-a * (tt - tin))
                                 + cb / b * (1 - exp(-b * tin)) * exp(-b * (tt - tin)));
        } else {
          pred[i] += damt[d] * (ca * exp(-a * tt) + cb * exp(-b * tt));
        }
      }
    }
  }
  CL ~ lognormal(log(4), 1);
  V1 ~ lognormal(log(70), 1);
  Q ~ lognormal(log(4), 1);
  V2 ~ lognormal(log(50), 1);
  omega ~ normal(0, 0.4);
  L ~ lkj_corr_cholesky(2);
  sigma ~ normal(0, 0.5);
  to_vector(z) ~ std_normal();
  for (i in 1:N) {
    if (blq[i] == 1) target += lognormal_lcdf(lloq[i] | log(pred[i]), sigma);
    else target += lognormal_lpdf(dv[i] | log(pred[i]), sigma);
  }
}
generated quantities {
  corr_matrix[4] R = multiply_lower_tri_self_transpose(L);
}
"""


def diagnostics(draws: dict[str, np.ndarray]) -> dict:
    """min bulk ESS, max R-hat over population parameters; draws name -> (chain, draw)."""
    import arviz_stats as azs

    ess = {k: float(azs.ess(v, method="bulk")) for k, v in draws.items()}
    rhat = {k: float(azs.rhat(v)) for k, v in draws.items()}
    return {"min_ess_bulk": min(ess.values()), "max_r_hat": max(rhat.values()),
            "ess_bulk": ess, "r_hat": rhat,
            "means": {k: float(np.mean(v)) for k, v in draws.items()}}


_COMPILE: dict[str, float] = {"backend_compile_s": 0.0, "cache_retrieval_s": 0.0}


def _on_duration(event: str, seconds: float, **_kw) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILE["backend_compile_s"] += seconds
    elif event == "/jax/compilation_cache/cache_retrieval_time_sec":
        _COMPILE["cache_retrieval_s"] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def run_numpyro(data_dir: Path) -> dict:
    pm, model, data, _ = prepare("two_cmt_iv", data_dir / "iv_2cmt_single_dose.csv",
                                 population=POPULATION, residual=RESIDUAL)
    _COMPILE.update(backend_compile_s=0.0, cache_retrieval_s=0.0)
    t0 = time.perf_counter()
    c0 = time.process_time()
    lap = None
    if ARGS.init == "laplace":
        from il2pkpd.inference.samplers import laplace_start

        lap = laplace_start(pm, pm.observed, seed=ARGS.seed, max_dim=ARGS.laplace_max_dim)
    res = fit_population_model(pm, "nuts", chains=ARGS.chains, warmup=ARGS.warmup,
                               samples=ARGS.samples, seed=ARGS.seed, dense_mass=ARGS.dense_mass,
                               target_accept=ARGS.target_accept,
                               max_tree_depth=ARGS.max_tree_depth, init=ARGS.init,
                               laplace=lap, pooled_metric=ARGS.pooled_metric == "yes",
                               adaptive_centring=ARGS.adaptive_centring, thin=ARGS.thin,
                               adapt_mass_matrix=(None if ARGS.adapt_mass == "auto"
                                                  else ARGS.adapt_mass == "yes"),
                               chain_method=ARGS.chain_method,
                               progress_bar=False, posterior_predictive=False)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    post = res.datatree["posterior"]
    draws = {k: np.asarray(post[k].values) for k in POP_NAMES}
    out = diagnostics(draws)
    steps = np.asarray(res.datatree["sample_stats"]["n_steps"].values)
    out.update({"wall_s": wall, "cpu_s": cpu, "sampling_s": res.info["seconds"],
                "xla_compile_s": _COMPILE["backend_compile_s"],
                "compile_cache": CACHE_DIR, "cache_retrieval_s": _COMPILE["cache_retrieval_s"],
                "leapfrog_steps_kept_draws": int(steps.sum()),
                "mean_steps_per_draw": float(steps.mean()),
                "chain_method": res.info["chain_method"],
                "divergences": res.info["divergences"], "devices": jax.local_device_count(),
                "dense_mass": ARGS.dense_mass, "parametrization": PARAMETRIZATION,
                "sampled_parametrization": res.info.get("parametrization"),
                "centring_weights": (res.info.get("pooled_metric") or {}).get(
                    "centring_weights"),
                "target_accept": ARGS.target_accept, "max_tree_depth": ARGS.max_tree_depth,
                "thin": ARGS.thin, "init": ARGS.init, "map_s": res.info.get("map_seconds", 0.0),
                "pooled_metric": res.info.get("pooled_metric"),
                "metric": res.info.get("metric"), "laplace": res.info.get("laplace"),
                "adapt_mass": ARGS.adapt_mass, "step_size": res.info.get("step_size"),
                "eta_shrinkage": res.info.get("eta_shrinkage"),
                "suggested_parametrization": res.info.get("suggested_parametrization"),
                "seed": ARGS.seed,
                "n_subjects": pm.n_subjects,
                "n_obs": len(pm.obs.dv)})
    out["ess_per_s"] = out["min_ess_bulk"] / wall
    out["ess_per_s_without_compile"] = out["min_ess_bulk"] / (wall - out["xla_compile_s"])
    return out, pm


def run_stan(pm) -> dict:
    try:
        import stan
    except ImportError as err:
        return {"error": f"PyStan is not installed ({err}); pip install -e '.[stan]'"}
    import pandas as pd

    df = pd.read_csv(ARGS.data_dir / "iv_2cmt_single_dose.csv", na_values=["."])
    ids = list(pm.ids)
    doses = df[df["EVID"] == 1]
    obs = pm.obs
    data = {
        "S": len(ids), "N": len(obs.dv), "ND": len(doses),
        "subj": (obs.subject + 1).tolist(), "t": np.asarray(obs.time, float).tolist(),
        "dv": np.asarray(obs.dv, float).tolist(), "blq": obs.blq.astype(int).tolist(),
        "lloq": np.nan_to_num(obs.lloq, nan=0.0).tolist(),
        "dsubj": [ids.index(i) + 1 for i in doses["ID"]],
        "dtime": doses["TIME"].astype(float).tolist(),
        "damt": doses["AMT"].astype(float).tolist(),
        "drate": doses["RATE"].astype(float).tolist(),
    }
    seed = int(time.time()) % 100000  # PyStan caches fits by seed: a new one for honest timing
    t0 = time.perf_counter()
    posterior = stan.build(STAN_PROGRAM, data=data, random_seed=seed)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    fit = posterior.sample(num_chains=ARGS.chains, num_samples=ARGS.samples,
                           num_warmup=ARGS.warmup)
    sample_s = time.perf_counter() - t1
    n_c, n_d = ARGS.chains, ARGS.samples

    def chains(x):
        # PyStan 3 stacks the draws draw-major along the last axis (index draw * n_chains +
        # chain: stan.fit.Fit.__getitem__ reshapes its (param, draw, chain) array in C order),
        # so chain c is x[c::n_chains]. (A plain reshape(n_chains, n_draws) would mix the
        # chains within each row and inflate the ESS of Stan about tenfold.)
        return np.asarray(x).reshape(n_d, n_c).T

    names = ["CL", "V1", "Q", "V2"]
    draws = {k: chains(fit[k]) for k in names}
    om = fit["omega"]
    for j, k in enumerate(names):
        draws[f"omega_{k}"] = chains(om[j])
    R = fit["R"]
    for i in range(4):
        for j in range(i + 1, 4):
            draws[f"corr_{names[i]}_{names[j]}"] = chains(R[i, j])
    draws["sigma_CP"] = chains(fit["sigma"])
    out = diagnostics(draws)
    out.update({"wall_s": sample_s, "build_s": build_s,
                "divergences": int(np.sum(fit["divergent__"])), "seed": seed,
                "mean_steps_per_draw": float(np.mean(fit["n_leapfrog__"]))})
    out["ess_per_s"] = out["min_ess_bulk"] / sample_s
    return out


def main() -> int:
    results = {"benchmark": "iv_2cmt_single_dose, two_cmt_iv, 4x4 IIV, log-normal error",
               "chains": ARGS.chains, "warmup": ARGS.warmup, "samples": ARGS.samples,
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": sys.version.split()[0], "load_avg": os.getloadavg()},
               "reference": "NONMEM 7.5.1 NUTS: median 249 s per chain (README)"}
    npy, pm = run_numpyro(ARGS.data_dir)
    results["numpyro"] = npy
    print(f"il2pkpd/NumPyro: wall {npy['wall_s']:.1f} s (CPU {npy['cpu_s']:.0f} s, "
          f"{npy['chain_method']}), min bulk ESS "
          f"{npy['min_ess_bulk']:.0f}, ESS/s {npy['ess_per_s']:.2f}, max R-hat "
          f"{npy['max_r_hat']:.4f}, divergences {npy['divergences']}", flush=True)
    if npy.get("eta_shrinkage"):
        print("  eta-shrinkage: " + ", ".join(f"{k} {100 * v:.0f}%"
                                             for k, v in npy["eta_shrinkage"].items()))
    print(f"  sampling {npy['sampling_s']:.1f} s of the wall; XLA compile "
          f"{npy['xla_compile_s']:.1f} s (cache: {npy['compile_cache']}); "
          f"ESS/s without it {npy['ess_per_s_without_compile']:.2f}; leapfrog steps per draw "
          f"{npy['mean_steps_per_draw']:.1f}", flush=True)
    if not ARGS.no_stan:
        st = run_stan(pm)
        results["stan"] = st
        if "error" in st:
            print("Stan:", st["error"])
        else:
            print(f"Stan/PyStan:     wall {st['wall_s']:.1f} s (+{st['build_s']:.0f} s build), "
                  f"min bulk ESS {st['min_ess_bulk']:.0f}, ESS/s {st['ess_per_s']:.2f}, max "
                  f"R-hat {st['max_r_hat']:.4f}, divergences {st['divergences']}, leapfrog "
                  f"steps per draw {st['mean_steps_per_draw']:.1f}")
            results["ess_per_s_ratio_numpyro_over_stan"] = npy["ess_per_s"] / st["ess_per_s"]
            results["ess_per_s_ratio_without_compile"] = (npy["ess_per_s_without_compile"]
                                                          / st["ess_per_s"])
            print(f"ratio of ESS/s (NumPyro / Stan): "
                  f"{results['ess_per_s_ratio_numpyro_over_stan']:.2f} (NumPyro without its "
                  f"XLA compile time: {results['ess_per_s_ratio_without_compile']:.2f})")
    results["load_avg_end"] = os.getloadavg()
    ARGS.out.parent.mkdir(parents=True, exist_ok=True)
    ARGS.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {ARGS.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
