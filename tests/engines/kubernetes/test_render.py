"""Rendering: the shop and a manifest using every feature, validated strictly per version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from mso.engines.images import SHIM_PATH, supervision
from mso.engines.kubernetes import document, naming
from mso.engines.kubernetes.engine import KubernetesEngine
from mso.engines.kubernetes.versions import api_versions
from mso.engines.remote import EngineOptions
from mso.spec.load import LoadedManifest, load_manifest

ROOT = Path(__file__).resolve().parents[3]
SHOP = ROOT / "examples" / "shop" / "mso.yaml"
FULL = Path(__file__).parent / "fixtures" / "full" / "mso.yaml"
VERSIONS = ["1.25", "1.29", kubernetes_validate.latest_version()]
IMAGES = document.Images("mso-runtime:test", "mso-app:test", {"store": "mso-full-store:test"})


def load(path: Path) -> LoadedManifest:
    return load_manifest(path, {"FULL_OTHER_SECRET": "value"})


def objects(path: Path, version: str) -> list[dict[str, Any]]:
    loaded = load(path)
    return document.manifest_objects(loaded, api_versions(version), IMAGES, {},
                                     document.namespace_of(loaded))


def strict_errors(objs: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    full = version if version.count(".") == 2 else version + ".0"
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, full, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError,
                kubernetes_validate.InvalidSchemaError) as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {type(exc).__name__} {exc}")
    return errors


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("manifest", [SHOP, FULL], ids=["shop", "full"])
def test_rendered_objects_pass_strict_validation(manifest: Path, version: str) -> None:
    objs = objects(manifest, version)
    assert objs and strict_errors(objs, version) == []


def test_validation_catches_an_unknown_field() -> None:
    objs = objects(SHOP, "1.29")
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    assert strict_errors([deployment], "1.29")


def test_policy_v1beta1_is_rendered_for_1_20_and_fails_on_1_25() -> None:
    objs = objects(SHOP, "1.20")
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    assert {p["apiVersion"] for p in pdbs} == {"policy/v1beta1"}
    assert strict_errors(pdbs[:1], "1.25")  # removed in 1.25: SchemaNotFoundError counts


def test_api_versions_follow_the_target() -> None:
    assert api_versions("1.20").pdb == "policy/v1beta1"
    assert api_versions("1.21").pdb == "policy/v1"
    assert api_versions("1.20").hpa == "autoscaling/v2beta2"
    assert api_versions("v1.29.3").hpa == "autoscaling/v2"


def test_every_service_has_its_objects_and_owner_labels() -> None:
    objs = objects(SHOP, "1.29")
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for svc in ("web", "orders", "inventory", "payments", "kvstore"):
        assert {("Deployment", svc), ("Service", svc), ("Service", f"{svc}-stable"),
                ("Service", f"{svc}-canary"), ("PodDisruptionBudget", svc)} <= names
    assert ("Deployment", naming.GATEWAY) in names and ("Namespace", "shop") in names
    assert ("Job", "migrate-r1") in names
    for obj in objs:
        assert naming.is_owned(obj["metadata"]["labels"], "shop"), obj["metadata"]["name"]


def test_deployment_carries_release_spec_hash_probes_and_grace() -> None:
    loaded = load(FULL)
    objs = objects(FULL, "1.29")
    web = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "web")
    template = web["spec"]["template"]
    assert template["metadata"]["labels"][naming.RELEASE] == "1"
    assert template["metadata"]["annotations"][naming.SPEC_HASH] == loaded.spec_hash("web")
    app = template["spec"]["containers"][0]
    assert app["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000}
    assert app["readinessProbe"]["successThreshold"] == 2
    # Under the shim: it runs the startup and liveness probes and restarts the process;
    # the kubelet's startupProbe asks it whether startup passed, and never fails the pod.
    assert app["startupProbe"]["exec"]["command"] == supervision.STATUS_CHECK
    assert app["startupProbe"]["failureThreshold"] >= 10**6
    assert "livenessProbe" not in app
    assert app["resources"]["limits"] == {"cpu": "500m", "memory": str(256 * 2**20)}
    assert app["command"][:3] == ["python3", SHIM_PATH, "run"]
    shim = app["command"][app["command"].index("--") + 1:]
    assert shim[:2] == ["/bin/sh", "-c"]
    flags = app["command"][3:app["command"].index("--")]
    assert flags[flags.index("--stop-signal") + 1] == "SIGINT"
    assert flags[flags.index("--forward") + 1] == "no"  # the bridge sidecar relays
    assert sum(1 for f in flags if f == "--probe") == 3
    assert template["spec"]["terminationGracePeriodSeconds"] == 7 + 2
    assert web["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    env = {e["name"]: e for e in app["env"]}
    assert env["LITERAL"]["value"] == "keep $$(THIS) literal"
    assert env["LEVEL"]["value"] == "debug"
    assert env["TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert env["API_URL"]["value"] == "http://$(API_SERVICE_HOST):8001"
    assert env["STORE_URL"]["value"] == "tcp://$(STORE_SERVICE_HOST):6390"
    assert "SETUP_URL" not in env


def test_no_hpa_config_and_secret_for_autoscaled_service() -> None:
    objs = objects(FULL, "1.29")
    # mso's own autoscaler sizes it (the controller): an HPA would fight it.
    assert not any(o["kind"] == "HorizontalPodAutoscaler" for o in objs)
    secret = next(o for o in objs if o["kind"] == "Secret")
    assert set(secret["data"]) == {"token", "other"}
    kinds = [o["kind"] for o in objs]
    assert kinds.index("Service") < kinds.index("Deployment")  # service variables first


def test_stable_address_selects_the_gateway() -> None:
    objs = objects(SHOP, "1.29")
    orders = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "orders")
    assert orders["spec"]["selector"] == naming.gateway_selector("shop")
    assert orders["spec"]["ports"][0]["port"] == 8001


def test_render_cli_path_writes_files_and_yaml(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(SHOP.parent, shop, ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    engine = KubernetesEngine(EngineOptions(version="1.29"))
    loaded = load(shop / "mso.yaml")
    text = engine.render(loaded, None)
    assert isinstance(text, str)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert strict_errors(docs, "1.29") == []
    written = engine.render(loaded, tmp_path / "out")
    assert isinstance(written, list) and len(written) == len(docs)


def test_render_rejects_a_bad_version_as_bad_usage() -> None:
    with pytest.raises(click.UsageError):
        KubernetesEngine(EngineOptions(version="2.0")).render(load(SHOP), None)


@pytest.mark.parametrize("version", ["9.1", "1.15"])
def test_render_of_an_unsupported_version_exits_2_with_one_line(version: str) -> None:
    done = subprocess.run([sys.executable, "-m", "mso", "render", "--engine", "kubernetes",
                           "--version", version, "--dev", "--file", str(SHOP)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    # (the shop's `watch:` keys: one note each, --dev)
    lines = [line for line in done.stderr.strip().splitlines() if not line.endswith("(--dev)")]
    assert len(lines) == 1 and "--version" in lines[0] and version in lines[0], lines


def test_rendered_gateway_table_is_accepted_by_the_proxy() -> None:
    from mso.engines.kubernetes.gatewayd import fill_table
    from mso.proxy.table import parse_table
    loaded = load(SHOP)
    table_map = next(o for o in objects(SHOP, "1.29") if o["metadata"]["name"] == "mso-gateway-table")
    hosts = {f"{s.upper()}_STABLE_SERVICE_HOST": "10.201.0.9" for s in loaded.manifest.services}
    table = parse_table(fill_table(table_map["data"]["table.json"], hosts))
    assert {c for c in table.clusters} >= {"web/http", "orders/http", "kvstore/kv"}


def test_the_gateway_exposes_the_blue_green_preview_port() -> None:
    objs = objects(FULL, "1.29")
    gw = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "mso-gateway")
    service = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "mso-gateway")
    container_ports = {p["containerPort"]: p["name"]
                       for p in gw["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert container_ports.get(8081) == "preview-8081"
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} >= {(8081, 8081),
                                                                            (8080, 8080)}
    shop_gw = next(o for o in objects(SHOP, "1.29") if o["kind"] == "Service"
                   and o["metadata"]["name"] == "mso-gateway")
    assert {p["name"] for p in shop_gw["spec"]["ports"]} == {"http", "metrics"}


def test_the_preview_listener_serves_the_preview_subset_only_while_asked() -> None:
    from mso.engines.kubernetes import gateway
    from mso.proxy.table import parse_table
    loaded = load(FULL)
    spec = document.gateway_spec(loaded, document.workloads(loaded, IMAGES, {}), "full", IMAGES)
    hosts = {"api-stable": "10.201.0.5", "api-preview": "10.201.0.6"}
    weights = {"api": {"stable": 100, "preview": 0}}
    live = gateway.table(spec, hosts, weights, {"api"})
    preview = next(x for x in live["listeners"] if x["port"] == 8081)
    subsets = live["clusters"][preview["cluster"]]["subsets"]
    assert preview["bind"] == "0.0.0.0"
    assert [e["address"] for s in subsets.values() for e in s["endpoints"]] == ["10.201.0.6:8001"]
    main = live["clusters"]["api/http"]["subsets"]
    assert main["stable"]["weight"] == 100 and main["preview"]["weight"] == 0
    parse_table(dict(live, version=1))
    idle = gateway.table(spec, hosts, weights, set())
    assert all(x["port"] != 8081 for x in idle["listeners"])


def test_listener_ports_avoid_reserved_ports() -> None:
    free = naming.listener_ports(["a/http"])
    moved = naming.listener_ports(["a/http"], reserved={free["a/http"]})
    assert moved["a/http"] != free["a/http"]


def test_a_preview_port_on_the_gateways_own_ports_is_refused() -> None:
    from mso.engines.kubernetes import gateway
    from mso.engines.kubernetes.kube import KubeError
    models = {"api": {"rollout": {"strategy": "blue_green",
                                  "preview_port": naming.GATEWAY_CONTROL_PORT}}}
    with pytest.raises(KubeError, match="services.api.rollout.preview_port: 8078 is the gateway"):
        gateway.preview_ports(models)
    assert gateway.preview_ports({"api": {"rollout": {"strategy": "blue_green",
                                                      "preview_port": 8081}}}) == {"api": 8081}


def test_the_gateway_runs_two_supervised_pods_with_their_table_saved() -> None:
    gw = next(o for o in objects(SHOP, "1.29") if o["kind"] == "Deployment"
              and o["metadata"]["name"] == "mso-gateway")
    pod = gw["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert gw["spec"]["replicas"] == 2
    assert command[command.index("--state") + 1] == "/run/mso-gateway/table.json"
    assert {"name": "state", "emptyDir": {}} in pod["volumes"]  # outlives a container
    assert {"name": "state", "mountPath": "/run/mso-gateway"} in \
        pod["containers"][0]["volumeMounts"]


def test_gateway_tls_travels_as_a_secret_named_by_its_content(tmp_path: Path) -> None:
    import os
    app = tmp_path / "app"
    app.mkdir()
    (app / "mso.yaml").write_text(SHOP.read_text().replace(
        "gateway:\n", "gateway:\n  tls: {cert: certs/gateway.pem, key: certs/gateway-key.pem, "
        "port: 8443}\n", 1))
    shutil.copytree(SHOP.parent, app, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("mso.yaml", ".mso"))

    def make_cert(*hosts: str) -> None:
        subprocess.run([sys.executable, "-m", "mso", "certs", *hosts], cwd=app, check=True,
                       env=dict(os.environ, MSO_CA_DIR=str(tmp_path / "ca")),
                       capture_output=True, timeout=60)
    make_cert("app.test")
    objs = objects(app / "mso.yaml", "1.29")
    assert strict_errors(objs, "1.29") == []
    secret = next(o for o in objs if o["kind"] == "Secret"
                  and o["metadata"]["name"].startswith("mso-gateway-tls-"))
    assert set(secret["data"]) == {"0.crt", "0.key"}
    gw = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "mso-gateway")
    pod = gw["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": secret["metadata"]["name"],
                                      "defaultMode": 0o400}} in pod["volumes"]
    service = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "mso-gateway")
    assert (8443, 8443) in {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    table_map = next(o for o in objs if o["metadata"]["name"] == "mso-gateway-table")
    assert "BEGIN" not in table_map["data"]["table.json"]  # paths and names, never the key
    tls_listener = next(li for li in yaml.safe_load(table_map["data"]["table.json"])["listeners"]
                        if li["name"] == "gateway-tls")
    cert = tls_listener["tls"]["certificates"][0]
    assert cert["cert"] == "/etc/mso/gateway-tls/0.crt" and "app.test" in cert["names"]
    make_cert("app.test", "renewed.test")  # a renewal: a new Secret, so new gateway pods
    again = objects(app / "mso.yaml", "1.29")
    assert next(o for o in again if o["kind"] == "Secret" and o["metadata"]["name"]
                .startswith("mso-gateway-tls-"))["metadata"]["name"] != secret["metadata"]["name"]

def test_user_runs_the_app_container_as_that_uid_and_hands_it_the_volumes() -> None:
    from mso.spec.users import remote_id
    objs = {(o["kind"], o["metadata"]["name"]): o for o in objects(FULL, "1.29")}
    app = load(FULL).manifest.app

    def pod(name: str) -> dict[str, Any]:
        deployment = next(o for (kind, n), o in objs.items()
                          if kind == "Deployment" and n.startswith(name))
        return dict(deployment["spec"]["template"]["spec"])

    store = pod("store")
    assert store["containers"][0]["securityContext"] == {"runAsUser": 999, "runAsGroup": 998}
    assert store["securityContext"] == {"fsGroup": 998}
    assert all("securityContext" not in c for c in store["containers"][1:])  # the sidecar
    uid = remote_id(app, "worker")
    assert 61184 <= uid <= 65519
    worker = pod("worker")
    assert worker["containers"][0]["securityContext"] == {"runAsUser": uid, "runAsGroup": uid}
    assert "securityContext" not in pod("web")

def test_a_job_without_run_runs_its_built_image_command(tmp_path: Path) -> None:
    """A container job (conformance `job_as_container`): the Job's pod runs the job's own
    build, with no command (the image's CMD) and no working folder (its WORKDIR)."""
    (tmp_path / "jobimage").mkdir()
    (tmp_path / "jobimage" / "Dockerfile").write_text('FROM scratch\nCMD ["prepare"]\n')
    (tmp_path / "mso.yaml").write_text(
        "app: rj\nservices:\n  web:\n    run: [python3, -m, http.server]\n"
        "    ports: {http: 8000}\njobs:\n  prepare:\n    build: {context: jobimage}\n"
        "    before: [web]\n")
    proc = subprocess.run([sys.executable, "-m", "mso", "render", "--engine", "kubernetes"],
                          cwd=tmp_path, capture_output=True, text=True, check=True)
    jobs = [o for o in yaml.safe_load_all(proc.stdout) if o and o["kind"] == "Job"]
    assert jobs, proc.stdout[:3000]
    (app,) = jobs[0]["spec"]["template"]["spec"]["containers"]
    assert app["image"].startswith("mso/rj-prepare:") and app["imagePullPolicy"] == "Never"
    assert "command" not in app and "workingDir" not in app
    assert strict_errors(jobs, "1.29") == []
