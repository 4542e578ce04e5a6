#!/usr/bin/env bash
# Runs the whole test suite (unit and end-to-end, against real processes and sockets).
# Extra arguments go to pytest, e.g. scripts/test.sh -k proxy -x
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
scripts/services.sh
# The Kubernetes tests need a real 1.20 cluster built from Debian's source package: ~15 min
# the first time on this machine, then cached under /var/cache/mso-k8s. If it cannot be
# built, the Kubernetes tests skip and print why.
if [ "${MSO_SKIP_K8S_BUILD:-0}" != 1 ] && [ "$(id -u)" = 0 ]; then
  echo "test.sh: building (or finding cached) Kubernetes lab binaries; log: /tmp/mso-k8s-build.log"
  if ! scripts/k8s-lab.sh build >/tmp/mso-k8s-build.log 2>&1; then
    echo "test.sh: the Kubernetes lab could not be built; last lines:" >&2
    tail -n 15 /tmp/mso-k8s-build.log >&2
  fi
fi
# What an interrupted earlier run left behind would share the machine with this one (and a
# running lab would be reused while the timing-sensitive tests run): the suite owns this
# machine's Swarm and lab, so their leftovers go first. MSO_K8S_KEEP=1 keeps a running lab.
if [ "$(id -u)" = 0 ]; then
  if [ "${MSO_K8S_KEEP:-0}" != 1 ] && scripts/k8s-lab.sh status >/dev/null 2>&1; then
    echo "test.sh: stopping the Kubernetes lab an earlier run left up (tests start it again)"
    scripts/k8s-lab.sh down >/dev/null 2>&1 || true
  fi
  if docker info >/dev/null 2>&1; then
    left=$(docker service ls -q --filter label=mso.managed=true 2>/dev/null)
    if [ -n "$left" ]; then
      echo "test.sh: removing Swarm services an earlier run left: $(docker service ls --format '{{.Name}}' --filter label=mso.managed=true | tr '\n' ' ')"
      docker service rm $left >/dev/null 2>&1 || true
    fi
  fi
fi
.venv/bin/pytest -p no:cacheprovider --durations=25 "$@"
code=$?
if [ "$code" = 5 ]; then
  echo "test.sh: no tests were collected" >&2
  exit 1
fi
exit "$code"
