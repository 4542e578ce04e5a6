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
