"""`mso rollback` on Kubernetes: a new release equal to an older one, rolled out plainly.

The target is chosen by the rule of every engine (mso.releases.rollback: a release is its
spec and its image); an active rollout is aborted first.
"""

from __future__ import annotations

from mso.engines.kubernetes import state
from mso.engines.kubernetes.host import KubeHost
from mso.releases.rollback import rollback_target
from mso.store.hold import hold
from mso.store.records import Desired, Release


def rollback(host: KubeHost, service: str, to: int | None) -> int:
    """Under a hold: a running controller must not see the new release before its
    rolling update has begun."""
    with hold(host.store):
        return _rollback(host, service, to)


def _rollback(host: KubeHost, service: str, to: int | None) -> int:
    store = host.store
    want = store.desired().get(service)
    if want is None or want.kind != "service":
        raise KeyError(f"no service named {service!r}")
    current = store.release(service, want.release)
    assert current is not None
    target = rollback_target(store.releases(service), current, to,
                             lambda number: state.image_of(store, service, number))
    if host.rollouts.active(service) is not None:
        host.rollouts.abort(service)
        want = store.desired()[service]
    secrets = store.release_secrets(service, target.number)
    new = store.add_release(service, target.spec_hash, target.spec, secrets, "mso",
                            f"rollback to release {target.number}")
    image = state.image_of(store, service, target.number)
    if image is not None:
        state.set_image(store, service, new.number, image)
    store.set_desired(Desired(service, "service", new.number, want.replicas,
                              want.manifest_replicas))
    store.add_event("release.created", f"release {new.number}: rollback to release "
                    f"{target.number}", service,
                    data={"release": new.number, "rollback_to": target.number})
    host.rollouts.begin(service, want.release, new.number, strategy="rolling")
    return new.number
