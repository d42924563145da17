#!/usr/bin/env bash
# Set up and run mriannot with its demo project: ./scripts/run.sh   (Ctrl-C stops everything)
#   ./scripts/run.sh --scaled   the scaled-out layout on this machine: PostgreSQL, SeaweedFS (S3),
#                               Redis, gunicorn and one Celery worker per queue (docs/scale.md)
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if [ "${1:-}" = "--scaled" ]; then
  bash scripts/system-deps.sh --postgres
  ensure_requirements requirements-scaled.txt
else
  ensure_requirements requirements.txt
fi
build_frontend
exec .venv/bin/python -m mriannot.launcher "$@"
