"""The boundary to the Kubernetes API (the official `kubernetes` client, dynamic flavour).

Objects go in and come out as plain dicts, so what `mso deploy` applies is exactly what
`mso render` prints. Every client, HTTP or config error is translated into `KubeError`
here; nothing above this module sees a `kubernetes` exception. Ownership is checked
before any write: an existing object without mso's labels for this app is never changed.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from typing import Any

from mso.engines.kubernetes import naming
from mso.engines.remote import RemoteEngineError

Obj = dict[str, Any]
FIELD_MANAGER = "mso"


class KubeError(RemoteEngineError):
    """The API server refused, or could not be reached."""


class NotOwnedError(KubeError):
    """An object with this name exists and mso did not make it."""


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    body = getattr(exc, "body", None)
    if status is not None:
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
        try:
            text = str(json.loads(text).get("message") or text)
        except (ValueError, AttributeError):
            pass
        return f"HTTP {status}: {(text or str(reason or ''))[:300]}".replace("\n", " ")
    return f"{type(exc).__name__}: {exc}"


class Kube:
    """A connection to one cluster (kubeconfig + context)."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            from kubernetes import client, config  # type: ignore[import-untyped]
            from kubernetes.dynamic import DynamicClient  # type: ignore[import-untyped]
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
            self.core = client.CoreV1Api(api_client)
            self.dynamic = DynamicClient(api_client)
        except Exception as exc:  # config errors, unreachable server during discovery
            raise KubeError(f"cannot connect to Kubernetes: {_describe(exc)}") from exc
        self._resources: dict[tuple[str, str], Any] = {}

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            try:
                self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
            except Exception as exc:
                raise KubeError(f"the cluster does not serve {kind} in {api_version}: "
                                f"{_describe(exc)}") from exc
        return self._resources[key]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> Obj | None:
        resource = self._resource(api_version, kind)
        try:
            found = resource.get(name=name, namespace=namespace if resource.namespaced else None)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise KubeError(f"get {kind}/{name}: {_describe(exc)}") from exc
        out: Obj = found.to_dict()
        return out

    def list(self, api_version: str, kind: str, namespace: str | None,
             selector: dict[str, str]) -> list[Obj]:
        resource = self._resource(api_version, kind)
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        try:
            found = resource.get(namespace=namespace if resource.namespaced else None,
                                 label_selector=label_selector)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return []
            raise KubeError(f"list {kind}: {_describe(exc)}") from exc
        items: list[Obj] = found.to_dict().get("items") or []
        return items

    def apply(self, obj: Obj, app: str) -> str:
        """Create or update `obj` (server-side apply); refuse objects mso does not own."""
        md = obj["metadata"]
        existing = self.get(obj["apiVersion"], obj["kind"], md["name"], md.get("namespace"))
        if existing is not None and not naming.is_owned(existing["metadata"].get("labels"), app):
            raise NotOwnedError(
                f"refusing to modify {obj['kind']} {md.get('namespace', '')}/{md['name']}: it exists "
                f"and is not managed by mso for app {app!r} (labels {naming.MANAGED_BY}=mso, "
                f"{naming.APP}={app}); rename it or use another namespace")
        resource = self._resource(obj["apiVersion"], obj["kind"])
        try:
            resource_ns = md.get("namespace") if resource.namespaced else None
            self.dynamic.server_side_apply(resource, body=obj, name=md["name"],
                                           namespace=resource_ns, field_manager=FIELD_MANAGER,
                                           force_conflicts=True)
        except Exception as exc:
            raise KubeError(f"apply {obj['kind']}/{md['name']}: {_describe(exc)}") from exc
        return "created" if existing is None else "configured"

    def delete(self, obj: Obj, app: str, grace: int | None = None) -> bool:
        """Delete `obj` if it exists and mso owns it; True if a delete was sent."""
        md = obj["metadata"]
        existing = self.get(obj["apiVersion"], obj["kind"], md["name"], md.get("namespace"))
        if existing is None or not naming.is_owned(existing["metadata"].get("labels"), app):
            return False
        resource = self._resource(obj["apiVersion"], obj["kind"])
        body = {"propagationPolicy": "Background"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace  # type: ignore[assignment]
        try:
            resource.delete(name=md["name"], namespace=md.get("namespace") if resource.namespaced
                            else None, body=body)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return False
            raise KubeError(f"delete {obj['kind']}/{md['name']}: {_describe(exc)}") from exc
        return True

    def delete_pod(self, name: str, namespace: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace)
        except Exception as exc:
            raise KubeError(f"delete pod {name}: {_describe(exc)}") from exc

    def events_of(self, pod: str, namespace: str) -> builtins.list[Obj]:
        """The events about one pod (the kubelet's probe failures, pulls, back-offs)."""
        resource = self._resource("v1", "Event")
        try:
            found = resource.get(namespace=namespace,
                                 field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod}")
        except Exception as exc:
            raise KubeError(f"list events of {pod}: {_describe(exc)}") from exc
        items: builtins.list[Obj] = found.to_dict().get("items") or []
        return items

    def log_lines(self, pod: str, namespace: str, follow: bool, since: int | None,
                  tail: int | None, previous: bool = False) -> Iterator[str]:
        """`previous`: the container's run before this one (it exited)."""
        kwargs: dict[str, Any] = {"container": "app", "follow": follow, "timestamps": True,
                                  "_preload_content": False}
        if previous:
            kwargs["previous"] = True
        if since is not None:
            kwargs["since_seconds"] = max(1, since)
        if tail is not None:
            kwargs["tail_lines"] = tail
        try:
            response = self.core.read_namespaced_pod_log(pod, namespace, **kwargs)
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if pending:
                yield pending.decode("utf-8", "replace")
        except Exception as exc:
            if getattr(exc, "status", None) in (400, 404):
                return  # the pod is gone or has not started: no lines
            raise KubeError(f"logs of {pod}: {_describe(exc)}") from exc

    def server_version(self) -> str:
        try:
            info = self.dynamic.version["kubernetes"]
            return f"{info['major']}.{info['minor']}".rstrip("+")
        except Exception as exc:
            raise KubeError(f"cannot read the server version: {_describe(exc)}") from exc
