#!/usr/bin/env bash
# Run the whole test suite, installing what is missing: ./scripts/test.sh [pytest args]
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
bash scripts/system-deps.sh
ensure_requirements requirements-dev.txt
build_frontend
exec .venv/bin/python -m pytest "$@"
