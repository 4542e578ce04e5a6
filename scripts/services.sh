#!/usr/bin/env bash
# Starts the services the end-to-end tests need and that this machine does not start by
# itself: dockerd (for the Swarm and Kubernetes engines). Safe to run again.
set -uo pipefail

if ! command -v dockerd >/dev/null 2>&1; then
  echo "services: dockerd is not installed; Swarm/Kubernetes tests will say why they skip" >&2
  exit 0
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "services: dockerd is not running and starting it needs root" >&2
  exit 0
fi
log=/var/log/mso-dockerd.log
echo "services: starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 90); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "services: dockerd did not answer within 90 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 0
