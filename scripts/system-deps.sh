#!/usr/bin/env bash
# Installs the system programs the tests and the local platform run for real, through
# apt, only when missing: redis-server (limiter state), prometheus (promtool for the alert
# rules' unit tests, and the local platform's scrapes), chromium (the MLflow UI test),
# wrk (benchmarks), git. With --bench also node and npm (Portkey's gateway in `make bench`),
# which nothing else needs.
set -euo pipefail

need=()
if [ "${1:-}" = "--bench" ]; then
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v git >/dev/null 2>&1 || need+=(git)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

echo "system-deps: installing ${need[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "system-deps: need root or sudo to install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
