"""Which release `mso rollback` returns to: one rule for every engine.

Like Heroku, a rollback is a new release carrying an older release's spec and secrets
(and image), rolled out with a rolling update. The default target is the newest earlier
release that differs from the running one and did not fail or get rolled back; a target
identical to the running release is refused, which stops endless revert loops (as Nomad
does).

"Identical" means the same release identity: its spec hash and, where an engine ships
code in images (Swarm, Kubernetes, containers), the image recorded for it. Two releases
with one manifest and different code are different releases (mso.releases.images), so a
rollback from new code to old code with an unchanged manifest is allowed on every engine,
and a rollback to the very image that runs is refused everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mso.errors import Conflict, NotFound
from mso.store.records import Release

#: The image recorded for a release of the service (by number), or None.
ReleaseImage = Callable[[int], object]


class NothingToRollBack(Conflict):
    """No earlier release differs from the running one, or the one asked for is it."""


class NoSuchRelease(NotFound):
    """`--to N` names a release that is not kept."""


def rollback_target(releases: Sequence[Release], current: Release, to: int | None,
                    image_of: ReleaseImage = lambda number: None) -> Release:
    """The release to roll back to (see the module docstring); `releases` oldest first."""
    def identity(release: Release) -> tuple[str, object]:
        return release.spec_hash, image_of(release.number)

    if to is None:
        older = [r for r in releases if r.number < current.number
                 and identity(r) != identity(current)
                 and r.outcome not in ("rolled back", "failed")]
        if not older:
            raise NothingToRollBack(f"{current.service} has no earlier release to roll "
                                    "back to")
        return older[-1]
    found = next((r for r in releases if r.number == to), None)
    if found is None:
        kept = ", ".join(str(r.number) for r in releases)
        raise NoSuchRelease(f"{current.service} has no release {to} (kept: {kept})")
    if identity(found) == identity(current):
        raise NothingToRollBack(
            f"release {found.number} of {current.service} is identical to the running "
            f"release {current.number} (spec {current.spec_hash[:12]}); nothing to roll back")
    return found
