#!/usr/bin/env bash
# The test suite's scaled-layout subset (CI's second run, docs/scale.md): PostgreSQL (a private
# cluster) and SeaweedFS's S3 gateway are started for it, files go to the bucket, and the Celery
# tests run two workers on separate queues. ./scripts/test_scaled.sh [pytest args]
# (with arguments, they replace the subset).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
bash scripts/system-deps.sh --scaled
ensure_requirements requirements-dev.txt
build_frontend
# The API (less its permission matrix, which does not depend on the layout), the tasks (real
# workers on a real Redis), exports, job recovery, paging and query counts, the aggregates the
# agreement dashboard and the People page read in SQL, one browser workflow.
# Sized for CI's budget: at most 4 minutes with the servers' start (docs/scale.md).
SUBSET=(
  tests/labeling/test_apis.py
  tests/consensus/test_apis.py
  tests/consensus/test_tasks.py
  tests/consensus/test_export.py
  tests/test_jobs.py
  tests/test_scale_queries.py
  tests/consensus/test_agreement_aggregates.py
  tests/labeling/test_people_summary.py
  tests/frontend/test_workflow.py::test_submit_freezes_and_opens_the_next_scan
  -k "not test_permission_matrix"
)
[ $# -gt 0 ] && SUBSET=("$@")
exec .venv/bin/python -m mriannot.scaled -- .venv/bin/python -m pytest --ds=mriannot.test_settings "${SUBSET[@]}"
