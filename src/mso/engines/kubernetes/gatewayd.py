"""The gateway pod's main process: mso's proxy, its first table, and a TCP control relay.

`python -m mso.engines.kubernetes.gatewayd --table FILE [--token-dir DIR] --control-port N
[--state FILE]`

1. starts `python -m mso.proxy --supervise --control SOCK [--state FILE]`: a supervisor
   that holds the listening sockets and keeps a spare proxy, so a serving proxy that dies
   (even by SIGKILL) is replaced without refusing a connection (mso.proxy.supervisor);
2. unless the supervisor already serves the table it saved in `--state` (a restarted
   container: the file lives in an emptyDir, which outlives the container), loads the
   rendered table, fills in `${VAR}` placeholders from the environment (the subset
   Services' `*_SERVICE_HOST` variables) and pushes it;
3. when a token file exists, serves the control protocol on TCP: the first line a client
   sends must be `{"token": "..."}`, after which bytes are relayed to the supervisor's
   unix socket unchanged. mso's controller uses it to set weights and read metrics.
SIGTERM is passed on to the supervisor, which lets the serving proxy drain in-flight
requests. gatewayd exits with the supervisor (the kubelet then restarts the container).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


def fill_table(text: str, environ: dict[str, str]) -> dict[str, Any]:
    """The table with placeholders filled; endpoints whose variable is unset are dropped."""
    table: dict[str, Any] = json.loads(text)
    for cluster in table.get("clusters", {}).values():
        for subset in cluster.get("subsets", {}).values():
            kept = []
            for ep in subset.get("endpoints", []):
                missing = [v for v in _PLACEHOLDER.findall(ep["address"]) if v not in environ]
                if not missing:
                    ep["address"] = _PLACEHOLDER.sub(lambda m: environ[m.group(1)], ep["address"])
                    kept.append(ep)
            subset["endpoints"] = kept
    return table


async def _request(sock: str, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(sock), timeout)
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        reply: dict[str, Any] = json.loads(line)
        return reply
    finally:
        writer.close()


async def _wait_for_socket(sock: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gatewayd: the proxy exited with {proc.returncode}")
        try:
            if (await _request(sock, {"op": "ping"}, 2.0)).get("ok"):
                return
        except (OSError, ValueError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.05)
    raise SystemExit("gatewayd: the proxy's control socket never answered")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def relay_handler(sock: str, token_file: Path) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await asyncio.wait_for(reader.readline(), 10.0)
            given = str(json.loads(first).get("token", ""))
            expected = token_file.read_text().strip()
        except (ValueError, OSError, AttributeError, asyncio.TimeoutError):
            given, expected = "", "\0"
        if not expected or not hmac.compare_digest(given, expected):
            writer.write(b'{"ok": false, "error": "unauthorized"}\n')
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(sock)
        writer.write(b'{"ok": true}\n')
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    return handle


async def run(args: argparse.Namespace) -> int:
    folder = tempfile.mkdtemp(prefix="mso-gateway-")
    sock = os.path.join(folder, "control.sock")
    cmd = [sys.executable, "-m", "mso.proxy", "--supervise", "--control", sock]
    if args.state:
        Path(args.state).parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--state", args.state]
    proc = subprocess.Popen(cmd)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await _wait_for_socket(sock, proc)
    saved = int((await _request(sock, {"op": "ping"})).get("version") or 0)
    if saved:
        print(f"gatewayd: serving the saved table (version {saved})", flush=True)
    else:
        table = fill_table(Path(args.table).read_text(), dict(os.environ))
        reply = await _request(sock, {"op": "set_table", "table": table})
        print(f"gatewayd: initial table: {reply}", flush=True)
        if not reply.get("ok"):
            proc.terminate()
            raise SystemExit(f"gatewayd: the proxy rejected the table: {reply.get('error')}")
    server = None
    token_file = Path(args.token_dir) / "token"
    if token_file.exists():
        server = await asyncio.start_server(relay_handler(sock, token_file), args.bind,
                                            args.control_port)
    else:
        print("gatewayd: no control token; the control relay is off", flush=True)
    while not stop.is_set() and proc.poll() is None:
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
    if server is not None:
        server.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        await loop.run_in_executor(None, proc.wait)
    return int(proc.returncode or 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mso.engines.kubernetes.gatewayd")
    ap.add_argument("--table", required=True)
    ap.add_argument("--token-dir", default="/etc/mso/gateway-control")
    ap.add_argument("--control-port", type=int, default=8078)
    ap.add_argument("--bind", default="0.0.0.0", help="address of the control relay")
    ap.add_argument("--state", default=None,
                    help="file the supervisor saves each applied table to and serves at start")
    return asyncio.run(run(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
