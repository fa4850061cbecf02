import atexit
import gc
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from il2pkpd._config import enable_x64

enable_x64()

# The CLI turns on JAX's persistent compilation cache (~/.cache/il2pkpd/jax by default). Tests
# that call the CLI in this process, or run it in a subprocess, write into a throwaway folder
# instead of the user's cache, and never read entries an earlier run left behind.
if "IL2PKPD_CACHE_DIR" not in os.environ:
    os.environ["IL2PKPD_CACHE_DIR"] = tempfile.mkdtemp(prefix="il2pkpd-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["IL2PKPD_CACHE_DIR"], ignore_errors=True)

MAX_MAPS_AFTER_CLEARING = 30_000    # Linux's default vm.max_map_count is 65,530

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every XLA:CPU executable keeps its machine code in memory mappings of its own. One pytest
    process that compiles the whole suite's models (hundreds of NUTS, ODE and simulation
    programs) passed Linux's default limit of 65,530 mappings per process (vm.max_map_count)
    near the end of the suite, and the next compile or cache load died with a segmentation
    fault or abort. Clearing JAX's caches between modules brings the count back to about a
    thousand (measured: 15,797 -> 1,031 after tests/test_engine_rodas.py).
    """
    yield
    import jax

    jax.clear_caches()
    gc.collect()
    maps = Path("/proc/self/maps")
    if maps.exists():
        with maps.open() as lines:
            n = sum(1 for _ in lines)
        if n > MAX_MAPS_AFTER_CLEARING:
            pytest.fail(f"the test process still holds {n:,} memory mappings after clearing "
                        "JAX's caches: something keeps compiled programs alive, and the "
                        "suite will crash when it reaches vm.max_map_count", pytrace=False)


@pytest.fixture(scope="session")
def shared_benchmarks() -> Path:
    """The public benchmark CSVs beside the checkout (../shared/benchmarks)."""
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip(f"{SHARED_BENCHMARKS} is not present")
    return SHARED_BENCHMARKS


@pytest.fixture(scope="module")
def small_pm():
    """Eight simulated one-compartment subjects, log-normal error (quick NUTS runs)."""
    from test_inference_fit import TRUE, simulate
    from test_inference_model import make_df

    from il2pkpd.inference import prepare

    pm, *_ = prepare("one_cmt_iv", make_df(n=8), residual={"CP": "lognormal"})
    return simulate(pm, TRUE, seed=3)
