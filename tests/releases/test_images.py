"""New code with an unchanged manifest is a new release on Kubernetes too, through the
same rule as on Swarm (mso.releases.images), kept in Kubernetes' own image record."""

from __future__ import annotations

from pathlib import Path

from mso.engines.kubernetes import state
from mso.engines.kubernetes.deploy import BUILT_KEY
from mso.releases.apply import AppliedChange
from mso.releases.images import record_builds
from mso.store.db import Store
from mso.store.records import Desired

SPEC = {"kind": "service", "model": {}}


def _deploy(store: Store, changes: list[AppliedChange], image: str) -> list[AppliedChange]:
    return record_builds(store, changes, {"web": image},
                         image_of=lambda s, r: state.image_of(store, s, r),
                         record=lambda s, r: state.set_image(store, s, r, image),
                         built_key=BUILT_KEY)


def _unchanged(store: Store) -> list[AppliedChange]:
    latest = store.latest_release("web")
    assert latest is not None
    return [AppliedChange("web", latest.number, False, "unchanged")]


def test_kubernetes_gets_a_new_release_for_new_code(tmp_path: Path) -> None:
    store = Store(tmp_path / "k8s.db")
    store.add_release("web", "h1", SPEC, {}, "me", "initial release")
    store.set_desired(Desired("web", "service", 1, 2, 2))
    _deploy(store, [AppliedChange("web", 1, True, "initial release")], "mso/a-web:1")
    assert state.image_of(store, "web", 1) == "mso/a-web:1"
    assert _deploy(store, _unchanged(store), "mso/a-web:1") == _unchanged(store)
    changes = _deploy(store, _unchanged(store), "mso/a-web:2")
    assert changes == [AppliedChange("web", 2, True, "new image mso/a-web:2")]
    assert store.desired()["web"].release == 2
    assert state.image_of(store, "web", 2) == "mso/a-web:2"
    assert state.image_of(store, "web", 1) == "mso/a-web:1"
