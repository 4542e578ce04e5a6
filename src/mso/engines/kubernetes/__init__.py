"""The Kubernetes engine: render mso.yaml as plain Kubernetes YAML, or apply it directly.

Modules: `versions` (API versions per target), `naming` (object names and ownership
labels), `render` (pure object builders), `gateway` (the mso gateway's objects and route
table), `kube` (the API client boundary), `engine`
(`KubernetesEngine`, the CLI's RemoteEngine), `controller` (the background rollout
loop), `gatewayd` and `bridge` (processes that run inside pods). Images come from
`mso.engines.images`, shared with Swarm.
"""
