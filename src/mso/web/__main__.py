"""`python -m mso.web`: the dashboard of an app on Swarm or Kubernetes, in the foreground.

`mso dashboard` runs this (exec, so Ctrl-C and signals reach it directly) for an app
whose engine has no mso daemon to serve it. It prints the login URL as its first line,
opens a browser unless `--no-open`, and serves on 127.0.0.1 until SIGINT or SIGTERM.
The login token is made here, fresh for each run, and appears only in that URL (never in
the process's arguments): a dashboard left running is closed with the process, and
another run's links do not open it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

from mso.engines.remote import EngineOptions, remote_engine
from mso.errors import MsoError
from mso.importers import load_app
from mso.web.remote import RemoteSource
from mso.web.server import HOST, Dashboard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mso.web",
                                     description="Serve the dashboard of a Swarm or "
                                                 "Kubernetes app (mso dashboard).")
    parser.add_argument("--file", required=True, help="the app's mso.yaml")
    parser.add_argument("--engine", required=True, choices=("swarm", "kubernetes"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-open", action="store_true")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("--namespace")
    args = parser.parse_args(argv)
    try:
        loaded = load_app(Path(args.file), dict(os.environ), check_files=False)
        engine = remote_engine(args.engine, EngineOptions(
            kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace))
        source = RemoteSource(args.engine, engine, loaded)
    except MsoError as exc:
        print(f"mso: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_serve(source, args.port, not args.no_open))
    except MsoError as exc:
        print(f"mso: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()


async def _serve(source: RemoteSource, port: int, open_browser: bool) -> int:
    token = secrets.token_urlsafe(24)
    dashboard = Dashboard(source, token)
    served = await dashboard.start(port or None)
    url = f"http://{HOST}:{served}/login?token={token}"
    print(url, flush=True)
    print(f"mso: serving the {source.engine} app {source.app_name()}'s dashboard until "
          "Ctrl-C", file=sys.stderr, flush=True)
    if open_browser:
        import webbrowser
        if not await asyncio.to_thread(webbrowser.open, url):
            print("mso: no browser could be opened here; open the URL above",
                  file=sys.stderr, flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    with contextlib.suppress(Exception):
        await dashboard.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
