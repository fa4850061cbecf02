"""The Friberg benchmark's absorption/distribution swap diagnostic (benchmarks/bench_fit_friberg.py)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fit_friberg.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_fit_friberg", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)          # defines functions only; main() is not run
    return mod


def test_fast_rate_is_the_larger_eigenvalue_of_the_disposition_matrix(bench):
    rng = np.random.default_rng(0)
    cl, v1, q, v2 = (rng.uniform(0.5, 80.0, 50) for _ in range(4))
    got = bench._fast_rate(cl, v1, q, v2)
    for i in range(50):
        k10, k12, k21 = cl[i] / v1[i], q[i] / v1[i], q[i] / v2[i]
        rates = -np.linalg.eigvals(np.array([[-(k10 + k12), k21], [k12, -k21]]))
        assert got[i] == pytest.approx(rates.real.max(), rel=1e-10)


def test_swap_fractions_count_draws_with_ka_below_alpha(bench):
    # 2 chains x 4 draws x 3 subjects; alpha of CL 4, V1 50, Q 6, V2 40 is about 0.31 1/h
    # (distinct values: arguments passed in the wrong order would change it)
    alpha = bench._fast_rate(4.0, 50.0, 6.0, 40.0)
    assert 0.30 < alpha < 0.32
    assert abs(bench._fast_rate(4.0, 40.0, 6.0, 50.0) - alpha) > 0.01
    ka = np.array([[0.8, 0.8, 0.1, 0.8], [0.8, 0.8, 0.8, 0.8]])
    ind_ka = np.full((2, 4, 3), 0.8)
    ind_ka[0, 2, :] = 0.1            # the whole population swapped in chain 0, draw 2
    ind_ka[1, 0, 1] = 0.1            # one subject swapped in chain 1, draw 0
    dims, idims = ("chain", "draw"), ("chain", "draw", "subject")
    pk = {"CL": 4.0, "V1": 50.0, "Q": 6.0, "V2": 40.0}
    post = xr.Dataset({
        "KA": (dims, ka), "ind_KA": (idims, ind_ka),
        **{n: (dims, np.full((2, 4), v)) for n, v in pk.items()},
        **{f"ind_{n}": (idims, np.full((2, 4, 3), v)) for n, v in pk.items()},
    })
    sw = bench.swap_fractions(post)
    assert sw["population"] == [0.25, 0.0]
    assert sw["individual"] == pytest.approx([3 / 12, 1 / 12])
    assert sw["any_subject"] == [0.25, 0.25]
    assert sw["V1_q01"] == [50.0, 50.0]


def test_stage1_pace_counts_every_stage1_step_per_core(bench):
    info = {"chain_method": "parallel",
            "pooled_metric": {"stage1_seconds": 240.0, "stage1_steps_total": 160_000}}
    # 4 chains on 2 cores: each core ran 80,000 steps in 240 s
    assert bench.stage1_pace(info, chains=4, cpus=2) == pytest.approx(3.0e-3)
    # 2 chains on 16 cores: one core per chain
    assert bench.stage1_pace(info, chains=2, cpus=16) == pytest.approx(3.0e-3)
    assert bench.stage1_pace({**info, "chain_method": "sequential"}, chains=4,
                             cpus=2) == pytest.approx(1.5e-3)
    assert bench.stage1_pace({"chain_method": "parallel"}, chains=4, cpus=2) is None
