#!/usr/bin/env bash
# Create .venv with Python 3.12 and install il2pkpd with its test tools.
# Idempotent: re-running only installs what changed. Used by quickstart.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    # 1. an explicit override; 2. pyenv (selects the version in .python-version);
    # 3. python3.12 on PATH; 4. a python3 that already is 3.12+.
    if [ -n "${IL2PKPD_PYTHON:-}" ]; then echo "$IL2PKPD_PYTHON"; return; fi
    if command -v pyenv >/dev/null 2>&1; then
        local want; want=$(cat .python-version)
        if ! pyenv versions --bare | grep -q "^${want}"; then
            pyenv install -s "$want" >&2 || true
        fi
        local p; p=$(pyenv which python 2>/dev/null || true)
        if [ -n "$p" ] && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
            echo "$p"; return
        fi
    fi
    for c in python3.12 python3.13 python3; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
            command -v "$c"; return
        fi
    done
    if command -v apt-get >/dev/null 2>&1; then
        echo "setup: no Python 3.12+ found; installing Debian's python3 packages" >&2
        apt-get update -qq >&2 && apt-get install -y -qq python3 python3-venv >&2 || true
        if python3 -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v python3; return
        fi
    fi
    echo "setup: Python 3.12 or newer is required (ArviZ 1.x needs it) and none was found." >&2
    echo "       Install it (e.g. 'pyenv install 3.12') or set IL2PKPD_PYTHON=/path/to/python3.12." >&2
    exit 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
    PY=$(find_python)
    echo "setup: creating .venv with $("$PY" --version)" >&2
    rm -rf .venv
    "$PY" -m venv .venv
fi

stamp=.venv/.il2pkpd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing il2pkpd and its dependencies into .venv" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" >&2
    touch "$stamp"
fi
