#!/bin/bash
# A/B of the idle daemon's CPU with the same replicas (issue 15, part 6): the app in FOLDER
# runs (e.g. 100 tiny replicas: bench/scale/run.py's manifest); each round detaches its
# daemon (SIGHUP: replicas and proxy keep running) and starts the other version's daemon
# with `mso up -d`, which re-adopts them, then samples the daemon's CPU for SECONDS.
# Version A is the tree in OLD_SRC (e.g. `git archive COMMIT src | tar -x -C DIR`, plus the
# compiled proxy's .so files copied beside it), put first on PYTHONPATH; B is this tree.
# Usage: OLD_SRC=/tmp/old/src bench/scale/ab_idle.sh FOLDER [ROUNDS] [SECONDS]
set -euo pipefail
folder=$1; rounds=${2:-3}; seconds=${3:-25}
mso="$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/mso"
cd "$folder"
start() {
  local d
  d=$(cat .mso/daemon.lock 2>/dev/null || true)
  if [ -n "$d" ] && kill -0 "$d" 2>/dev/null; then
    kill -HUP "$d"
    for _ in $(seq 1 200); do kill -0 "$d" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ "$1" = A ]; then PYTHONPATH="$OLD_SRC" "$mso" up -d --timeout 200 >/dev/null
  else "$mso" up -d --timeout 200 >/dev/null; fi
}
cpu() {  # percent of one core used by PID over SECONDS
  local a b hz
  hz=$(getconf CLK_TCK)
  a=$(awk '{print $14+$15}' "/proc/$1/stat"); sleep "$2"; b=$(awk '{print $14+$15}' "/proc/$1/stat")
  python3 -c "print(f'{100*($b-$a)/$hz/$2:.2f}%')"
}
for round in $(seq 1 "$rounds"); do
  for v in A B; do
    start $v
    d=$(cat .mso/daemon.lock)
    sleep 5
    echo "$v round $round daemon $d cpu $(cpu "$d" "$seconds") load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
