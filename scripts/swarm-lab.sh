#!/bin/sh
# A multi-node Swarm on one machine, for mso's multi-node tests and demos.
#
#   scripts/swarm-lab.sh up N     # dockerd + swarm manager on 10.77.0.1, N workers
#   scripts/swarm-lab.sh down     # remove the workers, their namespaces and the bridge
#   scripts/swarm-lab.sh images   # copy mso's images (mso/*) to every worker
#
# Each worker is a dockerd in its own network namespace (veth to the bridge msolab0,
# 10.77.0.0/24). `ip netns exec` would hide the cgroup mounts, so workers start through
# nsenter + unshare with /sys remounted. There is no registry: images are copied with
# `docker save | docker load`. The manager must advertise the bridge address, so `up`
# re-initialises a swarm that advertises 127.0.0.1 (only when it runs no service).
set -eu

BR=msolab0
NET=10.77.0
ROOT=/var/lib/mso-lab
RUN=/run/mso-lab

log() { echo "swarm-lab: $*" >&2; }

ensure_dockerd() {
    if ! docker info >/dev/null 2>&1; then
        log "starting dockerd"
        dockerd >/var/log/dockerd.log 2>&1 &
        i=0; until docker info >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 120 ] || { log "dockerd did not start"; exit 1; }; sleep 0.5; done
    fi
}

ensure_bridge() {
    ip link show $BR >/dev/null 2>&1 || {
        ip link add $BR type bridge
        ip addr add $NET.1/24 dev $BR
        ip link set $BR up
    }
    iptables -C FORWARD -i $BR -o $BR -j ACCEPT 2>/dev/null || iptables -I FORWARD -i $BR -o $BR -j ACCEPT
}

ensure_manager() {
    addr=$(docker info --format '{{.Swarm.NodeAddr}}' 2>/dev/null || true)
    state=$(docker info --format '{{.Swarm.LocalNodeState}}')
    if [ "$state" = active ] && [ "$addr" != "$NET.1" ]; then
        if [ -n "$(docker service ls -q)" ]; then
            log "the swarm advertises $addr and runs services; remove them first"; exit 1
        fi
        docker swarm leave --force >/dev/null
        state=inactive
    fi
    [ "$state" = active ] || docker swarm init --advertise-addr $NET.1 >/dev/null
}

start_worker() {
    i=$1; ns=msolab$i; ip=$NET.$((i+1)); sock=$RUN/w$i/docker.sock
    mkdir -p $ROOT/w$i $RUN/w$i
    ip netns add $ns 2>/dev/null || true
    if ! ip link show vlab$i >/dev/null 2>&1; then
        ip link add vlab$i type veth peer name eth0 netns $ns
        ip link set vlab$i master $BR up
        ip netns exec $ns ip addr add $ip/24 dev eth0
        ip netns exec $ns ip link set eth0 up
        ip netns exec $ns ip link set lo up
        ip netns exec $ns ip route add default via $NET.1
    fi
    if ! DOCKER_HOST=unix://$sock docker info >/dev/null 2>&1; then
        nsenter --net=/run/netns/$ns unshare -m --propagation slave sh -c "
            mkdir -p $RUN/w$i/cg; mount --rbind /sys/fs/cgroup $RUN/w$i/cg
            mount -t sysfs sysfs /sys; mount --rbind $RUN/w$i/cg /sys/fs/cgroup; umount -l $RUN/w$i/cg
            exec dockerd --data-root $ROOT/w$i --exec-root $RUN/w$i/exec --pidfile $RUN/w$i/docker.pid \
                -H unix://$sock --bridge=none --iptables=false" >$RUN/w$i/dockerd.log 2>&1 &
        n=0; until DOCKER_HOST=unix://$sock docker info >/dev/null 2>&1; do
            n=$((n+1)); [ $n -lt 120 ] || { log "worker $i dockerd did not start"; exit 1; }; sleep 0.5; done
    fi
    state=$(DOCKER_HOST=unix://$sock docker info --format '{{.Swarm.LocalNodeState}}')
    if [ "$state" != active ]; then
        token=$(docker swarm join-token -q worker)
        DOCKER_HOST=unix://$sock docker swarm join --token "$token" --advertise-addr $ip $NET.1:2377 >/dev/null
    fi
    log "worker $i ($ip) joined"
}

copy_images() {
    images=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep '^mso/' || true)
    [ -n "$images" ] || return 0
    for sock in $RUN/w*/docker.sock; do
        [ -S "$sock" ] || continue
        # shellcheck disable=SC2086
        docker save $images | DOCKER_HOST=unix://$sock docker load >/dev/null
    done
    log "images copied to the workers"
}

down() {
    for dir in $RUN/w*; do
        [ -d "$dir" ] || continue
        i=${dir##*/w}; sock=$dir/docker.sock
        DOCKER_HOST=unix://$sock docker swarm leave --force >/dev/null 2>&1 || true
        if [ -f $dir/docker.pid ]; then
            pid=$(cat $dir/docker.pid); kill "$pid" 2>/dev/null || true
            n=0; while kill -0 "$pid" 2>/dev/null && [ $n -lt 60 ]; do n=$((n+1)); sleep 0.5; done
        fi
        ip link del vlab$i 2>/dev/null || true
        ip netns del msolab$i 2>/dev/null || true
        rm -rf "$dir" "$ROOT/w$i"
    done
    for node in $(docker node ls --filter role=worker -q 2>/dev/null); do
        docker node rm --force "$node" >/dev/null 2>&1 || true
    done
    iptables -D FORWARD -i $BR -o $BR -j ACCEPT 2>/dev/null || true
    ip link del $BR 2>/dev/null || true
    log "lab removed"
}

case "${1:-}" in
    up)
        count=${2:-2}
        ensure_dockerd; ensure_bridge; ensure_manager
        w=1; while [ $w -le "$count" ]; do start_worker $w; w=$((w+1)); done
        copy_images ;;
    images) copy_images ;;
    down) down ;;
    *) echo "usage: $0 up N | images | down" >&2; exit 2 ;;
esac
