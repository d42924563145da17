# Shared by run.sh and test.sh: a virtualenv in .venv with the pinned requirements,
# reinstalled only when a requirements file changes; the front end built when it has one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "mriannot: creating .venv with $PY"
  "$PY" -m venv .venv
fi
ensure_requirements() {  # $1: requirements file
  local stamp=".venv/.stamp-$(basename "$1")" want
  want="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "mriannot: installing $1 (first run takes a minute or two)"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$1"
    echo "$want" > "$stamp"
  fi
}
build_frontend() {
  [ -f frontend/package.json ] || return 0
  local stamp="frontend/dist/.stamp" want
  want="$(find frontend/src frontend/vite.config.js frontend/package.json frontend/package-lock.json -type f \
          | sort | xargs cat | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "mriannot: building the front end"
    (cd frontend && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npm run build --silent)
    echo "$want" > "$stamp"
  fi
}
