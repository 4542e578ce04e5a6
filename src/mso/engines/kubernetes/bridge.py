"""A pod sidecar exposing ports that the app binds on 127.0.0.1 only.

`python -m mso.engines.kubernetes.bridge PORT...`

Apps written for the local engine often listen on 127.0.0.1:$PORT, which nothing outside
their pod can reach. For each PORT this sidecar waits until the app listens; if it
listens on loopback only, the sidecar listens on the pod's own address, same port, and
relays to 127.0.0.1 (Linux allows both binds, as the addresses differ). If the app
listens on every address itself, the sidecar does nothing for that port: binding first
would steal the port from a well-behaved app, which is why it waits.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

LOOPBACK = "0100007F"
ANY = ("00000000", "00000000000000000000000000000000")


def listeners(port: int, tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> set[str]:
    """Hex local addresses listening on `port` (state 0A) per /proc/net/tcp*."""
    found: set[str] = set()
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A":
                addr, _, hex_port = parts[1].partition(":")
                if int(hex_port, 16) == port:
                    found.add(addr)
    return found


def needs_bridge(found: set[str]) -> bool | None:
    """True: loopback only; False: the app serves every address; None: not listening yet."""
    if not found:
        return None
    return not any(a in ANY for a in found)


def pod_address() -> str:
    """The pod's IP: kubelet maps the pod's hostname to it in /etc/hosts."""
    return socket.gethostbyname(socket.gethostname())


def address_hex(address: str) -> str:
    """/proc/net/tcp's spelling of an IPv4 address (little-endian hex)."""
    return socket.inet_aton(address)[::-1].hex().upper()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _relay(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def bridge(port: int, address: str) -> asyncio.AbstractServer | None:
    while True:
        verdict = needs_bridge(listeners(port))
        if verdict is not None:
            break
        await asyncio.sleep(0.1)
    if not verdict:
        print(f"mso-bridge: port {port} is served on every address; nothing to do", flush=True)
        return None
    server = await asyncio.start_server(lambda r, w: _relay(port, r, w), address, port)
    print(f"mso-bridge: {address}:{port} -> 127.0.0.1:{port}", flush=True)
    return server


async def run(ports: list[int]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = pod_address()
    tasks = [asyncio.create_task(bridge(p, address)) for p in ports]
    await stop.wait()
    # Keep relaying while the app drains (it gets SIGTERM after its preStop sleep); the
    # pod's grace period bounds this.
    while any(listeners(p) - {address_hex(address)} for p in ports):
        await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()


def main(argv: list[str] | None = None) -> int:
    ports = [int(a) for a in (sys.argv[1:] if argv is None else argv)]
    asyncio.run(run(ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
