"""`user:`: which user a service's processes run as, and the checks made before a start.

Forms: `postgres`, `postgres:postgres` (a name and a group), `999` or `999:999` (numbers)
and `dynamic`: a per-service unprivileged user that mso makes when the service starts and
removes when the app goes down, like systemd's DynamicUser (`mso-APP-SERVICE`, cut to 32
characters, the longest name `useradd` takes; a system user with no home and no login).

On the embedded engine only root may start a process as another user, so there a `user:`
other than mso's own is refused at `mso up` with one line (`check_local`) rather than
failing at each replica's start; as root, a named user or group that does not exist on
this machine is refused the same way.

Swarm and Kubernetes run the container as the user (Docker's `User`, Kubernetes'
`runAsUser`/`runAsGroup`). Kubernetes takes numbers only and mso does not look inside
images, so a name is refused there (mso.spec.support); `dynamic` maps to a fixed
unprivileged uid derived from the app and service (`remote_id`), the same on every
deploy, in the range systemd keeps for dynamic users (61184-65519).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mso.spec.errors import ManifestError, combine

if TYPE_CHECKING:
    from mso.spec.loaded import LoadedManifest

DYNAMIC = "dynamic"
_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*\$?"
USER_PATTERN = re.compile(rf"^(?P<user>{_NAME}|\d+)(?::(?P<group>{_NAME}|\d+))?$")
#: The uids systemd hands to dynamic users; `remote_id` picks one of them.
DYNAMIC_FIRST, DYNAMIC_LAST = 61184, 65519
MAX_NAME = 32


@dataclass(frozen=True)
class UserRef:
    """`user:` as written: a name or number, and an optional group (name or number)."""

    user: str
    group: str | None = None

    @property
    def dynamic(self) -> bool:
        return self.user == DYNAMIC

    @property
    def numeric(self) -> bool:
        return self.user.isdigit() and (self.group is None or self.group.isdigit())


def parse_user(value: str) -> UserRef:
    """Check `user:`'s shape (ValueError with what to write instead)."""
    found = USER_PATTERN.match(value.strip())
    if found is None:
        raise ValueError(f"user {value!r}: write a user name (postgres), name:group, a "
                         "number (999), uid:gid (999:999) or `dynamic`")
    ref = UserRef(found["user"], found["group"])
    if ref.dynamic and ref.group is not None:
        raise ValueError("`dynamic` makes its own group; write `user: dynamic` alone")
    return ref


def dynamic_name(app: str, service: str) -> str:
    """The name of a service's dynamic user on the embedded engine."""
    return f"mso-{app}-{service}"[:MAX_NAME]


def remote_id(app: str, service: str) -> int:
    """The fixed uid (and gid) `dynamic` stands for on Swarm and Kubernetes."""
    span = DYNAMIC_LAST - DYNAMIC_FIRST + 1
    return DYNAMIC_FIRST + zlib.crc32(f"{app}/{service}".encode()) % span


def remote_ids(app: str, service: str, value: str) -> tuple[str, str | None]:
    """(user, group) for a container: numbers stay numbers (a uid alone is uid:uid: a
    container's files are handed to that group), names stay names (Docker resolves them
    in the image), `dynamic` is `remote_id`."""
    ref = parse_user(value)
    if ref.dynamic:
        uid = str(remote_id(app, service))
        return uid, uid
    if ref.group is None and ref.user.isdigit():
        return ref.user, ref.user
    return ref.user, ref.group


def _current() -> tuple[int, set[str]]:
    uid = os.geteuid()
    names = {str(uid)}
    try:
        names.add(pwd.getpwuid(uid).pw_name)
    except KeyError:
        pass
    return uid, names


def _local_problem(ref: UserRef) -> str | None:
    uid, mine = _current()
    if uid != 0:
        if ref.dynamic or ref.user not in mine:
            who = "a dynamic user" if ref.dynamic else f"user {ref.user!r}"
            return (f"runs as {who}, but mso runs as uid {uid}, not root: only root can "
                    "start a process as another user; run mso as root, or leave `user` out")
        if ref.group is not None and ref.group not in _own_groups():
            return (f"group {ref.group!r} is not one of mso's own groups and mso is not "
                    "root; run mso as root, or leave the group out")
        return None
    if ref.dynamic:
        return None
    if not ref.user.isdigit():
        try:
            pwd.getpwnam(ref.user)
        except KeyError:
            return (f"no user {ref.user!r} on this machine; create it (useradd --system "
                    f"{ref.user}), write a number, or use `dynamic`")
    if ref.group is not None and not ref.group.isdigit():
        try:
            grp.getgrnam(ref.group)
        except KeyError:
            return f"no group {ref.group!r} on this machine; create it, or write a number"
    return None


def _own_groups() -> set[str]:
    out: set[str] = set()
    for gid in {os.getegid(), *os.getgroups()}:
        out.add(str(gid))
        try:
            out.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            pass
    return out


def check_local(loaded: LoadedManifest) -> None:
    """Refuse (all at once, file:line) `user:` values the embedded engine cannot honour
    on this machine: another user when mso is not root, a name that does not exist."""
    errors: list[ManifestError] = []
    for name, svc in loaded.manifest.services.items():
        if svc.user is None:
            continue
        problem = _local_problem(parse_user(svc.user))
        if problem is not None:
            errors.append(loaded.error(f"services.{name}.user", problem))
    if errors:
        raise combine(errors)
