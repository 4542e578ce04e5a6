"""The daemon's side of container replicas (mso.daemon.containers): which services are
containers, a new image is a new release (recorded per release), and what one replica's
container gets; plus the manifest rule that lets a service leave `run:` out."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from mso.daemon import containers
from mso.releases.apply import AppliedChange
from mso.spec.errors import ManifestError
from mso.spec.load import LoadedManifest, load_manifest
from mso.store.db import Store
from mso.store.records import Desired, ReplicaRecord

SPEC = {"kind": "service", "model": {"build": {"context": "web"}}}


def test_which_services_are_containers() -> None:
    assert containers.is_container({"image": "redis"})
    assert containers.is_container({"build": {"context": "."}, "run": None})
    assert not containers.is_container({"image": "redis", "run": ["redis-server"]})
    assert not containers.is_container({"run": ["python3", "app.py"]})


def _unchanged(store: Store) -> list[AppliedChange]:
    latest = store.latest_release("web")
    assert latest is not None
    return [AppliedChange("web", latest.number, False, "unchanged")]


def test_a_rebuilt_image_is_a_new_release_and_each_release_keeps_its_image(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.add_release("web", "h1", SPEC, {}, "me", "initial release")
    store.set_desired(Desired("web", "service", 1, 2, 2))
    containers.record_builds(store, [AppliedChange("web", 1, True, "initial release")],
                             {"web": "mso/a-web:1"})
    assert containers.image_of(store, "web", 1) == "mso/a-web:1"
    assert containers.record_builds(store, _unchanged(store), {"web": "mso/a-web:1"}) == \
        _unchanged(store)  # the same build: no release
    changes = containers.record_builds(store, _unchanged(store), {"web": "mso/a-web:2"})
    assert changes == [AppliedChange("web", 2, True, "new image mso/a-web:2")]
    assert store.desired()["web"].release == 2
    assert containers.image_of(store, "web", 2) == "mso/a-web:2"
    assert containers.image_of(store, "web", 1) == "mso/a-web:1"  # what a rollback runs


def test_a_replicas_container(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.set_meta(containers.IMAGES_KEY, '{"web": {"3": "mso/a-web:abc"}}')
    record = ReplicaRecord(id="web-2", service="web", ordinal=2, release=3, subset="stable",
                           state="PENDING", pid=None, start_time=None,
                           ports={"http": 31000, "admin": 31001}, spec_hash="f" * 64)
    model = {"build": {"context": "web"}, "ports": {"http": {"port": 8000, "protocol": "http"},
                                                    "admin": {"port": 9000, "protocol": "tcp"}},
             "resources": {"cpu": 1.5, "memory": 1024}}
    spec = containers.container_spec(
        store=store, model=model, instance="i1", app="shop", record=record,
        env_names=["PORT", "B"], secrets_dir=tmp_path / "s", config_dir=tmp_path / "c",
        data_dir=tmp_path / "d", stop_signal=signal.SIGQUIT, stop_grace=3.0)
    assert spec.name == "mso-i1-web-2" and spec.image == "mso/a-web:abc"
    assert spec.publish == {31000: 8000, 31001: 9000}  # the replica's port -> the declared one
    assert spec.labels == {"io.mso.instance": "i1", "io.mso.app": "shop",
                           "io.mso.service": "web", "io.mso.replica": "web-2",
                           "io.mso.release": "3", "io.mso.spec-hash": "f" * 64}
    assert [(m.target, m.read_only) for m in spec.mounts] == [
        ("/run/secrets", True), ("/run/mso/config", True), ("/var/lib/mso/data", False)]
    assert (spec.cpu, spec.memory, spec.stop_signal) == (1.5, 1024, signal.SIGQUIT)
    assert spec.env_names == ("B", "PORT")


def _load(tmp_path: Path, text: str) -> LoadedManifest:
    (tmp_path / "mso.yaml").write_text(text)
    return load_manifest(tmp_path / "mso.yaml", {})


def test_run_may_be_left_out_only_with_an_image(tmp_path: Path) -> None:
    ok = _load(tmp_path, "app: a\nservices:\n  web:\n    image: nginx\n")
    assert ok.manifest.services["web"].run is None
    with pytest.raises(ManifestError, match=r"services.web.run: required key is missing: give "
                                            r"`run:` \(a command\), or `image:`/`build:`"):
        _load(tmp_path, "app: a\nservices:\n  web:\n    env: {A: b}\n")
    job = _load(tmp_path, "app: a\njobs:\n  migrate:\n    image: migrations\n")
    assert job.manifest.jobs["migrate"].run is None  # a container job: the image's command
    with pytest.raises(ManifestError, match=r"jobs.migrate.run: required key is missing"):
        _load(tmp_path, "app: a\njobs:\n  migrate:\n    env: {A: b}\n")
    with pytest.raises(ManifestError, match=r"jobs.migrate.cwd: a container job"):
        _load(tmp_path, "app: a\njobs:\n  migrate:\n    image: m\n    cwd: sub\n")


def test_the_bridge_gateway_with_and_without_docker_writing_it() -> None:
    from mso.daemon.containers import gateway_of
    assert gateway_of("172.17.0.1,172.17.0.0/16 ") == "172.17.0.1"
    # newer dockerd: the default bridge's IPAM config has the subnet only
    assert gateway_of(",172.17.0.0/16 ") == "172.17.0.1"
    assert gateway_of(",fd00::/64 ,10.9.0.0/24 ") == "10.9.0.1"
    assert gateway_of("") is None and gateway_of(",bogus ") is None
