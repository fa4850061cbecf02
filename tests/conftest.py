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
