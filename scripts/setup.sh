#!/usr/bin/env bash
# Installs everything mso needs on a fresh Debian machine: Debian packages (as root) and a
# virtualenv in .venv with mso and its pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# MSO_EXTRAS: the pyproject extras to install (default test,bench; scripts/demo.sh sets
# it empty, to install only what running mso needs).
extras="${MSO_EXTRAS-test,bench}"
# What running mso needs: python3-venv, python3-dev, gcc and libc6-dev (the proxy's
# compiled hot path). The test suite needs more (MSO_EXTRAS contains `test`): procps for
# ps; docker.io, iptables, util-linux for the Swarm engine and its lab; golang-go ... curl
# to build and run the Kubernetes lab (scripts/k8s-lab.sh); prometheus, the real Prometheus
# canary analysis providers are tested against (tests/e2e/prometheus.py starts its own);
# chromium and chromium-driver for the dashboard's browser tests (Selenium, headless);
# redis-server and redis-tools, copied into the locally built Redis image of the compose
# end-to-end test (tests/e2e/test_compose_containers.py: no registry to pull redis from);
# nodejs, for the test of `mso new service --template node-http` (its `node --test`);
# postgresql (server, initdb and pgbench), run under mso as its own `postgres` user by
# tests/e2e/test_service_user.py (`user:`, privileges dropped by mso, a kill -9 recovered).
apt_packages=(python3-venv python3-dev gcc libc6-dev)
case ",$extras," in
  *,test,*)
    apt_packages+=(procps iproute2 docker.io iptables util-linux golang-go etcd-server rsync
                   openssl make conntrack socat ethtool dpkg-dev curl prometheus chromium
                   chromium-driver nodejs redis-server redis-tools postgresql) ;;
esac
[ "${MSO_WITH_BENCH_TOOLS:-0}" = 1 ] && apt_packages+=(wrk haproxy nginx-light)

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (run as root to install): ${missing[*]}" >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.mso-installed-${extras:-none}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  if [ -n "$extras" ]; then
    .venv/bin/pip install -q -e ".[${extras}]"
  else
    .venv/bin/pip install -q -e .
  fi
  touch "$stamp"
fi
# The proxy's per-request modules are compiled in place by mypyc (setup.py). A build older
# than its sources is ignored at run time (mso.proxy.native), so rebuild it here.
if command -v gcc >/dev/null 2>&1 && ! .venv/bin/python -c \
    'import sys; from mso.proxy import native; sys.exit(0 if native.choose({})[0] else 1)'; then
  echo "setup: compiling the proxy's per-request modules (mypyc)"
  .venv/bin/pip install -q --no-deps -e .
fi
