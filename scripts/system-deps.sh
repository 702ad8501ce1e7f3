#!/usr/bin/env bash
# Installs the system programs Nexus runs for real, through apt, only when missing.
#   up    (make up)   what `nexus up` runs: redis-server (limiter state), prometheus (the
#                     local platform's scrapes), git (the GitOps repository);
#   test  (make test, the default) those, and what only the tests use: chromium (the
#                     MLflow UI test), wrk (load), prometheus's promtool (alert rule tests);
#   bench (make bench) those of test, and node and npm (Portkey's gateway).
set -euo pipefail

what="${1:-test}"
what="${what#--}"
case "$what" in
  up|test|bench) ;;
  *) echo "usage: $0 [up|test|bench]" >&2; exit 2 ;;
esac
# command:package
programs=(redis-server:redis-server prometheus:prometheus git:git)
if [ "$what" != "up" ]; then
  programs+=(chromium:chromium wrk:wrk promtool:prometheus)
fi
if [ "$what" = "bench" ]; then
  programs+=(node:nodejs npm:npm)
fi

need=()
for pair in "${programs[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)

echo "system-deps ($what): installing ${need[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "system-deps: need root or sudo to install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
