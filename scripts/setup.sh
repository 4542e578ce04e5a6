#!/usr/bin/env bash
# Installs everything mso needs on a fresh Debian machine: Debian packages (as root) and a
# virtualenv in .venv with mso and its pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${MSO_EXTRAS:-test,bench}"
# procps: ps in tests; docker.io, iptables, util-linux: the Swarm engine and its lab;
# golang-go ... curl: building and running the Kubernetes lab (scripts/k8s-lab.sh);
# chromium, chromium-driver: the dashboard's browser tests (Selenium, headless).
apt_packages=(python3-venv python3-dev procps iproute2 docker.io iptables util-linux
              golang-go etcd-server rsync openssl gcc libc6-dev make conntrack socat ethtool
              dpkg-dev curl chromium chromium-driver)
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
stamp=.venv/.mso-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[${extras}]"
  touch "$stamp"
fi
# The proxy's per-request modules are compiled in place by mypyc (setup.py). A build older
# than its sources is ignored at run time (mso.proxy.native), so rebuild it here.
if command -v gcc >/dev/null 2>&1 && ! .venv/bin/python -c \
    'import sys; from mso.proxy import native; sys.exit(0 if native.choose({})[0] else 1)'; then
  echo "setup: compiling the proxy's per-request modules (mypyc)"
  .venv/bin/pip install -q --no-deps -e .
fi
