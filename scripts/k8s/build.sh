#!/usr/bin/env bash
# Builds Kubernetes 1.20.2 server binaries from Debian's source package, once,
# into $MSO_K8S_CACHE/<version>-<key>/bin. A second run with the same key is a no-op.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

out=$(bin_dir)
if [[ -x $out/kubelet && -x $out/pause && -f $out/.complete ]]; then
  log "binaries cached in $out"; exit 0
fi
for tool in go gcc rsync make dpkg-source; do
  command -v $tool >/dev/null || { log "missing $tool (apt-get install golang-go gcc rsync make dpkg-dev)"; exit 3; }
done
[[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || { log "missing static libc (apt-get install libc6-dev)"; exit 3; }

dl=$MSO_K8S_CACHE/src-dl
mkdir -p "$dl/apt/parts" "$dl/apt/lists/partial" "$dl/apt/cache/archives/partial"
if ! ls "$dl"/kubernetes_*.orig.tar.* >/dev/null 2>&1; then
  # A private apt config with deb-src entries derived from the system's own
  # sources, so the system's apt setup stays untouched.
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$dl/apt/parts/src.sources"
  apto=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$dl/apt/parts"
        -o "Dir::State::Lists=$dl/apt/lists" -o "Dir::Cache=$dl/apt/cache")
  apt-get "${apto[@]}" update -q
  (cd "$dl" && apt-get "${apto[@]}" source --download-only kubernetes)
fi

src=$MSO_K8S_CACHE/src-$(build_key)
if [[ ! -f $src/.patched ]]; then
  rm -rf "$src"; mkdir -p "$src"
  tar -C "$src" --strip-components=1 -xzf "$(ls "$dl"/kubernetes_*.orig.tar.* | head -1)"
  bash "$K8S_DIR/patch-source.sh" "$src"
  touch "$src/.patched"
fi

log "building $K8S_VERSION in $src (15-20 min cold on 2 cores)"
started=$(date +%s)
(
  cd "$src"
  export GOPATH=$src/.gopath GOCACHE=$MSO_K8S_CACHE/gocache GOFLAGS=-tags=providerless
  export KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_TREE_STATE=clean
  export KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
  export GOPROXY=off
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kube-proxy cmd/kubelet"
)
mkdir -p "$out"
for b in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet; do
  cp "$src/_output/local/bin/linux/amd64/$b" "$out/$b"
done
gcc -O2 -static -o "$out/pause" "$K8S_DIR/pause.c"
touch "$out/.complete"
log "built in $(( $(date +%s) - started ))s into $out"
