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
# With arguments (e.g. `-k proxy -x`) or MSO_TEST_SERIAL=1: one pytest run, in the phase
# order of tests/conftest.py.
if [ "$#" -gt 0 ] || [ "${MSO_TEST_SERIAL:-0}" = 1 ]; then
  .venv/bin/pytest -p no:cacheprovider --durations=25 "$@"
  code=$?
  if [ "$code" = 5 ]; then
    echo "test.sh: no tests were collected" >&2
    exit 1
  fi
  exit "$code"
fi

# The whole suite, in two steps:
# 1. everything that needs neither Docker Swarm nor Kubernetes (unit tests and the embedded
#    engine's end-to-end tests), alone on the machine, because several of them count
#    failed requests under load;
# 2. the Swarm tests and the Kubernetes tests side by side, in two pytest processes: they
#    spend most of their time waiting for dockerd and the lab cluster, not on the CPU, and
#    every test's app has a name (Swarm) or namespace (Kubernetes) of its own. The lab is
#    started before both, so its start-up burst does not overlap the Swarm tests.
# Each pytest prints its own summary; the last lines sum them up.
pytest_run() {  # LOG MARKEXPR: one pytest process; its exit code (5, nothing collected, is 0)
  local log=$1 expr=$2 code
  .venv/bin/pytest -p no:cacheprovider --durations=15 -m "$expr" >"$log" 2>&1
  code=$?
  [ "$code" = 5 ] && code=0
  return "$code"
}
logs=$(mktemp -d /tmp/mso-test.XXXXXX)
started=$(date +%s)
echo "test.sh: step 1 of 2: unit and embedded-engine tests"
.venv/bin/pytest -p no:cacheprovider --durations=25 -m "not swarm and not kubernetes"
local_code=$?
[ "$local_code" = 5 ] && local_code=1  # this step always has tests
local_s=$(( $(date +%s) - started ))

lab_started=0
if [ "$(id -u)" = 0 ] && ! scripts/k8s-lab.sh status >/dev/null 2>&1; then
  echo "test.sh: starting the Kubernetes lab"
  if scripts/k8s-lab.sh up >"$logs/lab-up.log" 2>&1; then
    lab_started=1
  else  # the Kubernetes tests' fixture tries again and reports why it cannot
    echo "test.sh: the lab did not start here; last lines:" >&2
    tail -n 5 "$logs/lab-up.log" >&2
    scripts/k8s-lab.sh down >/dev/null 2>&1 || true
  fi
fi
remote_started=$(date +%s)
echo "test.sh: step 2 of 2: Swarm and Kubernetes tests side by side (logs: $logs)"
pytest_run "$logs/swarm.log" "swarm and not kubernetes" &
swarm_pid=$!
pytest_run "$logs/kubernetes.log" "kubernetes" &
k8s_pid=$!
# A line a minute, so a CI log does not look hung while both run.
ticks=0
while kill -0 "$swarm_pid" 2>/dev/null || kill -0 "$k8s_pid" 2>/dev/null; do
  sleep 5
  ticks=$(( ticks + 1 ))
  [ $(( ticks % 12 )) = 0 ] || continue
  running=""
  kill -0 "$swarm_pid" 2>/dev/null && running="$running swarm"
  kill -0 "$k8s_pid" 2>/dev/null && running="$running kubernetes"
  [ -n "$running" ] && echo "test.sh: $(( ($(date +%s) - remote_started) / 60 )) min, running:$running"
done
wait "$swarm_pid"; swarm_code=$?
wait "$k8s_pid"; k8s_code=$?
remote_s=$(( $(date +%s) - remote_started ))
if [ "$lab_started" = 1 ] && [ "${MSO_K8S_KEEP:-0}" != 1 ]; then
  scripts/k8s-lab.sh down >/dev/null 2>&1 || true
fi
for phase in swarm kubernetes; do
  echo
  echo "======================== $phase tests ($logs/$phase.log) ========================"
  cat "$logs/$phase.log"
done
summary() { tail -n 1 "$1" | sed 's/^=* *//; s/ *=*$//'; }
echo
echo "test.sh: unit and embedded engine: exit $local_code (${local_s} s)"
echo "test.sh: swarm: exit $swarm_code: $(summary "$logs/swarm.log")"
echo "test.sh: kubernetes: exit $k8s_code: $(summary "$logs/kubernetes.log")"
echo "test.sh: step 2 took ${remote_s} s; the whole suite $(( $(date +%s) - started )) s"
if [ "$local_code" != 0 ] || [ "$swarm_code" != 0 ] || [ "$k8s_code" != 0 ]; then
  exit 1
fi
exit 0
