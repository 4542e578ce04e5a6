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
.venv/bin/pytest -p no:cacheprovider "$@"
code=$?
if [ "$code" = 5 ]; then
  echo "test.sh: no tests were collected" >&2
  exit 1
fi
exit "$code"
