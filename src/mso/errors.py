"""The tree of errors mso raises on purpose, and what each kind means for the caller.

Every error mso raises deliberately derives from `MsoError`, through one of five kinds
that say whether trying again can help and how the boundaries translate them:

| kind          | meaning                                            | retry | CLI exit | HTTP |
|---------------|----------------------------------------------------|-------|----------|------|
| `UsageError`  | the input is wrong: a manifest, a flag, a request  | no    | 2        | 422  |
| `NotFound`    | it names something that does not exist            | no    | 1        | 404  |
| `Conflict`    | not now: the state forbids it (no rollout to        | after | 1        | 409  |
|               | promote, another daemon holds the app)             | change|          |      |
| `Unavailable` | something mso needs did not answer (daemon, proxy, | yes   | 1        | 503  |
|               | engine API): the same call may work later          |       |          |      |
| `Failed`      | it was carried out and did not work (a start-up,   | no    | 1        | 500  |
|               | a deploy, a rollout that rolled back)              |       |          |      |

Boundaries translate: the CLI (`mso.cli.main.main`) prints one line (plus a report for a
`Failed` with evidence) and exits with `exit_code`; the API (`mso.api.app`) answers
`{"error": message}` with `http_status`; the proxy's control socket answers `{"ok":
false, "error": ...}`. Errors of libraries (OSError, httpx, docker, kubernetes) are caught
where they happen and re-raised as one of these kinds with a sentence a user can act on;
anything else reaching a boundary is a bug, shown as `internal error` (never a
traceback in the CLI).

This module imports nothing from mso, so every layer may use it.
"""

from __future__ import annotations


class MsoError(Exception):
    """Base of every error mso raises on purpose (see the module docstring)."""

    #: Whether the same call, unchanged, may succeed later.
    retry: bool = False
    #: What the CLI exits with.
    exit_code: int = 1
    #: What the REST API answers with.
    http_status: int = 500


class UsageError(MsoError):
    """The input is wrong (a manifest, a flag, a request body): fix it, then retry."""

    exit_code = 2
    http_status = 422


class NotFound(MsoError):
    """The call names a service, release or rollout that does not exist."""

    http_status = 404


class Conflict(MsoError):
    """Not now: the current state forbids it (retry once the state changed)."""

    http_status = 409


class Unavailable(MsoError):
    """Something mso needs did not answer; the same call may work later."""

    retry = True
    http_status = 503


class Failed(MsoError):
    """The operation was carried out and did not work."""

    http_status = 500
