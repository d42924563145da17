#!/usr/bin/env bash
# The house rules: ruff (lint and format), import-linter's layer and kernel contracts, and
# models that match their migrations. ./scripts/lint.sh; CI runs it before the tests.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_requirements requirements-dev.txt
status=0
step() { echo "lint: $*"; "$@" || status=1; }
step .venv/bin/ruff check .
step .venv/bin/ruff format --check --quiet .
step .venv/bin/lint-imports --no-cache
step env DJANGO_SETTINGS_MODULE=mriannot.test_settings .venv/bin/python manage.py makemigrations --check --dry-run
exit $status
