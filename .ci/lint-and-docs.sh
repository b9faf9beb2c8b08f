#!/usr/bin/env bash
# Lint, type check, documentation (warnings as errors) and packaging checks.
# Run from anywhere: .ci/lint-and-docs.sh   (uses ./.venv when no virtual environment is active;
# installs the `docs` extra when its tools are missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3 PIP_DISABLE_PIP_VERSION_CHECK=1 MPLBACKEND=Agg
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    . .venv/bin/activate
fi
for tool in ruff mypy sphinx-build twine; do
    if ! command -v "$tool" >/dev/null; then
        pip install -q -e ".[docs]"
        break
    fi
done
python -c "import build" 2>/dev/null || pip install -q -e ".[docs]"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

step() {   # step NAME COMMAND...: run, print its wall time
    local name=$1 t0
    shift
    t0=$(date +%s)
    echo "== $name"
    "$@"
    echo "== $name: ok ($(( $(date +%s) - t0 )) s)"
}

step "ruff check" ruff check .
step "ruff format" ruff format --check .
step "mypy" mypy
step "docs" sphinx-build -W --keep-going -q -b html docs "$out/html"
step "build" python -m build --quiet --outdir "$out/dist" .
step "twine check" twine check --strict "$out"/dist/*
