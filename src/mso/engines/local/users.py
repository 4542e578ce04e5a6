"""Who a replica runs as: resolving `user:` and mso's dynamic users.

mso drops privileges itself, in the child between fork and exec (process.spawn:
setgroups, setgid, setuid, after joining the cgroup, which needs root), so the server is
mso's direct child: no `runuser`/`sudo` between mso's stop signal and the server, and a
`kill -9` of the daemon leaves nothing of mso's in the process tree.

`dynamic` (like systemd's DynamicUser): a system user and group of the same name
(`mso-APP-SERVICE`, cut to 32 characters), no home, no login shell, made with `useradd`
when a replica of the service starts and removed with `userdel` when the app goes down.
Its comment (GECOS) marks it as mso's; a user of that name without the mark is never
used nor removed (it belongs to someone else). Files it leaves in the service's data
folder keep its uid; the next start (a new user may get another uid) hands the folder
to the new uid again, as systemd does.

Errors: `UserUnavailable` (a Failed): the user cannot be found or made; the replica
does not start and says why.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mso.errors import Failed
from mso.spec.users import UserRef

#: The GECOS mark of a dynamic user.
MARK = "mso dynamic user"
NOLOGIN = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if Path(s).exists()),
               "/bin/false")


class UserUnavailable(Failed):
    """The user a service runs as cannot be found or made."""


@dataclass(frozen=True)
class RunAs:
    """The identity a replica's process takes before exec."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str

    def env(self) -> dict[str, str]:
        """What a login as this user would set (runuser does the same)."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def resolve(ref: UserRef, dynamic_name: str) -> RunAs:
    """The RunAs for `user:` (creating the dynamic user when needed)."""
    if ref.dynamic:
        made = ensure_dynamic(dynamic_name)
        return RunAs(made.pw_uid, made.pw_gid, (made.pw_gid,), made.pw_name, "/")
    entry = _passwd(ref.user)
    if entry is None and not ref.user.isdigit():
        raise UserUnavailable(f"no user {ref.user!r} on this machine")
    uid = int(ref.user) if entry is None else entry.pw_uid
    name = ref.user if entry is None else entry.pw_name
    home = "/" if entry is None else entry.pw_dir
    if ref.group is not None:
        gid = _gid(ref.group)
        groups: tuple[int, ...] = (gid,)
    elif entry is not None:
        gid = entry.pw_gid
        groups = tuple(os.getgrouplist(entry.pw_name, gid))  # e.g. postgres: ssl-cert
    else:
        gid, groups = uid, (uid,)
    return RunAs(uid, gid, groups, name, home)


def _passwd(user: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        return None


def _gid(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UserUnavailable(f"no group {group!r} on this machine") from None


def ensure_dynamic(name: str) -> pwd.struct_passwd:
    """The dynamic user `name`, made if missing (a system user with a group of its own)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
              "/nonexistent", "--shell", NOLOGIN, "--comment", MARK, name], name)
        entry = pwd.getpwnam(name)
    if entry.pw_gecos != MARK:
        raise UserUnavailable(f"user {name!r} exists and is not one of mso's dynamic users; "
                              "remove it, or give the service a `user:` of its own")
    return entry


def remove_dynamic(name: str) -> bool:
    """Remove the dynamic user `name` (and its group); False if it is not mso's."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return False
    if entry.pw_gecos != MARK:
        return False
    _run(["userdel", name], name)
    return True


def _run(argv: list[str], name: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserUnavailable(f"{argv[0]} {name}: {exc}") from exc
    if done.returncode != 0:
        raise UserUnavailable(f"{argv[0]} {name} failed: {done.stderr.strip()}")


def hand_over(path: Path, who: RunAs, mode: int) -> None:
    """`path` (a file or folder) owned by `who` with `mode`; a folder's content too when
    it still belongs to someone else (a data folder of an earlier dynamic uid)."""
    st = path.lstat()
    if (st.st_uid, st.st_gid) != (who.uid, who.gid) and path.is_dir():
        for root, dirs, files in os.walk(path):
            for item in (*dirs, *files):
                os.lchown(os.path.join(root, item), who.uid, who.gid)
    os.lchown(path, who.uid, who.gid)
    os.chmod(path, mode)
