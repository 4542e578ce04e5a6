#!/usr/bin/env bash
# The single-node Kubernetes 1.20.2 lab that mso's Kubernetes engine is tested on.
#   scripts/k8s-lab.sh build   build the binaries once into /var/cache/mso-k8s (15-20 min cold)
#   scripts/k8s-lab.sh up      start the cluster; prints the admin kubeconfig path
#   scripts/k8s-lab.sh down    stop it and remove everything it made
#   scripts/k8s-lab.sh status  exit 0 when the API server answers
# Needs root and: golang-go etcd-server rsync openssl gcc libc6-dev conntrack socat
# ethtool docker.io iptables dpkg-dev.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/k8s"
case "${1:-}" in
  build)  # one build at a time: two runs that find no lab would build into one tree at once
    cache=${MSO_K8S_CACHE:-/var/cache/mso-k8s}
    mkdir -p "$cache"
    exec flock "$cache/.build.lock" bash "$here/build.sh" ;;
  up) exec bash "$here/up.sh" ;;
  down) exec bash "$here/down.sh" ;;
  status)
    source "$here/common.sh"
    exec curl -sf --cacert "$MSO_K8S_RUN/pki/ca.crt" --cert "$MSO_K8S_RUN/pki/admin.crt" \
      --key "$MSO_K8S_RUN/pki/admin.key" "https://$NODE_IP:$API_PORT/readyz" ;;
  *) echo "usage: $0 build|up|down|status" >&2; exit 2 ;;
esac
