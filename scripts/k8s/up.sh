#!/usr/bin/env bash
# Starts the single-node Kubernetes lab (binaries from build.sh, built on first use).
# Prints the admin kubeconfig path on stdout when the node is Ready.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

started=$(date +%s.%N)
bash "$K8S_DIR/build.sh" >&2
bin=$(bin_dir)
mkdir -p "$MSO_K8S_RUN"/{pids,logs}
logs=$MSO_K8S_RUN/logs; pids=$MSO_K8S_RUN/pids

alive() { [[ -f $pids/$1.pid ]] && kill -0 "$(cat "$pids/$1.pid")" 2>/dev/null; }
# start NAME CMD...: a process in its own session, its pid recorded for down.sh
start() {
  local name=$1; shift
  alive "$name" && return 0
  setsid "$@" >"$logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$pids/$name.pid"
}
api() { curl -sf --cacert "$MSO_K8S_RUN/pki/ca.crt" --cert "$MSO_K8S_RUN/pki/admin.crt" \
          --key "$MSO_K8S_RUN/pki/admin.key" "https://$NODE_IP:$API_PORT$1"; }
write_if_changed() {  # write_if_changed FILE < content
  local tmp; tmp=$(mktemp)
  cat > "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}
wait_for() {  # wait_for DESCRIPTION SECONDS CMD...
  local what=$1 limit=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) > deadline )); then log "timed out waiting for $what"; exit 1; fi
    sleep 0.2
  done
}

# dockerd is the container runtime; share a running one, else start our own.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  start dockerd dockerd
  wait_for dockerd 60 docker info
fi

# Host sysctls that kubelet and kube-proxy change: saved once, restored by down.sh.
SYSCTLS="kernel.panic kernel.panic_on_oops vm.overcommit_memory kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables"
if [[ ! -f $MSO_K8S_RUN/sysctl.saved ]]; then
  for key in $SYSCTLS; do
    value=$(sysctl -n "$key" 2>/dev/null) && echo "$key=$value"
  done > "$MSO_K8S_RUN/sysctl.saved"
fi

# The node IP lives on an empty bridge of our own (dummy links and loopback do not work).
if ! ip link show "$LAB_BRIDGE" >/dev/null 2>&1; then
  ip link add "$LAB_BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$LAB_BRIDGE"
  ip link set "$LAB_BRIDGE" up
fi
# Packets to a ClusterIP that kube-proxy does not (yet) translate must stay on this
# machine, never follow the default route out.
ip route replace "$SERVICE_CIDR" dev "$LAB_BRIDGE"

bash "$K8S_DIR/pki.sh"
pki=$MSO_K8S_RUN/pki

# The pod sandbox image: our static pause program, imported (no registry).
if ! docker image inspect k8s.gcr.io/pause:3.2 >/dev/null 2>&1 || ! docker image inspect mso-lab/pause:3.2 >/dev/null 2>&1; then
  tmp=$(mktemp -d); cp "$bin/pause" "$tmp/pause"
  tar -C "$tmp" -c pause | docker import -c 'ENTRYPOINT ["/pause"]' - mso-lab/pause:3.2 >/dev/null
  docker tag mso-lab/pause:3.2 k8s.gcr.io/pause:3.2; rm -rf "$tmp"
fi

start etcd etcd --name mso-lab --data-dir "$MSO_K8S_RUN/etcd" \
  --listen-client-urls http://127.0.0.1:2479 --advertise-client-urls http://127.0.0.1:2479 \
  --listen-peer-urls http://127.0.0.1:2480 --initial-advertise-peer-urls http://127.0.0.1:2480 \
  --initial-cluster mso-lab=http://127.0.0.1:2480
wait_for etcd 30 curl -sf http://127.0.0.1:2479/health

start kube-apiserver "$bin/kube-apiserver" --advertise-address="$NODE_IP" --bind-address="$NODE_IP" \
  --secure-port=$API_PORT --insecure-port=0 --etcd-servers=http://127.0.0.1:2479 \
  --authorization-mode=Node,RBAC --client-ca-file="$pki/ca.crt" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$pki/apiserver-kubelet-client.key" --kubelet-certificate-authority="$pki/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-cluster-ip-range=$SERVICE_CIDR --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --profiling=false
wait_for kube-apiserver 90 api /readyz

start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$MSO_K8S_RUN/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$MSO_K8S_RUN/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$MSO_K8S_RUN/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --port=0 --leader-elect=false --use-service-account-credentials=true \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
  --service-cluster-ip-range=$SERVICE_CIDR --profiling=false
start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$MSO_K8S_RUN/scheduler.kubeconfig" \
  --authentication-kubeconfig="$MSO_K8S_RUN/scheduler.kubeconfig" \
  --authorization-kubeconfig="$MSO_K8S_RUN/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --port=0 --leader-elect=false --profiling=false

# Pods get no DNS server at all: the lab has none, and nothing may leave the machine.
: > "$MSO_K8S_RUN/resolv.conf"
write_if_changed "$MSO_K8S_RUN/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
cgroupDriver: cgroupfs
failSwapOn: false
resolvConf: $MSO_K8S_RUN/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "0%", "nodefs.available": "0%", "imagefs.available": "0%"}
enableServer: true
serializeImagePulls: false
# The default 5 requests/s makes pod deletions lag by tens of seconds under probe churn.
kubeAPIQPS: 50
kubeAPIBurst: 100
eventRecordQPS: 20
YAML
kubelet_started=0
alive kubelet || kubelet_started=$(date -u +%s)
start kubelet env AWS_EC2_METADATA_DISABLED=true "$bin/kubelet" --config="$MSO_K8S_RUN/kubelet.yaml" \
  --kubeconfig="$MSO_K8S_RUN/kubelet.kubeconfig" --container-runtime=docker \
  --pod-infra-container-image=mso-lab/pause:3.2 --node-ip="$NODE_IP" \
  --hostname-override=$NODE_NAME --oom-score-adj=0 --root-dir="$MSO_K8S_RUN/kubelet" \
  --cert-dir="$MSO_K8S_RUN/kubelet-pki"

# kube-proxy exits whenever its config file is rewritten, even with the same content.
write_if_changed "$MSO_K8S_RUN/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
bindAddress: $NODE_IP
clientConnection: {kubeconfig: $MSO_K8S_RUN/kube-proxy.kubeconfig}
clusterCIDR: 172.17.0.0/16
hostnameOverride: $NODE_NAME
oomScoreAdj: 0
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
YAML
start kube-proxy "$bin/kube-proxy" --config="$MSO_K8S_RUN/kube-proxy.yaml"

# After a restart etcd still says Ready: wait for a heartbeat newer than kubelet's start.
node_ready() {
  api /api/v1/nodes/$NODE_NAME | python3 -c '
import json, sys, datetime
since = int(sys.argv[1])
node = json.load(sys.stdin)
for c in node["status"]["conditions"]:
    if c["type"] == "Ready":
        beat = datetime.datetime.strptime(c["lastHeartbeatTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
        sys.exit(0 if c["status"] == "True" and beat.timestamp() >= since else 1)
sys.exit(1)' "$kubelet_started"
}
wait_for "node $NODE_NAME Ready" 120 node_ready
wait_for "default service account" 60 api /api/v1/namespaces/default/serviceaccounts/default
log "cluster up in $(python3 -c "import time; print(round(time.time() - $started, 1))")s"
echo "$MSO_K8S_RUN/admin.kubeconfig"
