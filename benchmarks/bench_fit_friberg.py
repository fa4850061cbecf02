"""NUTS on the public Friberg PK/PD benchmark with the user ODE model models/friberg.{toml,py}.

Data: friberg_multiple_dose.csv of the PumasAI-Labs Bayesian-Benchmarks repository (12
subjects, 816 observations of drug concentration (CMT 2) and neutrophils (CMT 8); see
../shared/benchmarks/README.md). Model: two-compartment oral PK driving the Friberg-Karlsson
model, nine log-normal parameters with a full 9x9 IIV block, log-normal error on both outputs,
the benchmark's reference priors (in models/friberg.toml).

The goal (4 chains x (500 + 1,000) within 20 min, R-hat at most 1.01), best settings so far:
``--pooled-metric yes --adaptive-centring --centring-weights subject`` (see "Per-subject
centring weights" below): 693-782 s wall in seeds 1-3 (seed 4 about 730 s at that pace), max
R-hat 1.007 and 1.009 in seeds 1 and 3, 1.015 in seed 2 and 1.034 in seed 4 (chains' long
excursions into the absorption/distribution swap).
With ``--thin 2`` R-hat was 1.002-1.009 in seeds 1-4, but the time then depends on the slowest
chain's step size: about 1,010-1,400 s at the unthinned runs' pace (measured on slower days).
``--shared-step-size`` (every chain samples with the median of the adapted step sizes) took
seed 2's thinned run from about 1,400 s to about 1,050 s at that pace, R-hat 1.003 (see
"Shared step size" below). Both goals in seeds 1-4 with all of them (``--pooled-metric yes
--adaptive-centring --centring-weights subject --thin 2 --shared-step-size``): R-hat
1.002-1.006 and min bulk ESS 1,028-1,408 over five runs (seed 2 twice), 728-859 s measured on
a fast day (seeds 1, 4 and 2 again), about 920-1,050 s scaled to the normal pace (seeds 2 and
3 measured 1,678-1,791 s on slow days). ``--thin 2`` runs 2,000 iterations per chain
after warm-up and keeps 1,000: twice the goal's sampling work in the goal's time.

Defaults:

- the engine's batched Rodas4 path (``--ode-method rodas``): sparse unrolled LU from the
  Jacobian's structural pattern, gradients by a discrete adjoint (``--gradient adjoint``; about
  3-6 ms CPU per gradient of the log density here, against 48 ms for diffrax Tsit5 and 250 ms
  for the dense-LU forward-mode Rodas4 path measured before), relative tolerance 1e-3
  (``--rtol``: the model stays within 6e-4 of the file's noise-free values, about 0.3% of the
  residual SDs (0.18-0.21 on the log scale); the joint mode of the non-centred model moved by
  at most 3.6e-4 relative (KA) against rtol 1e-6, 0.2% of its posterior SD; 1e-4 costs about
  twice as much per gradient) and per-state absolute tolerances (1e-3 mg, 1e-6/nL); a
  subject whose solve needs more than ``--history`` (512) iterations fails and NUTS rejects
  the point (bounded cost at extreme warm-up points). 512 rather than the engine's 4,096: the
  log density's value and gradient (what NUTS evaluates) take 2.65 ms against 4.56 ms with
  4,096 stored iterations (identical values; the cost jumps between 512 and 1,024 for these
  12 subjects), and the 48,000 subject-draws of the full run below need at most 160
  iterations (median 147);
- chains in parallel, one JAX CPU device per chain (``--chain-method``);
- the centred IIV parametrization (``--parametrization``: 68 observations per subject pin the
  individual CL and CIRC0 within about 5%, where the non-centred one has curved ridges);
- ``--init laplace``: NUTS starts at the joint mode of the non-centred model mapped to the
  sampled parametrization (``run_nuts(init="laplace")``), with a dense inverse mass matrix
  from the Hessian of the centred model there (``--laplace-metric hessian``; 24 negative
  eigenvalues floored at ``--hessian-floor``), kept through warm-up unless
  ``--adapt-mass yes``; with prior medians and an identity metric the first warm-up
  iterations take 511-1023 leapfrog steps each. ``--laplace-metric mapped`` (the
  non-centred model's inverse Hessian carried to the centred coordinates by the Jacobian
  of the map) looked better in a 2 x (200 + 100) run (92 leapfrog steps per draw against
  123) but did worse in the full run: one chain adapted a step size of 0.006 (others
  0.04-0.07) and held the parallel chains up, 3,400 s, 114 divergences, min bulk ESS 152,
  R-hat 1.026. A mixed parametrization (Q and GAMMA non-centred) was slower with either
  metric in short runs (413 steps per draw with the Hessian one).

``--pooled-metric yes`` (cross-chain warm-up, ``run_nuts(pooled_metric=True)``): the Laplace
metric for the first 250 warm-up iterations, then the dense covariance of the four chains'
last 125 draws each, pooled with shrunk correlations. In 4 x (500 + 200) runs (seed 1, twice,
the same result; benchmarks/reference/bench_fit_friberg_pooled_short.json) three chains adapted
step sizes of 0.06-0.09 against 0.02-0.05 with the Laplace metric and took 63-72 leapfrog
steps per draw, and the PK parameters reached bulk ESS 381-519 from 800 draws (the Laplace
metric's full run: 57-86 from 4,000). The fourth chain, which went into the posterior's tail
of low V1 and KA (V1 down to 17 L, KA 0.25/h), adapted 0.019 and took 259 steps per draw, so
the run was no faster per iteration (0.29 s against 0.30 s: 816 s in all, about 29 min
extrapolated to the goal), and omega_Q (eta-shrinkage 73%) mixed badly in the centred
parametrization: ESS 41, R-hat 1.089. With Q non-centred the slow chain moved to omega_MTT
(ESS 24, R-hat 1.127, 838 s); with Q and MTT non-centred the short run had not finished
after 26 min and was stopped, and so was the fully non-centred one after 28 min. Not the
default for these reasons.

The full goal run with it (4 x (500 + 1,000), seed 1, ``--history 4096``, the same command
without --samples;
benchmarks/reference/bench_fit_friberg_pooled_full.json, the machine shared with tests for part
of it): 1,898 s wall (stage 1: 357 s), min bulk ESS 257 (omega_Q; every typical value 862-2,568),
max R-hat 1.013 (omega_Q alone above 1.01; the Laplace metric's full run: ESS 57, R-hat 1.053),
56 divergences (2, 27, 9 and 18 by chain). Chain 1 adapted a step size of 0.021 (others
0.074-0.091) and took 256 leapfrog steps per draw (others 62-65): it is the chain that went
furthest into the swap region below (typical values swapped in 2.0% of its draws, 0.1-0.6%
in the others; its 1% quantile of V1 26 L against 34-38 L), and the run waited for it. At the
other chains' 63 steps per draw the run would have taken about 17 min. The same run with
``--history 512`` (now the default; benchmarks/reference/bench_fit_friberg_pooled_h512.json)
gave the same draws (min ESS 257, R-hat 1.013, 56 divergences) in 1,218 s wall for NUTS,
its Laplace start included (70 s of it while tests ran beside it; 29 s on an idle machine):
2.7 ms per leapfrog step over the run against 4.3 ms. Again on an idle machine
(benchmarks/reference/bench_fit_friberg_pooled_h512_idle.json): the same draws in 1,103 s
(18.4 min, seed 1; the whole script, with the model check and gradient timing, 1,130 s).

One step size for all chains after warm-up (the median of the chains' adapted ones; a
prototype, not kept; ``--pooled-metric yes``, seed 1, history 512, warm-up and sampling run as
two NumPyro calls, so the warm-up's random numbers differed from the run above): the four
chains adapted 0.087-0.111 (shared 0.101) and the run took 701 s wall (11.7 min), 57 leapfrog
steps per draw, but the chains mixed worse: 234 divergences (66, 34, 14 and 120 by chain),
chain 2 went furthest into the absorption/distribution swap (typical values swapped in 7.5% of
its draws, its 1% quantile of V1 12 L), chain 1 spent more of its draws low in the centred
funnel of omega_Q (Q's eta-shrinkage over all draws 75%; chain 1's median omega_Q 0.094 against
0.150-0.168), min bulk ESS 102 (corr_V1_V2), max R-hat 1.042 (omega_Q);
benchmarks/reference/bench_fit_friberg_pooled_shared.json. One run, with a different warm-up,
so it does not separate the effect of sharing the step size from that of the warm-up; it
gives no reason to keep the option.

Partial centring of every IIV parameter (``--partial``, ``--pooled-metric yes``, seed 1;
benchmarks/reference/bench_fit_friberg_partial.json), the weights ``(1 - s)^2`` from the
eta-shrinkage s of the run above (in the normal-normal model the weight that makes the
sampled coordinate and the population parameters independent is ``1 - v/omega^2``, v the
posterior variance, and the SD-based shrinkage is ``1 - sqrt`` of it): CL 0.70, V1 0.48,
Q 0.07, V2 0.45, KA 0.44, MTT 0.44, CIRC0 0.70, GAMMA 0.46, ALPHA 0.47. The chains then mixed
well: min bulk ESS 774 (omega_KA), max R-hat 1.007, 5 divergences, no slow chain (step sizes
0.029-0.036, 127-140 leapfrog steps per draw; the swap in 0-1.2% of the typical values'
draws). But 1,715 s wall (28.6 min; the test suite ran beside it for its last 3-4 min): stage 1
(the Laplace start's Hessian metric, which for this parametrization has eigenvalues down to
-148, 7 floored) took 720 s at 577 leapfrog steps per iteration; at the rest of the run's 130
it would have been about 19 min. A better stage-1 metric for partially centred models is the
next step toward both goals in one run. (The Laplace start supports partial centring since
this run.) The same with ``--laplace-metric mapped`` (positive definite, 1 eigenvalue floored)
had not finished after 21 min and was stopped.

**Both goals in one run: stage 1 centred.** ``--stage1-parametrization centred`` runs the
first 250 warm-up iterations in the centred parametrization, from its own Laplace start and
Hessian metric (the stage 1 of the default run: 155 leapfrog steps per iteration), and carries
their draws and end points exactly to the partially centred coordinates
(``samplers.parametrization_map``), where the pooled covariance is formed and the rest of the
run samples. With the weights above (seed 1;
benchmarks/reference/bench_fit_friberg_partial_stage1_centred.json): **1,116 s** wall for NUTS
with its Laplace start and compile (18.6 min; the whole script 1,146 s; stage 1 246 s), max
R-hat **1.004**, min bulk ESS 910 (omega_MTT), 11 divergences, step sizes 0.035-0.039 and
127 leapfrog steps per draw in every chain.

``--adaptive-centring`` (``run_nuts(adaptive_centring=True)``) takes the weights from the run
itself: stage 1 in the model's own (here centred) parametrization, then each IIV parameter's
eta-shrinkage s in stage 1's pooled draws gives ``(1 - s)^2`` (``samplers.centring_weights``),
and stage 2 and sampling run in that partial centring. From 4 x 125 warm-up draws the weights
came out within 0.02 of those above (CL 0.71, V1 0.48, Q 0.07, V2 0.45, KA 0.43, MTT 0.44,
CIRC0 0.69, GAMMA 0.44, ALPHA 0.46). Seed 1 (the command ``--pooled-metric yes
--adaptive-centring``; benchmarks/reference/bench_fit_friberg_adaptive.json): 1,193 s wall
(19.9 min; stage 1 197 s), max R-hat 1.012 (omega_MTT alone above 1.01; per-chain medians
0.262-0.290), min bulk ESS 591 (omega_MTT; the next 966), 3 divergences; chain 4 adapted a
step size of 0.028 and took 146 leapfrog steps per draw (the others 0.037-0.040, 127), and
the run waited for it. Seed 2 (benchmarks/reference/bench_fit_friberg_adaptive_seed2.json):
max R-hat 1.007, min bulk ESS 827 (omega_MTT), 31 divergences, but 1,295 s (21.6 min) on a
slower machine: the gradient took 3.16 ms before NUTS against 2.48-2.50 ms in both seed-1 runs
and 2.57 ms per leapfrog step over the run against 2.20; stage 1 took 188 leapfrog steps per
iteration (seed 1: 155). At seed 1's pace that is about 1,110 s. Seed 3
(benchmarks/reference/bench_fit_friberg_adaptive_seed3.json): max R-hat 1.003, min bulk ESS
1,020 (omega_KA), 3 divergences, 127 leapfrog steps per draw in every chain, but 1,322 s
(22.0 min) on a machine slower still (gradient 3.87 ms before NUTS, 2.60 ms per leapfrog step
over the run; about 1,120 s at seed 1's pace). So of four runs with the centred stage 1 and
partial centring, R-hat was at most 1.01 in three (1.003-1.007; 1.012 in the fourth) and min
ESS 591-1,020; the wall time was 1,116-1,322 s, under 20 min in the two runs on the faster
machine (2.20-2.24 ms per leapfrog step). One run met both goals.

``--pool-discard 0.2`` (``samplers.POOL_DISCARD``; default 0.5) pools the last 200 of each
chain's 250 stage-1 draws instead of the last 125 (800 draws for the 164-dimensional
covariance instead of 500; shrinkage intensity 0.16 instead of 0.22-0.24). With
``--pooled-metric yes --adaptive-centring --pool-discard 0.2`` on 2026-11-30
(benchmarks/reference/bench_fit_friberg_adaptive_discard02*.json):

    seed  wall     ms per leapfrog step  min bulk ESS        max R-hat  divergences
    1     1,093 s  2.15                  1,070 (omega_KA)    1.004      3
    2     1,155 s  2.32                  752                 1.007      6
    3     1,252 s  2.48                  539 (omega_MTT)     1.007      12

Every chain still took about 127 leapfrog steps per draw (tree depth 7) at step sizes
0.034-0.047, as with 0.5, so the wall time follows the machine's speed per step (about 1,110 s
at 2.2 ms for seed 3). Seed 1 no longer had a slow chain (0.5: one chain at step size 0.028,
146 steps per draw, R-hat 1.012), but seed 3's ESS fell (1,020 with 0.5); no clear gain, so
the default stays. Over the seven full runs with a centred stage 1 and partial centring
(oracle weights once, adaptive six times), R-hat was at most 1.01 in six, and the wall time
was under 20 minutes in the four at 2.15-2.32 ms per leapfrog step (1,093-1,193 s) and over it
in the three at 2.48-2.60 ms (1,252-1,322 s). Both goals together: three runs (1,093, 1,116 and
1,155 s).

**Per-subject centring weights** (``--adaptive-centring --centring-weights subject``,
``run_nuts(adaptive_centring="subject")``). Why every draw took 127 leapfrog steps: at 16
draws of a 4 x (500 + 150) run with one weight per parameter, the Hessian of the potential in
the metric's whitened coordinates had one eigenvalue of 207-1,012 (the next 80-306), a
leapfrog stability limit 2 / sqrt(eigenvalue) of 0.06-0.14 for the adapted step sizes of
0.035-0.038. Its direction was subject 10's individual MTT (with GAMMA): the typical MTT,
subject 10's z_MTT and the L_omega entries that carry its other random effects into it.
Subject 10 has the deepest nadir (0.68/nL from 16.1, 4%; the others 12-49%), which pins its
MTT much more tightly than the others'. One weight per parameter (0.44 for MTT) leaves that
subject's coordinate a curved function of the population parameters, which no fixed metric
follows. With one weight per subject and parameter, from subject i's eta variance v_i in
stage 1, the chains adapted step sizes of 0.06-0.09 and every draw took 63 leapfrog steps
(tree depth 6) instead of 127.

The first estimate, ``1 - v_i / mean(omega^2)`` (MTT: 0.83 for subject 10, 0.04-0.05 for
subject 4, whose nadir is shallow), full runs 2026-11-30
(benchmarks/reference/bench_fit_friberg_subject_weights{,_seed2,_seed3}.json; ms per leapfrog
step as the script prints it, warm-up steps not counted):

    seed  wall   ms per step  min bulk ESS       max R-hat  divergences  min tail ESS
    1     661 s  2.65         838 (omega_MTT)    1.009      53           391 (omega_V1)
    2     768 s  3.10         906                1.005      39           422
    3     836 s  3.35         46 (omega_Q)       1.063      62           13

Seed 3 failed on omega_Q (eta-shrinkage 75%): ESS 46, R-hat 1.063, chain 2's median 0.17
against 0.13 in the others. Its Q weights (0-0.49, mean about 0.25) lie far above the
per-parameter 0.07. That estimate agrees with ``(1 - s)^2`` only when omega is known: here it
came out larger for every parameter (CL 0.91-0.92 against 0.70), so a funnel-prone parameter
got too centred.

The estimate in the code divides by the total variance of the eta draws over subjects and
draws, ``1 - v_i / (mean_i v_i + var_i E[eta_i])``, which does not use the draws of omega
(Q's weights 0-0.40, mean 0.13-0.15; CL 0.87-0.89). Full runs, 2026-12-01
(benchmarks/reference/bench_fit_friberg_subject_weights_total_var_seed{1,2,3}.json; seed 3's
draws are those of the probe that first tried it, which ran with the tests beside it):

    seed  wall   ms/step  min bulk ESS     min tail ESS  max R-hat  div.  swap (chains' draws)
    1     782 s  3.10     634 (omega_KA)   320 (omega_Q) 1.007      9     0.2-2.0%
    2     709 s  2.79     470 (V1)         140 (V1)      1.015      13    0.2-0.4%; chain 4 11.8%
    3     693 s  2.67     468 (KA)         182 (V1)      1.009      22    0.1-1.2%; chain 4 5.8%
    4     1,521 s 5.52*   100 (omega_V2)   36 (omega_V2) 1.034      29    0.4-0.8%; chains 1, 3 6.4, 7.2%

(*seed 4, ..._total_var_seed4.json, on a day twice as slow: stage-1 pace 5.52 ms per leapfrog
step per core against 2.58-2.95 ms in seeds 1-3; about 730 s at 2.65 ms. Its R-hat failed on
V1, Q, V2, KA (1.012-1.014), omega_Q (1.015) and omega_V2 (1.034): two chains spent 6-7% of
their draws in the swap, the other two under 1%.)

Time goal with 7-8 min to spare; R-hat in two of four, but the failure is no longer a
centring funnel: in seed 2, chain 4 spent 11.8% of its draws in the absorption/distribution
swap described below (its 1% quantile of V1 16 L against 36-38 L), and the four parameters
over 1.01 (V1, Q, V2, KA, max 1.015) are exactly those that move there. The swap is part of
the posterior under the reference priors, visited in long excursions; at 1,000 draws per chain
whether one chain's excursion inflates R-hat past 1.01 is luck of the seed. Fewer divergences
than with the first estimate (9-22 against 39-62).

With ``--thin 2`` (4 x 1,000 draws kept from 2,000 iterations each; 2026-12-01, all four on
days when the machine ran about twice as slowly;
benchmarks/reference/bench_fit_friberg_subject_weights_total_var_thin2_seed{1,2,3,4}.json). The
pace column is stage 1's seconds per leapfrog step per core (every stage-1 step is recorded,
compile included; the script prints it since 2026-12-01 as ``stage1_seconds_per_step_per_core``),
2.58-2.95 ms in the unthinned runs above; "at 2.65 ms" scales the wall to their median pace
(an extrapolation, not a measurement):

    seed  wall     pace     at 2.65 ms  min bulk ESS  max R-hat  div.  swap by chain
    1     2,073 s  5.43 ms  about 1,010 s  1,361      1.004      39    0.1-1.2%
    2     2,425 s  4.60 ms  about 1,400 s  1,520      1.004      33    0.3-2.5%
    3     2,253 s  5.73 ms  about 1,040 s  1,548      1.002      24    0.5-2.6%
    4     1,958 s  5.20 ms  about 1,000 s    506      1.009      46    0.2-5.9%

R-hat at most 1.01 in all four (seed 4, ..._thin2_seed4.json, only just: 1.009, ESS 506; two
chains 4-6% in the swap): no chain alone held the swap's excursions. The time goal is not
shown: about 1,000-1,050 s in seeds 1, 3 and 4, inside 20 min, but seed 2's chain 2 adapted a
step size of 0.041 (the others 0.061-0.083) and took 127 leapfrog steps per draw, and with
parallel chains the slowest sets the wall (about 1,400 s). Not the chains of the unthinned
runs with the same seed: the thinned loop is compiled differently and its rounding differs.
An earlier version of this note put the thinned runs at 780-880 s by dividing their wall by
the leapfrog steps of the kept draws only; those miss the stage-2 warm-up and the thinned-out
iterations (half of them), so that pace came out about twice as slow as it was and the scaled
walls about half as long.
With the first estimate, more divergent transitions (39-62, 1.0-1.6% of draws, against 3-12
with one weight per parameter): the larger step reaches further into the absorption/
distribution swap described below (typical values swapped in 0.1-2.8% of a chain's draws
against 0-0.6%).

Shared step size (``--shared-step-size``, ``run_nuts(shared_step_size=True)``): the chains
share the pooled metric, so after warm-up each samples with the median of the step sizes they
adapted to it. Same command with ``--thin 2 --shared-step-size``, 2026-12-01, again on a slow
day (benchmarks/reference/bench_fit_friberg_subject_weights_total_var_thin2_shared_seed*.json):

    seed  wall     pace     at 2.65 ms  min bulk ESS  max R-hat  div.  adapted -> shared
    2     1,791 s  4.51 ms  about 1,050 s  1,408      1.003      30    0.083, 0.041, 0.061, 0.078 -> 0.070
    3     1,678 s  4.31 ms  about 1,030 s  1,166      1.002      26    0.069, 0.069, 0.053, 0.058 -> 0.063
    1     728 s    1.99 ms  about 968 s    1,075      1.003      35    0.076, 0.064, 0.061, 0.072 -> 0.068
    4     745 s    2.14 ms  about 921 s    1,307      1.004      24    0.068, 0.052, 0.068, 0.056 -> 0.062
    2     859 s    2.33 ms  about 975 s    1,028      1.006      29    0.069, 0.074, 0.067, 0.070 -> 0.069
The last three on 2026-12-02, a fast day (seed 2 again: ``..._seed2_rerun.json``, on another
machine; its Laplace start took 1,017 L-BFGS iterations instead of 1,011, so its warm-up
differs from the first seed-2 run's; floating point differing between machines is the likely
cause, not checked). R-hat at most 1.01 in all four seeds; the wall under 20 minutes in the
three runs measured at or above the normal pace, and scaled to it for the two measured on slow
days (1,678 and 1,791 s measured); 63 leapfrog steps per draw in every chain of every run.
The warm-up is that of the unshared run (the adapted step sizes came out equal); every chain
then took 63 leapfrog steps per draw (unshared seed 2: 127 in chain 2). An earlier prototype
of one step size for all chains, on the centred model without adaptive centring, had mixed
worse (234 divergences, R-hat 1.042; see the benchmark table in the README). With per-subject
centring weights, seed 2's divergences stayed where they were (30 against 33) and the chains
still visited the absorption/distribution swap (typical values swapped in 0.2-1.7% of a
chain's draws, against 0.3-2.5% unshared): the larger step did not keep chain 2 out of it.
Two seeds are too few to rule out a cost in divergences or mixing on other data.

A smaller tree for the draws (``--max-tree-depth 10,6``: warm-up depth 10, sampling depth 6,
``run_nuts(max_tree_depth=(10, 6))``), since every draw stopped just past 63 steps: with
``--pooled-metric yes --adaptive-centring``, seed 1, 2026-11-30
(benchmarks/reference/bench_fit_friberg_depth6.json), 63 leapfrog steps per draw and 828 s
wall on a slower machine (2.98 ms per leapfrog step), but min bulk ESS 174 (omega_V1; the IIV
SDs 174-376), max R-hat 1.019, 5 divergences: 0.21 ESS/s against 0.43-0.98 in the seven runs
above. The IIV SDs need the whole U-turn trajectory; halving it more than halved their ESS.
Not kept.

Why the tail is there (``--swap-report FIT_DIR`` on the saved centred fit of the short run): it is
the absorption/distribution swap of oral two-compartment PK. In the tail all twelve subjects
move together to KA about 0.3/h, V1 about 20 L, Q about 7 L/h and V2 about 70 L (bulk: 0.8/h,
50 L, 4.3 L/h, 50 L), where KA falls below the fast disposition rate alpha (about 0.6/h there,
0.22/h in the bulk) and KA / V1 stays the same; the log-likelihood of the tail draws (-2,898 to
-2,918) is that of the bulk (median -2,904). Typical values with KA < alpha: 5.5% of the slow
chain's draws, 0-0.5% of the others'; single subjects swap in 1-6% of the subject-draws of every
chain. The reference priors (log-normal, SD 1 around KA 1/h and V1 70 L) do not rule it out, so
it belongs to the posterior; a chain that reaches it through the curved ridge adapts a small
step size and sets the wall time. Each run prints these fractions
(``absorption_distribution_swap`` in the JSON).

Cheaper gradients by taking the PK out of the ODE (as Torsten's coupled solvers do): an
experiment (not kept) solved only the five cell states plus time as a state, with the central
amount from the closed-form two-compartment oral solution summed over the seven doses. At the
true parameters and rtol 1e-3 it halved the Rodas4 steps (148 to 76 per subject, neutrophils
within 5e-5 of a 1e-9 reference, gradient within 1.3e-4 of the full ODE's), but the closed
form, evaluated in every stage and again in each forward-mode Jacobian column, made the solve
1.2x and the discrete-adjoint gradient 3.3x slower (1.35 and 6.81 ms against 1.14 and 2.04 ms
for the 12 subjects, quiet machine). A win would need the PK evaluated once per stage and
left out of the Jacobian columns (a linear solver for this structure).

``--ode-method ode`` runs the diffrax path instead (chains sequential: parallel chains fail
with diffrax in this stack, see ../shared/STACK.md).

The script first checks the model against the noise-free values in the data file's CP column
at the true individual parameters, times the log density and its gradient, then runs NUTS with
the requested settings and prints wall time, min bulk ESS over population parameters, ESS/s,
max R-hat, divergences, leapfrog steps per draw, and the wall time the goal settings (4 chains
x (500 + 1,000)) would take at the measured cost per iteration (and, before NUTS, at 31, 63
and 127 leapfrog steps per iteration from the measured gradient).

    .venv/bin/python benchmarks/bench_fit_friberg.py [--data-dir ../shared/benchmarks]
        [--chains 4] [--warmup 500] [--samples 1000] [--ode-method rodas|ode]
        [--rtol R] [--atol A[,A...]] [--gradient adjoint|forward] [--history N]
        [--init laplace|median|map] [--parametrization centred|noncentred|centred=P,...]
        [--partial P=w,...]
        [--adapt-mass no|yes] [--laplace-metric hessian|mapped]
        [--pooled-metric no|yes] [--stage1-parametrization centred|...]
        [--adaptive-centring] [--centring-weights parameter|subject]
        [--chain-method parallel|sequential|vectorized] [--max-tree-depth N|W,S]
        [--compile-cache] [--solver tsit5] [--checkpoints N] [--max-steps N]

Writes benchmarks/results/bench_fit_friberg.json.
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

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro.infer import init_to_median  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

from il2pkpd.inference import fit_population_model, prepare  # noqa: E402
from il2pkpd.inference.samplers import laplace_start, reparametrized  # noqa: E402

HERE = Path(__file__).resolve().parent
# stage-1 seconds per leapfrog step per core in the three unthinned per-subject-weight runs
# of 2026-12-01 (2.95, 2.58, 2.65 ms; reference/..._total_var_seed{1,2,3}.json): the median,
# to put walls measured on slower days on one scale
REFERENCE_PACE_S = 2.65e-3
NAMES = ["CL", "V1", "Q", "V2", "KA", "MTT", "CIRC0", "GAMMA", "ALPHA"]


def _parametrization(args):
    """--parametrization plus --partial as the population table's ``parametrization``."""
    if not args.partial:
        return args.parametrization
    table: dict = {"partial": {k.strip(): float(v) for k, v in
                               (item.split("=") for item in args.partial.split(","))}}
    word, _, names = args.parametrization.partition("=")
    if names:
        table[word] = [n.strip() for n in names.split(",") if n.strip()]
    else:  # the other IIV parameters all centred (an empty non-centred list) or all not
        table["noncentred" if word == "centred" else "centred"] = []
    return table


def stage1_pace(info: dict, chains: int, cpus: int) -> float | None:
    """Seconds per leapfrog step per core in stage 1 of the pooled warm-up (None without it).

    Stage 1 keeps every iteration's step count, so this pace compares runs whatever their
    thinning or their step counts after it. Parallel chains share min(chains, cpus) cores.
    """
    pool = info.get("pooled_metric") or {}
    if not pool.get("stage1_steps_total"):
        return None
    cores = min(chains, cpus) if info.get("chain_method") == "parallel" else 1
    return pool["stage1_seconds"] * cores / pool["stage1_steps_total"]


def _time(fn, *args, reps=5):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return compile_s, float(np.median(ts))


def _fast_rate(cl, v1, q, v2):
    """Fast (distribution) disposition rate constant alpha (1/h) of two-compartment PK."""
    k10, k12, k21 = cl / v1, q / v1, q / v2
    s = k10 + k12 + k21
    return 0.5 * (s + np.sqrt(s * s - 4.0 * k10 * k21))


def swap_fractions(posterior) -> dict:
    """Per chain, how often the posterior sits in the absorption/distribution swap.

    Oral two-compartment data fix the three exponents of C(t) (KA, alpha, beta) far better
    than which of the two faster ones is absorption: a point with KA below alpha and a
    smaller V1 (KA / V1 about the same) fits nearly as well. ``population``: fraction of
    draws whose typical values have KA < alpha; ``individual``: fraction of subject-draws
    whose individual parameters do; ``any_subject``: fraction of draws with at least one
    swapped subject. Also the 1% quantile of V1 per chain (L).
    """
    def arr(name):
        return np.asarray(posterior[name])

    out = {}
    alpha = _fast_rate(*(arr(n) for n in ("CL", "V1", "Q", "V2")))
    out["population"] = [float(v) for v in (arr("KA") < alpha).mean(axis=1)]
    if all(f"ind_{n}" in posterior for n in ("CL", "V1", "Q", "V2", "KA")):
        ialpha = _fast_rate(*(arr(f"ind_{n}") for n in ("CL", "V1", "Q", "V2")))
        swapped = arr("ind_KA") < ialpha                      # (chain, draw, subject)
        out["individual"] = [float(v) for v in swapped.mean(axis=(1, 2))]
        out["any_subject"] = [float(v) for v in swapped.any(axis=2).mean(axis=1)]
    out["V1_q01"] = [float(v) for v in np.quantile(arr("V1"), 0.01, axis=1)]
    return out


def _print_swap(sw: dict) -> None:
    print("absorption/distribution swap (KA < alpha), fraction of draws by chain: "
          f"typical values {', '.join(f'{v:.3f}' for v in sw['population'])}; "
          + (f"subject-draws {', '.join(f'{v:.3f}' for v in sw['individual'])}; "
             if "individual" in sw else "")
          + f"1% quantile of V1 {', '.join(f'{v:.0f}' for v in sw['V1_q01'])} L")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "benchmarks")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ode-method", choices=["rodas", "ode"], default="rodas")
    ap.add_argument("--gradient", choices=["adjoint", "forward"], default="adjoint",
                    help="rodas: discrete adjoint (default) or forward-mode Jacobian")
    ap.add_argument("--history", type=int, default=512,
                    help="rodas adjoint: most solver iterations per subject (default 512 here, "
                         "the engine's 4096 otherwise); a subject needing more fails and NUTS "
                         "rejects the point")
    ap.add_argument("--init", choices=["laplace", "median", "map"], default="laplace",
                    help="laplace (default): start NUTS at the joint mode of the non-centred "
                         "model mapped to the sampled parametrization, with a dense inverse "
                         "mass matrix from the Hessian there; median: prior medians, identity "
                         "metric; map: the sampled model's own joint mode")
    ap.add_argument("--partial", default=None,
                    help="partially centred IIV parameters with their centring weights, e.g. "
                         "Q=0.06,MTT=0.42 (the others as --parametrization)")
    ap.add_argument("--parametrization", default="centred",
                    help="IIV parametrization NUTS samples: centred (default: 68 observations "
                         "per subject determine CL and CIRC0 within about 5%%), noncentred")
    ap.add_argument("--adapt-mass", choices=["yes", "no"], default="no",
                    help="with --init laplace: keep adapting the mass matrix in warm-up (no: "
                         "the Laplace metric throughout; a 164-dimensional dense metric from "
                         "NumPyro's first 25-draw window is worse than it)")
    ap.add_argument("--laplace-metric", choices=["hessian", "mapped"], default="hessian",
                    help="--init laplace: inverse of the sampled model's Hessian at the start "
                         "(default) or the non-centred Laplace covariance carried over")
    ap.add_argument("--pooled-metric", choices=["yes", "no"], default="no",
                    help="cross-chain warm-up: after half the warm-up, a metric from all "
                         "chains' pooled draws (correlations shrunk) replaces the stage-1 "
                         "metric; the rest of warm-up adapts the step size")
    ap.add_argument("--stage1-parametrization", default=None,
                    help="with --pooled-metric yes: run the first half of warm-up in this IIV "
                         "parametrization (e.g. centred; the Laplace start is its own), its "
                         "draws carried exactly to the sampled one for the pooled metric")
    ap.add_argument("--adaptive-centring", action="store_true",
                    help="with --pooled-metric yes: after stage 1, partially centre every IIV "
                         "parameter with weight (1 - s)^2 from its eta-shrinkage s in stage 1")
    ap.add_argument("--centring-weights", choices=["parameter", "subject"], default="parameter",
                    help="with --adaptive-centring: one weight per IIV parameter, or one per "
                         "subject and parameter (1 - v_i / total eta variance)")
    ap.add_argument("--hessian-floor", type=float, default=1.0,
                    help="Laplace metric: variance 1/floor in directions of flat or negative "
                         "curvature")
    ap.add_argument("--compile-cache", action="store_true",
                    help="keep XLA programs on disk between runs (as the CLI does)")
    ap.add_argument("--target-accept", type=float, default=0.8)
    ap.add_argument("--thin", type=int, default=1,
                    help="NUTS iterations per kept draw after warm-up (--samples kept)")
    ap.add_argument("--shared-step-size", action="store_true",
                    help="with --pooled-metric yes: after warm-up all chains sample with the "
                         "median of the step sizes they adapted")
    ap.add_argument("--pool-discard", type=float, default=None,
                    help="share of stage 1's draws left out of the pooled metric "
                         "(samplers.POOL_DISCARD, 0.5)")
    ap.add_argument("--solver", default="tsit5", help="diffrax solver (--ode-method ode)")
    ap.add_argument("--rtol", type=float, default=None,
                    help="default 1e-3 (rodas) or 1e-5 (ode)")
    ap.add_argument("--atol", default=None,
                    help="one value or one per state, comma-separated (ode default: 1e-3 mg on "
                         "depot, central, peripheral and 1e-6/nL on the five cell states)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="ode: most steps per interval between events (engine default 4096); "
                         "a solve that needs more fails and NUTS rejects the point")
    ap.add_argument("--checkpoints", type=int, default=None,
                    help="ode: reverse-pass checkpoints per interval (default diffrax's)")
    ap.add_argument("--chain-method", default="parallel",
                    help="parallel (default: one JAX CPU device per chain) | sequential | "
                         "vectorized")
    ap.add_argument("--max-tree-depth", default="10",
                    help="N, or W,S: at most N (warm-up W, sampling S) tree doublings")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_fit_friberg.json")
    ap.add_argument("--save-fit", type=Path, default=None,
                    help="also write the fit (posterior.nc, summary.csv, ...) to this folder")
    ap.add_argument("--swap-report", type=Path, default=None, metavar="FIT_DIR",
                    help="only print the absorption/distribution swap fractions of a fit saved "
                         "with --save-fit (no sampling)")
    args = ap.parse_args()

    if args.swap_report is not None:
        import xarray as xr

        with xr.open_datatree(args.swap_report / "posterior.nc") as dt:
            sw = swap_fractions(dt["posterior"].to_dataset())
        _print_swap(sw)
        print(json.dumps(sw))
        return 0

    data = args.data_dir / "friberg_multiple_dose.csv"
    if args.pool_discard is not None:
        from il2pkpd.inference import samplers

        samplers.POOL_DISCARD = args.pool_discard
    if args.compile_cache:
        from il2pkpd._config import enable_compilation_cache

        enable_compilation_cache()
    if args.chain_method is not None and args.chain_method == "parallel":
        import numpyro

        numpyro.set_host_device_count(args.chains)
    atol = None
    if args.atol is not None:
        atol = [float(a) for a in args.atol.split(",")]
        atol = atol[0] if len(atol) == 1 else atol
    state_atol = [1e-3] * 3 + [1e-6] * 5
    if args.ode_method == "rodas":
        # same per-state absolute tolerances as the diffrax path (1e-3 mg, 1e-6/nL)
        solver = {"method": "rodas", "rtol": args.rtol or 1e-3, "atol": state_atol,
                  "gradient": args.gradient}
        if args.history is not None:
            solver["history"] = args.history
    else:
        # The drug amounts are thousands of mg and the cells about 5/nL: one absolute
        # tolerance per state (1e-3 mg, 1e-6/nL) with relative 1e-5 keeps the model within
        # 1e-5 of the file's noise-free values (tests/test_engine_ode_speed.py) at about 20%
        # fewer steps than rtol 1e-6, atol 1e-8 on every state (same accuracy there).
        solver = {"method": "ode", "solver": args.solver, "rtol": args.rtol or 1e-5,
                  "atol": state_atol}
        if args.checkpoints is not None:
            solver["checkpoints"] = args.checkpoints
        if args.max_steps is not None:
            solver["max_steps"] = args.max_steps
    if atol is not None:
        solver["atol"] = atol
    t_start = time.perf_counter()
    pm, model, dataset, events = prepare("friberg", data, solver_options=solver,
                                         population={"parametrization": _parametrization(args)})
    res: dict = {"benchmark": "friberg_multiple_dose, friberg user ODE, 9x9 IIV",
                 "solver": solver, "init": args.init, "n_subjects": pm.n_subjects, "n_obs": len(pm.obs.dv),
                 "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": sys.version.split()[0], "load_avg": os.getloadavg()},
                 "reference": "NONMEM 7.5.1 NUTS: median 6,118 s per chain (README)"}
    print(f"{pm.n_subjects} subjects, {len(pm.obs.dv)} observations", flush=True)

    # 1. the model against the noise-free values in the file (true individual parameters)
    truth = pd.read_csv(args.data_dir / "friberg_true_params.csv").rename(
        columns={"VC": "V1", "VP": "V2"}).set_index("ID").loc[pm.ids]
    params = {k: jax.numpy.asarray(truth[k].to_numpy()) for k in NAMES}
    pred, ok = jax.jit(pm.predict_fn)(params)
    raw = pd.read_csv(data, na_values=["."])
    ref = raw["CP"].to_numpy()[pm.obs.row]
    got = np.asarray(pred)[pm.obs.subject, pm.obs.column]
    rel = float(np.max(np.abs(got / ref - 1)))
    res["max_rel_error_vs_noise_free_CP"] = rel
    print(f"model vs the file's noise-free values: max relative error {rel:.2e}", flush=True)

    # 2. cost of the log density and its gradient
    info = initialize_model(jax.random.PRNGKey(0), pm, model_kwargs={"obs": pm.observed},
                            init_strategy=init_to_median(num_samples=15))
    x0, unravel = ravel_pytree(info.param_info.z)
    pot = jax.jit(lambda x: info.potential_fn(unravel(x)))
    grad = jax.jit(jax.grad(lambda x: info.potential_fn(unravel(x))))
    c1, t_ld = _time(pot, x0)
    c2, t_grad = _time(grad, x0)
    res.update({"latent_dim": int(x0.size), "log_density_s": t_ld, "gradient_s": t_grad,
                "compile_log_density_s": c1, "compile_gradient_s": c2})
    print(f"latent dimension {x0.size}; log density {1e3 * t_ld:.1f} ms, gradient "
          f"{1e3 * t_grad:.1f} ms (compile {c2:.0f} s)", flush=True)
    for depth in (5, 6, 7):
        proj = 4 * 1500 * (2 ** depth - 1) * t_grad
        print(f"  goal settings at {2 ** depth - 1} leapfrog steps per iteration (tree depth "
              f"{depth}), chains one after another: about {proj / 60:.0f} min", flush=True)

    # 3. NUTS (with --init laplace: start point and metric first)
    t0 = time.perf_counter()
    lap = None
    if args.init == "laplace":
        pm1 = (pm if args.stage1_parametrization is None
               else reparametrized(pm, args.stage1_parametrization, "--stage1-parametrization"))
        lap = laplace_start(pm1, pm.observed, seed=args.seed, hessian_floor=args.hessian_floor,
                            metric=args.laplace_metric)
        res["laplace"] = lap.info
        print(f"Laplace start: non-centred joint mode in {lap.info['map_seconds']:.0f} s "
              f"({lap.info['map_iterations']} L-BFGS iterations), Hessian "
              f"{lap.info['hessian_seconds']:.0f} s, eigenvalues "
              f"{lap.info.get('eigenvalue_min', float('nan')):.3g}.."
              f"{lap.info.get('eigenvalue_max', float('nan')):.3g} "
              f"({lap.info.get('eigenvalues_floored', 0)} floored at {args.hessian_floor})",
              flush=True)
    fr = fit_population_model(pm, "nuts", chains=args.chains, warmup=args.warmup,
                              samples=args.samples, seed=args.seed,
                              max_tree_depth=tuple(int(d) for d in
                                                   args.max_tree_depth.split(",")),
                              is_ode=True,
                              init=args.init, laplace=lap,
                              adapt_mass_matrix=args.adapt_mass == "yes",
                              pooled_metric=args.pooled_metric == "yes",
                              stage1_parametrization=args.stage1_parametrization,
                              adaptive_centring=(args.centring_weights
                                                 if args.adaptive_centring else False),
                              target_accept=args.target_accept, thin=args.thin,
                              shared_step_size=args.shared_step_size,
                              chain_method=args.chain_method,
                              progress_bar=False, posterior_predictive=False)
    wall = time.perf_counter() - t0            # start point, metric, compile and sampling
    total = time.perf_counter() - t_start      # plus the model checks and gradient timing
    s = fr.summary
    pop = s["parameter"].tolist()
    n_iter = args.chains * (args.warmup + args.samples * args.thin)
    goal_iter = 4 * (500 + 1000 * args.thin)
    res["nuts"] = {
        "chains": args.chains, "warmup": args.warmup, "samples": args.samples,
        "thin": args.thin, "chain_method": fr.info["chain_method"], "wall_s": wall,
        "script_wall_s": total,
        "sampling_s": fr.info.get("seconds"), "cpu_s": time.process_time(),
        "step_size": fr.info.get("step_size"), "metric": fr.info.get("metric"),
        "shared_step_size": args.shared_step_size,
        "step_size_adapted": fr.info.get("step_size_adapted"),
        "pooled_metric": fr.info.get("pooled_metric"),
        "parametrization": _parametrization(args),
        "sampled_parametrization": fr.info.get("parametrization"),
        "eta_shrinkage": fr.info.get("eta_shrinkage"),
        "suggested_parametrization": fr.info.get("suggested_parametrization"),
        "min_ess_bulk": float(s["ess_bulk"].min()), "max_r_hat": float(s["r_hat"].max()),
        "divergences": fr.info["divergences"], "ess_per_s": float(s["ess_bulk"].min()) / wall,
        "seconds_per_iteration": wall / n_iter,
        "goal_wall_s_extrapolated": wall / n_iter * goal_iter,
        "summary": s.to_dict(orient="records"), "parameters": pop,
        "warnings": fr.warnings,
    }
    stats = fr.datatree["sample_stats"].to_dataset()
    if "n_steps" in stats:
        steps = np.asarray(stats["n_steps"])
        res["nuts"]["leapfrog_steps_mean_per_chain"] = [float(v) for v in steps.mean(axis=1)]
        res["nuts"].update({"leapfrog_steps_mean": float(steps.mean()),
                            "leapfrog_steps_median": float(np.median(steps)),
                            "leapfrog_steps_max": int(steps.max()),
                            "seconds_per_gradient_in_nuts": wall / float(steps.sum())})
        print(f"leapfrog steps per draw: mean {steps.mean():.1f}, median "
              f"{np.median(steps):.0f}, max {steps.max()}; about "
              f"{1e3 * wall / steps.sum():.1f} ms per kept draw's step over the whole run "
              "(warm-up and thinned-out steps are not counted, so this overstates the pace, "
              "about --thin times over; compare runs by the stage-1 pace below)")
        per_chain = ", ".join(f"{v:.0f}"
                              for v in res["nuts"]["leapfrog_steps_mean_per_chain"])
        eps = fr.info.get("step_size") or []
        own = fr.info.get("step_size_adapted")
        print(f"step size per chain: {', '.join(f'{v:.3f}' for v in eps)}"
              + (f" (shared: the median of the adapted "
                 f"{', '.join(f'{v:.3f}' for v in own)})" if own else "")
              + f"; leapfrog steps per kept draw per chain: {per_chain}")
    # the machine's pace, comparable between runs whatever --thin: stage 1 of the pooled
    # warm-up records every leapfrog step (the draws' n_steps above miss the stage-2 warm-up
    # and the thinned-out iterations); and the gradient timed again after NUTS
    _, t_grad_after = _time(grad, x0)
    res["gradient_s_after"] = t_grad_after
    pace = stage1_pace(fr.info, args.chains, os.cpu_count() or 1)
    if pace is not None:
        res["nuts"]["stage1_seconds_per_step_per_core"] = pace
        res["nuts"]["wall_s_at_reference_pace"] = wall * REFERENCE_PACE_S / pace
        print(f"pace: stage 1 {1e3 * pace:.2f} ms per leapfrog step per core (compile "
              f"included; {1e3 * REFERENCE_PACE_S:.2f} on a normal day), gradient "
              f"{1e3 * t_grad:.1f} ms before NUTS and {1e3 * t_grad_after:.1f} ms after; "
              f"at the normal pace the wall would be about "
              f"{res['nuts']['wall_s_at_reference_pace']:.0f} s (extrapolated)")
    for msg in fr.warnings:
        print(f"warning: {msg}")
    sw = swap_fractions(fr.datatree["posterior"].to_dataset())
    res["nuts"]["absorption_distribution_swap"] = sw
    _print_swap(sw)
    n = res["nuts"]
    thin = f", thinned by {args.thin}" if args.thin > 1 else ""
    print(f"NUTS {args.chains} x ({args.warmup} + {args.samples}{thin}) ({n['chain_method']}): wall "
          f"{wall:.0f} s (whole script {total:.0f} s, CPU {time.process_time():.0f} s), min bulk ESS {n['min_ess_bulk']:.0f}, ESS/s {n['ess_per_s']:.3f}, max "
          f"R-hat {n['max_r_hat']:.3f}, divergences {n['divergences']}")
    print(f"at {n['seconds_per_iteration']:.2f} s per iteration the goal settings (4 x 1,500) "
          f"would take about {n['goal_wall_s_extrapolated'] / 60:.0f} min (goal 20 min; "
          "NONMEM about 6,100 s per chain)")
    if args.save_fit is not None:
        fr.save(args.save_fit)
    res["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
