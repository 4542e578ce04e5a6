"""The error tree (mso.errors): every deliberate error is one of five kinds, and the
boundaries translate each kind the same way."""

from __future__ import annotations

import inspect
import pkgutil
from importlib import import_module

import mso
from mso.errors import Conflict, Failed, MsoError, NotFound, Unavailable, UsageError

KINDS = (UsageError, NotFound, Conflict, Unavailable, Failed)
# Raised and caught inside one module, never reaching a boundary (documented there).
INTERNAL = {"LocatedError", "InterpolationError", "IllegalTransition", "SpawnError", "Reject",
            "SnapshotError", "VersionError", "ControlError", "_Inconclusive",
            "ShimFlagError",  # ShimFlagError: the in-container shim is stdlib-only
            "Refused"}  # mso.proxy.limits: raised in llhttp callbacks, answered as Reject is


def test_every_error_class_of_mso_is_of_one_kind() -> None:
    found = []
    for info in pkgutil.walk_packages(mso.__path__, "mso."):
        if info.name.endswith("__main__"):
            continue
        module = import_module(info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ != module.__name__ or not issubclass(obj, Exception):
                continue
            found.append(name)
            if name in INTERNAL or obj in (MsoError, *KINDS):
                continue
            assert issubclass(obj, MsoError), f"{info.name}.{name} is outside mso.errors"
            assert any(issubclass(obj, kind) for kind in KINDS), f"{name} has no kind"
    assert {"ManifestError", "RolloutError", "RemoteEngineError", "CliError"} <= set(found)


def test_kinds_say_whether_to_retry_and_how_to_translate() -> None:
    assert [k.exit_code for k in KINDS] == [2, 1, 1, 1, 1]
    assert [k.http_status for k in KINDS] == [422, 404, 409, 503, 500]
    assert [k.retry for k in KINDS] == [False, False, False, True, False]
