from pathlib import Path

import pytest

from il2pkpd._config import enable_x64

enable_x64()

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


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
