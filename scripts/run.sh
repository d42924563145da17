#!/usr/bin/env bash
# Set up and run mriannot with its demo project: ./scripts/run.sh   (Ctrl-C stops everything)
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_requirements requirements.txt
build_frontend
exec .venv/bin/python -m mriannot.launcher
