#!/usr/bin/env bash
# Patches applied to the Kubernetes 1.20.2 tree before building.
# This VM lacks CAP_SYS_RESOURCE, so no negative oom_score_adj can be set;
# dockershim hard-codes -998 for sandboxes, which makes every pod fail in runc.
set -euo pipefail
tree=$1
f=$tree/pkg/kubelet/dockershim/docker_sandbox.go
sed -i 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' "$f"
grep -q 'defaultSandboxOOMAdj int = 0' "$f"
f=$tree/pkg/kubelet/dockershim/helpers_linux.go
sed -i 's/createConfig.HostConfig.OomScoreAdj = int(rOpts.OomScoreAdj)/createConfig.HostConfig.OomScoreAdj = int(rOpts.OomScoreAdj)\n\t\t\tif createConfig.HostConfig.OomScoreAdj < 0 {\n\t\t\t\tcreateConfig.HostConfig.OomScoreAdj = 0\n\t\t\t}/' "$f"
grep -q 'if createConfig.HostConfig.OomScoreAdj < 0' "$f"

# Go >= 1.18 changed reflect.mapiterinit to fill a caller-provided iterator; the
# vendored reflect2 v1.0.1 still expects one returned, and every binary then crashes
# ("unexpected fault address", aeshashbody) in json map encoding. This is reflect2
# v1.0.2's fix, applied to the vendored copy.
python3 - "$tree/vendor/github.com/modern-go/reflect2" <<'PY'
import sys
from pathlib import Path
root = Path(sys.argv[1])
link = root / "unsafe_link.go"
text = link.read_text()
text = text.replace(
    "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) *hiter",
    "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)")
start = text.index("type hiter struct {")
end = text.index("}", start) + 1
text = text[:start] + """type hiter struct {
	key         unsafe.Pointer
	value       unsafe.Pointer
	t           unsafe.Pointer
	h           unsafe.Pointer
	buckets     unsafe.Pointer
	bptr        unsafe.Pointer
	overflow    *[]unsafe.Pointer
	oldoverflow *[]unsafe.Pointer
	startBucket uintptr
	offset      uint8
	wrapped     bool
	B           uint8
	i           uint8
	bucket      uintptr
	checkBucket uintptr
}""" + text[end:]
link.write_text(text)
umap = root / "unsafe_map.go"
text = umap.read_text()
old = """	return &UnsafeMapIterator{
		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),"""
new = """	var it hiter
	mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)
	return &UnsafeMapIterator{
		hiter:      &it,"""
assert old in text, "reflect2 UnsafeIterate not found"
umap.write_text(text.replace(old, new))
PY
grep -q 'mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it \*hiter)' "$tree/vendor/github.com/modern-go/reflect2/unsafe_link.go"
