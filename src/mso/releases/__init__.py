"""The engine-neutral core of releases: what every engine shares.

Turning a manifest into immutable numbered releases and desired state (`apply`), the
drift between the manifest and what runs, and a release's named ports (`ports`). The
local daemon, the Swarm and the Kubernetes engines all use these; nothing here knows an
engine. Layer: above `mso.spec` and `mso.store`, below controllers and engines
(the import contract in pyproject.toml).
"""
