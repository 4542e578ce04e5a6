"""Entry point: `python -m mso.proxy --control PATH [--workers N | --supervise] [--log-json]`.

With one worker this process serves traffic itself; with N > 1 it becomes a
supervisor that starts N serving processes (SO_REUSEPORT listeners) and fans
control operations out to them.  SIGTERM stops accepting, lets in-flight
requests finish (bounded by --grace) and exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import signal
import sys
import threading

import uvloop

from .control import serve_control

log = logging.getLogger("mso.proxy")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": record.created, "level": record.levelname,
                           "logger": record.name, "msg": record.getMessage()})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m mso.proxy", description=__doc__)
    ap.add_argument("--control", required=True, help="unix socket path of the control protocol")
    ap.add_argument("--workers", type=int, default=1, help="serving processes (SO_REUSEPORT)")
    ap.add_argument("--log-json", action="store_true", help="log JSON lines on stderr")
    ap.add_argument("--access-log-sample", type=float, default=0.0,
                    help="fraction of requests logged as JSON lines on stderr")
    ap.add_argument("--grace", type=float, default=10.0,
                    help="seconds in-flight requests get after SIGTERM")
    ap.add_argument("--supervise", action="store_true",
                    help="serve through a child proxy with a spare that takes over its "
                         "listening sockets and table when it dies (mso.proxy.supervisor)")
    ap.add_argument("--state", default=None,
                    help="with --supervise: file the last route table is saved to and "
                         "loaded from at start")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _setup_logging(as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if as_json else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _watch_parent(ppid: int) -> None:
    # Workers must not outlive their supervisor (it holds the control socket).
    def loop() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != ppid:
                os.kill(os.getpid(), signal.SIGTERM)
                return
    threading.Thread(target=loop, daemon=True).start()


async def _serve_single(args: argparse.Namespace) -> None:
    from . import accesslog, native
    from .handoff import HandoffServer, path_for
    from .runtime import Runtime

    accesslog.configure(args.access_log_sample)
    # Per-request objects are freed by refcounting (no cycles on the hot path), so
    # frequent generation-0 collections are wasted work: collect far less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    runtime = Runtime(reuse_port=args.worker)
    server = await serve_control(runtime, args.control)
    handoff = None if args.worker else HandoffServer(
        runtime, path_for(args.control), asyncio.get_running_loop())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("proxy serving, control socket %s", args.control)
    (log.warning if native.BUILD_SKIPPED else log.info)(
        "per-request modules: %s", native.REASON)
    await stop.wait()
    log.info("stopping: finishing in-flight requests (grace %.1fs)", args.grace)
    server.close()
    if handoff is not None:
        handoff.close()
    await runtime.shutdown(args.grace)


async def _serve_workers(args: argparse.Namespace) -> None:
    from .workers import WorkerPool

    pool = WorkerPool(args)
    await pool.start()
    server = await serve_control(pool, args.control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await pool.stop(args.grace)


async def _serve_supervised(args: argparse.Namespace) -> None:
    from .supervisor import Supervisor

    supervisor = Supervisor(args)
    await supervisor.start()
    server = await serve_control(supervisor, args.control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("supervised proxy serving, control socket %s", args.control)
    await stop.wait()
    server.close()
    await supervisor.stop(args.grace)


def _raise_fd_limit() -> None:
    # Every client and upstream connection is a descriptor; the default soft limit
    # (often 1024) would cap a proxy far below what it can serve.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit above %d", soft)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _setup_logging(args.log_json)
    _raise_fd_limit()
    if args.worker:
        _watch_parent(os.getppid())
    serve = _serve_workers if args.workers > 1 and not args.worker else _serve_single
    if args.supervise and not args.worker:
        serve = _serve_supervised
    uvloop.run(serve(args))
    try:
        os.unlink(args.control)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
