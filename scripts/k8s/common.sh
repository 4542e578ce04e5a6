# Shared settings for the single-node Kubernetes lab (sourced by the other scripts).
# Everything the lab makes lives under $MSO_K8S_CACHE (binaries, built once) or
# $MSO_K8S_RUN (certs, configs, logs, pids of one running cluster).
set -euo pipefail

K8S_VERSION=v1.20.2
MSO_K8S_CACHE=${MSO_K8S_CACHE:-/var/cache/mso-k8s}
MSO_K8S_RUN=${MSO_K8S_RUN:-/var/lib/mso-k8s-lab}
LAB_BRIDGE=${LAB_BRIDGE:-msok8s0}
NODE_IP=${NODE_IP:-10.200.0.1}
SERVICE_CIDR=10.201.0.0/24
APISERVER_SVC_IP=10.201.0.1
API_PORT=6443
NODE_NAME=mso-lab
K8S_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The cache key covers everything that changes the binaries: the version,
# the source patches and the build recipe.
build_key() {
  cat "$K8S_DIR/build.sh" "$K8S_DIR/patch-source.sh" "$K8S_DIR/pause.c" | sha256sum | cut -c1-12
}
bin_dir() { echo "$MSO_K8S_CACHE/${K8S_VERSION}-$(build_key)/bin"; }
log() { echo "[k8s-lab] $*" >&2; }
