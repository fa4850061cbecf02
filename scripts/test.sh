#!/usr/bin/env bash
# Run the test suite (sets up .venv first if needed). Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m slow` for the long recovery runs.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$rc"
