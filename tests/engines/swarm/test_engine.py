"""Deploy-time checks of the Swarm engine that need no Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from mso.engines.swarm.engine import preview_ports
from mso.spec import ManifestError
from mso.spec.load import load_manifest

MANIFEST = """app: bg
gateway: {port: 8080}
services:
  a:
    run: [python3, a.py]
    ports: {http: 8000}
    rollout: {strategy: blue_green, preview_port: PA}
  b:
    run: [python3, b.py]
    ports: {http: 8000}
    rollout: {strategy: blue_green, preview_port: PB}
  c:
    run: [python3, c.py]
    ports: {http: 8000}
    rollout: {strategy: rolling, preview_port: 9999}
"""


def _load(tmp_path: Path, pa: int, pb: int):  # type: ignore[no-untyped-def]
    path = tmp_path / "mso.yaml"
    path.write_text(MANIFEST.replace("PA", str(pa)).replace("PB", str(pb)))
    return load_manifest(path, {}, check_files=False)


def test_blue_green_preview_ports_are_published_sorted(tmp_path: Path) -> None:
    assert preview_ports(_load(tmp_path, 9100, 9090)) == [9090, 9100]


@pytest.mark.parametrize(("pa", "pb", "clash"), [(9090, 9090, "used by service 'a'"),
                                                 (8080, 9090, "used by the gateway")])
def test_a_preview_port_used_twice_is_refused_when_loading(tmp_path: Path, pa: int, pb: int,
                                                           clash: str) -> None:
    # The manifest itself is refused (every engine), naming file, line and field.
    with pytest.raises(ManifestError, match=clash) as err:
        _load(tmp_path, pa, pb)
    assert "mso.yaml:" in str(err.value) and "rollout.preview_port" in str(err.value)
