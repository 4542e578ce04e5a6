#!/usr/bin/env bash
# Stops the lab and removes only what it made: its processes, kubelet's containers,
# KUBE-* iptables chains, kubelet mounts, pod cgroups, the bridge; restores sysctls.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
set +e
pids=$MSO_K8S_RUN/pids

stop() {  # stop NAME: SIGTERM, then SIGKILL after 10 s
  local f=$pids/$1.pid
  [[ -f $f ]] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$f"
}
for name in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "$name"
done

# Containers kubelet made carry its pod labels; nothing else does.
ids=$(docker ps -aq --filter label=io.kubernetes.pod.uid 2>/dev/null)
[[ -n $ids ]] && docker rm -f $ids >/dev/null

for table in filter nat mangle; do
  iptables -t $table -S 2>/dev/null | grep -E -- '-j KUBE-' | grep -v '^-A KUBE-' | \
    sed 's/^-A /-D /' | while read -r rule; do eval iptables -t $table $rule; done
  for chain in $(iptables -t $table -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
    iptables -t $table -F "$chain"
  done
  for chain in $(iptables -t $table -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
    iptables -t $table -X "$chain"
  done
done

grep -F " $MSO_K8S_RUN/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
for dir in $(find /sys/fs/cgroup/*/ -maxdepth 1 -name 'kubepods*' -type d 2>/dev/null); do
  find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
done

ip link show "$LAB_BRIDGE" >/dev/null 2>&1 && ip link del "$LAB_BRIDGE"

if [[ -f $MSO_K8S_RUN/sysctl.saved ]]; then
  while IFS= read -r line; do sysctl -q -w "$line" >/dev/null; done < "$MSO_K8S_RUN/sysctl.saved"
  rm -f "$MSO_K8S_RUN/sysctl.saved"
fi
# dockerd is stopped only if the lab started it.
stop dockerd
rm -rf "$MSO_K8S_RUN/etcd" "$MSO_K8S_RUN/kubelet" "$MSO_K8S_RUN/kubelet-pki"
log "lab stopped"
