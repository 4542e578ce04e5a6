"""The in-container entrypoint of images mso generates (standard library only).

mso copies this file into its base image as /opt/mso/shim.py. It is PID 1 of every task
of a `run:` service and does what the local engine does around a replica:

- `run --ports 8000,8001 [--secret-env VAR=name ...] -- ARGV...`: start ARGV, forward
  SIGTERM/SIGINT to it and exit with its code. Apps written for the local engine bind
  127.0.0.1:$PORT, which other containers cannot reach, so once the app listens there the
  shim forwards the container's own (non-loopback) addresses on the same port to it. An
  app that binds 0.0.0.0 already owns those addresses; the shim then does nothing.
  Secrets with `as_env` are read from their files here, so their values never appear in
  the Swarm service spec.
- `probe http PORT PATH TIMEOUT` / `probe tcp PORT TIMEOUT`: a Docker healthcheck that
  needs no curl in the image; exit 0 when healthy.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

SECRETS_DIR = "/run/secrets"


def local_addresses() -> list[str]:
    """The container's IPv4 addresses other than loopback (from /proc, no ioctls)."""
    found: list[str] = []
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for i, line in enumerate(lines):
        if "/32 host LOCAL" in line and i > 0:
            addr = lines[i - 1].split()[-1]
            if not addr.startswith("127.") and addr not in found:
                found.append(addr)
    return found


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


def _forwarder(port: int) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    return handle


async def _forward(ports: list[int], stop: threading.Event) -> None:
    pending = list(ports)
    servers = []
    while pending and not stop.is_set():
        for port in list(pending):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
            except OSError:
                continue  # not listening yet
            pending.remove(port)
            for addr in local_addresses():
                try:
                    servers.append(await asyncio.start_server(
                        _forwarder(port), addr, port, reuse_address=True))  # type: ignore[arg-type]
                except OSError:
                    pass  # the app bound 0.0.0.0: it is reachable already
        await asyncio.sleep(0.1)
    while not stop.is_set():
        await asyncio.sleep(0.5)


def _secret_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        var, _, name = pair.partition("=")
        try:
            with open(os.path.join(SECRETS_DIR, name), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        env[var] = text[:-1] if text.endswith("\n") else text
    return env


def run(args: list[str]) -> int:
    ports: list[int] = []
    secret_pairs: list[str] = []
    while args and args[0] != "--":
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--ports":
            ports = [int(p) for p in value.split(",") if p]
        elif flag == "--secret-env":
            secret_pairs.append(value)
    argv = args[1:]
    env = dict(os.environ)
    env.update(_secret_env(secret_pairs))
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as exc:
        # What a shell says and exits with: 127 not found, 126 found but not runnable.
        # The line is the replica's last log line; the code tells mso it never started.
        print(f"mso: cannot start {argv[0] if argv else '(nothing)'}: {exc.strerror}",
              file=sys.stderr, flush=True)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(_forward(ports, stop)), daemon=True)
    thread.start()
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    stop.set()
    return code if code >= 0 else 128 - code


def probe(args: list[str]) -> int:
    """Exit 0 when healthy; otherwise print why (Docker keeps it as the check's output,
    which `mso ps` shows as the reason)."""
    kind, port = args[0], int(args[1])
    try:
        if kind == "http":
            path, timeout = args[2], float(args[3])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                            timeout=timeout) as r:
                    status = r.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if 200 <= status < 400:
                return 0
            print(f"HTTP GET {path} returned {status}")
            return 1
        with socket.create_connection(("127.0.0.1", port), timeout=float(args[2])):
            return 0
    except Exception as exc:
        reason = getattr(exc, "reason", None) or exc
        what = f"HTTP GET {args[2]}" if kind == "http" else "TCP connect"
        print(f"{what} on port {port} failed: {reason}")
        return 1


def main(argv: list[str]) -> int:
    if argv and argv[0] == "run":
        return run(argv[1:])
    if argv and argv[0] == "probe":
        return probe(argv[1:])
    print("usage: shim.py run|probe ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
