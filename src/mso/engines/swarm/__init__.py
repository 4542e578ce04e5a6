"""The Docker Swarm engine: the same manifest on a real Swarm, with mso's gateway and canaries.

Layout: `names` (naming, labels), `spec` (release -> Swarm service JSON), `observe`
(Docker API documents -> observed state), `plan` (per-service decisions, handoffs),
`gateway` (the gateway service and its route table), `controller` (the background
reconcile loop, a RolloutHost), `ctl` (its socket protocol and launcher), `engine`
(`SwarmEngine`, what the CLI calls), `status`/`logs`/`render` (read-only commands),
`swarmapi` (the only module importing `docker`), `state` (paths and stored records).
"""
