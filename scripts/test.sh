#!/usr/bin/env bash
# Runs the whole test suite (unit and end-to-end, against real processes and sockets).
# Extra arguments go to pytest, e.g. scripts/test.sh -k proxy -x
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
scripts/services.sh
.venv/bin/pytest -p no:cacheprovider "$@"
code=$?
if [ "$code" = 5 ]; then
  echo "test.sh: no tests were collected" >&2
  exit 1
fi
exit "$code"
