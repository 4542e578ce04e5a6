"""A real Prometheus for tests: Debian's `prometheus` binary on a free loopback port.

It scrapes an app's replicas through file-based service discovery: `TargetSync` reads
the replicas from `mso ps -o json` (any callable returning its `replicas`) and writes one
target per replica with the label `subset` (stable/canary) that mso gives it, the way a
user's service discovery would label them. The config and the TSDB live in the test's
tmp_path; readiness is waited for on `/-/ready`, and data on the query API, never with a
fixed sleep.

Without the binary (`apt-get install prometheus`, in scripts/setup.sh) the test is
skipped with that reason, which pytest reports in its summary: it never passes silently.
Prometheus applies service-discovery changes at most every 5 s, so a new replica is
scraped some seconds after it starts; tests wait for its series to appear.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.harness import free_port, wait_for

CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: app
    scrape_interval: 1s
    scrape_timeout: 900ms
    file_sd_configs:
      - files: [{targets}]
        refresh_interval: 1s
"""


def binary() -> str:
    """The prometheus binary, or a loud skip saying how to get it."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if found is None:
        pytest.skip("SKIPPED LOUDLY: no `prometheus` binary: install Debian's package "
                    "(scripts/setup.sh does: apt-get install prometheus); the providers' "
                    "end-to-end test needs a real Prometheus")
    return found


class Prometheus:
    """One Prometheus process with its own config, targets file and storage."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = folder / "targets.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.set_targets([])
        config = self.folder / "prometheus.yml"
        config.write_text(CONFIG.format(targets=json.dumps(str(self.targets))))
        log = open(self.folder / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={self.folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_for(self._ready, timeout=60, message=f"prometheus ready on {self.url}\n"
                                                  f"{self.log()}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log()}")
        return self._get("/-/ready")[0] == 200

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def _get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        except OSError:
            return 0, ""
        finally:
            conn.close()

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to (empty when it has no data)."""
        status, body = self._get("/api/v1/query?query=" + quote(promql))
        if status != 200:
            return []
        return list(json.loads(body)["data"]["result"])

    def set_targets(self, groups: list[dict[str, Any]]) -> None:
        """Replace the scraped targets (atomically: Prometheus watches the file)."""
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets)


class TargetSync:
    """Keeps Prometheus' targets equal to the app's replicas, labelled by subset."""

    def __init__(self, prometheus: Prometheus, replicas: Callable[[], list[dict[str, Any]]],
                 port_name: str = "http") -> None:
        self.prometheus = prometheus
        self.replicas = replicas
        self.port_name = port_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.written: list[dict[str, Any]] = []

    def groups(self) -> list[dict[str, Any]]:
        out = []
        for r in self.replicas():
            port = (r.get("ports") or {}).get(self.port_name)
            if port and r.get("state") in ("READY", "RUNNING"):
                out.append({"targets": [f"127.0.0.1:{port}"],
                            "labels": {"subset": str(r["subset"]), "replica": str(r["replica"])}})
        return sorted(out, key=lambda g: str(g["targets"]))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                groups = self.groups()
            except Exception:  # the CLI may fail while the app changes; try again
                groups = self.written
            if groups != self.written:
                self.prometheus.set_targets(groups)
                self.written = groups
            self._stop.wait(0.5)

    def __enter__(self) -> TargetSync:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@contextmanager
def running_prometheus(folder: Path) -> Iterator[Prometheus]:
    prometheus = Prometheus(folder)
    try:
        prometheus.start()
        yield prometheus
    finally:
        prometheus.stop()


def wait_for_series(prometheus: Prometheus, promql: str, timeout: float = 60.0) -> None:
    wait_for(lambda: prometheus.query(promql), timeout=timeout,
             message=f"prometheus to have {promql}")


__all__ = ["Prometheus", "TargetSync", "running_prometheus", "wait_for_series"]
