"""`mso down` on Kubernetes: delete what mso made for this app, and nothing else.

Every kind mso creates is listed by the app's ownership labels and deleted one by one
(each delete re-checks ownership in `Kube.delete`); the namespace goes last, and only
if mso created it.
"""

from __future__ import annotations

from mso.engines.kubernetes import naming
from mso.engines.kubernetes.kube import Kube, KubeError

KINDS = [("autoscaling/v2", "HorizontalPodAutoscaler"),
         ("autoscaling/v2beta2", "HorizontalPodAutoscaler"),
         ("policy/v1", "PodDisruptionBudget"), ("policy/v1beta1", "PodDisruptionBudget"),
         ("apps/v1", "Deployment"), ("batch/v1", "Job"), ("v1", "Service"),
         ("v1", "ConfigMap"), ("v1", "Secret")]


def teardown(kube: Kube, app: str, namespace: str) -> list[str]:
    """Delete the app's objects; return `Kind/name` of each deleted one."""
    deleted: list[str] = []
    selector = naming.owner_labels(app)
    seen: set[tuple[str, str]] = set()
    for api_version, kind in KINDS:
        try:
            items = kube.list(api_version, kind, namespace, selector)
        except KubeError:
            continue  # this API version is not served by the cluster
        for item in items:
            name = item["metadata"]["name"]
            if (kind, name) in seen:
                continue
            seen.add((kind, name))
            obj = {"apiVersion": api_version, "kind": kind,
                   "metadata": {"name": name, "namespace": namespace}}
            if kube.delete(obj, app):
                deleted.append(f"{kind}/{name}")
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    if not foreign_objects(kube, app, namespace) and kube.delete(ns, app):
        deleted.append(f"Namespace/{namespace}")
    return deleted


# What Kubernetes itself puts in every namespace; anything else not labelled as mso's
# belongs to someone else, and deleting the namespace would delete it too.
_BUILTIN_CONFIGMAPS = {"kube-root-ca.crt"}
_BUILTIN_SECRET_TYPES = {"kubernetes.io/service-account-token"}


def foreign_objects(kube: Kube, app: str, namespace: str) -> list[str]:
    found: list[str] = []
    for api_version, kind in (("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
                              ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
                              ("apps/v1", "DaemonSet"), ("batch/v1", "Job"),
                              ("v1", "PersistentVolumeClaim")):
        try:
            items = kube.list(api_version, kind, namespace, {})
        except KubeError:
            continue
        for item in items:
            md = item["metadata"]
            if naming.is_owned(md.get("labels"), app) or md.get("deletionTimestamp"):
                continue
            if kind == "ConfigMap" and md["name"] in _BUILTIN_CONFIGMAPS:
                continue
            if kind == "Secret" and item.get("type") in _BUILTIN_SECRET_TYPES:
                continue
            found.append(f"{kind}/{md['name']}")
    return found
