"""`gateway.tls` in the route table when the gateway reads copies of the files elsewhere
(Swarm): the paths are the copies', the rev the originals', and the names are read here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mso.controllers.routing import gateway_tls
from mso.proxy.table import parse_table


def test_a_gateway_elsewhere_gets_the_copies_paths_and_the_names(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "mso", "certs", "app.test", "--out", str(tmp_path)],
                   cwd=tmp_path, env=dict(os.environ, MSO_CA_DIR=str(tmp_path / "ca")),
                   check=True, capture_output=True, timeout=60)
    cert, key = str(tmp_path / "gateway.pem"), str(tmp_path / "gateway-key.pem")
    raw = {"port": 8443, "certificates": [{"cert": cert, "key": key}]}
    here = gateway_tls(raw)
    assert here is not None and here.names == [] and here.certificates[0][:2] == (cert, key)
    there = gateway_tls(raw, [("/run/mso/tls/0.crt", "/run/mso/tls/0.key")])
    assert there is not None
    assert there.certificates[0][:2] == ("/run/mso/tls/0.crt", "/run/mso/tls/0.key")
    assert there.certificates[0][2] == here.certificates[0][2]  # the originals' rev
    assert "app.test" in there.names[0]
    entry = there.table()["certificates"][0]
    assert "app.test" in entry["names"] and "BEGIN" not in str(entry)
    table = parse_table({"version": 1, "listeners": [
        {"name": "gateway-tls", "bind": "127.0.0.1", "port": 8443, "mode": "http",
         "routes": [], "tls": there.table()}], "clusters": {}})
    assert "app.test" in table.listeners[0].tls.certs[0].names  # type: ignore[union-attr]
