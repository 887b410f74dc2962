"""The operator's few verbs against the Kubernetes API, on the official client.

Kept small on purpose: read the objects of a namespace, write a ConfigMap with optimistic
concurrency, patch status and finalizers, post an Event. Everything here is blocking; the async
shell runs it in a worker thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kubernetes
from kubernetes.client import (
    AdmissionregistrationV1Api,
    ApiClient,
    ApiextensionsV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException

from .cell import GROUP, VERSION
from .config import MANAGED_BY, MANAGED_BY_LABEL
from .leader import NotLeader

log = logging.getLogger(__name__)
COMPONENT = "cells-operator"
# The labels the operator sets on every ConfigMap it writes (the watch selects on the first).
OUTPUT_LABELS = {MANAGED_BY_LABEL: MANAGED_BY, "app.kubernetes.io/part-of": "cells"}


def log_ref(obj: dict[str, Any]) -> dict[str, Any]:
    """``extra=`` for a log line about ``obj``: kopf's JSON log format renders it as the ``object`` field."""
    meta = obj.get("metadata") or {}
    return {
        "k8s_ref": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        }
    }


def for_each(items: list[Any], action: Any, concurrency: int) -> None:
    """Run ``action(item)`` for every item on a small thread pool: reporting status on 1,000 objects is
    1,000 independent requests, and the API server serves them in parallel. The first error is raised
    after all have run (none is skipped because another failed)."""
    if concurrency <= 1 or len(items) <= 1:
        for item in items:
            action(item)
        return
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="report") as pool:
        for future in [pool.submit(action, item) for item in items]:
            if (exc := future.exception()) is not None:
                errors.append(exc)
    if errors:
        raise errors[0]


class Conflict(Exception):
    """Someone else wrote the object since we read it: re-read, re-plan, retry."""


def load_api_client() -> ApiClient:
    """In-cluster credentials when running in a Pod, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    configuration = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return ApiClient(configuration)


@dataclass
class ConfigMapState:
    """A ConfigMap as read: its data and the resourceVersion to write against (None: absent), and the
    metadata others may have added (Argo CD, Flux, a person), which a replace must carry over or remove."""

    data: dict[str, str]
    annotations: dict[str, str]
    resource_version: str | None
    labels: dict[str, str] = field(default_factory=dict)
    finalizers: list[str] = field(default_factory=list)
    owner_references: list[dict[str, Any]] = field(default_factory=list)  # as the API serves them (camelCase)


@dataclass(frozen=True)
class ConfigMapMeta:
    """The whole metadata a ConfigMap replace sends (besides name, namespace and resourceVersion): a
    replace sets exactly these, so they hold everyone's labels, annotations, finalizers and owners."""

    annotations: dict[str, str]
    labels: dict[str, str]
    finalizers: tuple[str, ...] = ()
    owner_references: tuple[dict[str, Any], ...] = ()


class Kube:
    def __init__(self, api: ApiClient):
        self.api = api
        self.core = CoreV1Api(api)
        self.custom = CustomObjectsApi(api)
        self.writes = 0  # API write requests made, for metrics and benchmarks
        self._writes_lock = threading.Lock()
        # Leader election's fence: asked before every write; a replica that does not hold the Lease
        # (or could not renew it in time) writes nothing, even in the middle of a reconcile.
        self.fence: Callable[[], bool] | None = None

    def _count_write(self) -> None:
        if self.fence is not None and not self.fence():
            raise NotLeader("this replica does not hold the leader Lease")
        with self._writes_lock:  # reports run on a thread pool
            self.writes += 1

    def crd_exists(self, name: str) -> bool:
        """Whether the CRD ``name`` is installed. Without RBAC to read CRDs we cannot tell: say yes, and
        let discovery decide."""
        try:
            ApiextensionsV1Api(self.api).read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 403:
                return True
            raise
        return True

    # ---------------------------------------------------------------- custom resources
    def list_objects(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        try:
            result = cast(dict[str, Any], self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural))
        except ApiException as exc:
            if exc.status == 404:  # CRD not installed (yet): nothing of that kind exists
                return []
            raise
        return list(result.get("items", []))

    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch ``status``; False if the object is already gone."""
        self._count_write()
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status}
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def write_status(self, plural: str, obj: dict[str, Any], status: dict[str, Any]) -> bool:
        """Patch ``obj``'s status and log the Ready condition it now reports, naming the object."""
        meta = obj["metadata"]
        written = self.patch_status(plural, meta["namespace"], meta["name"], status)
        ready: dict[str, Any] = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), {})
        log.info(
            "%s %s/%s: Ready=%s %s: %s",
            obj.get("kind"),
            meta["namespace"],
            meta["name"],
            ready.get("status"),
            ready.get("reason"),
            ready.get("message"),
            extra=log_ref(obj),
        )
        return written

    def set_finalizers(self, plural: str, obj: dict[str, Any], finalizers: list[str]) -> bool:
        """Replace the finalizer list, guarded by resourceVersion so no other finalizer is lost."""
        meta = obj["metadata"]
        self._count_write()
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                meta["namespace"],
                plural,
                meta["name"],
                {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 409:
                raise Conflict(f"{plural}/{meta['name']} changed while updating finalizers") from exc
            raise
        return True

    # ---------------------------------------------------------------- config maps
    def read_configmap(self, namespace: str, name: str) -> ConfigMapState:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return ConfigMapState({}, {}, None)
            raise
        meta = cm.metadata or kubernetes.client.V1ObjectMeta()
        return ConfigMapState(
            dict(cm.data or {}),
            dict(meta.annotations or {}),
            meta.resource_version,
            labels=dict(meta.labels or {}),
            finalizers=list(meta.finalizers or []),
            owner_references=[self.api.sanitize_for_serialization(r) for r in meta.owner_references or []],
        )

    def write_configmap(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        meta: ConfigMapMeta,
        resource_version: str | None,
    ) -> str:
        """Create (``resource_version`` None) or replace at exactly ``resource_version``, with exactly
        ``meta`` (see :func:`cells_operator.publish.plan_write`: ours merged over what was read).

        Raises :class:`Conflict` when someone wrote in between (or created it first).
        """
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "annotations": meta.annotations,
            "labels": meta.labels,
        }
        if meta.finalizers:
            metadata["finalizers"] = list(meta.finalizers)
        if meta.owner_references:
            metadata["ownerReferences"] = list(meta.owner_references)
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
        self._count_write()
        try:
            if resource_version is None:
                # The client validates a dict body into V1ConfigMap (pydantic validate_call); its annotation
                # names the model only.
                result = self.core.create_namespaced_config_map(namespace, body)  # type: ignore[arg-type]
            else:
                result = self.core.replace_namespaced_config_map(name, namespace, body)  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status in (409, 404):
                raise Conflict(f"configmap {namespace}/{name} changed concurrently") from exc
            raise
        written = result.metadata or kubernetes.client.V1ObjectMeta()  # the server always sets it
        return str(written.resource_version)

    # ---------------------------------------------------------------- webhook configurations
    def apply_webhook_configuration(self, obj: dict[str, Any]) -> None:
        """Create or replace a Validating/MutatingWebhookConfiguration (local control plane only: in a
        cluster they come from deploy/ and the operator has no RBAC on them)."""
        api, suffix = self._webhook_api(obj["kind"])
        name = obj["metadata"]["name"]
        self._count_write()
        try:
            getattr(api, f"create_{suffix}")(obj)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        current = getattr(api, f"read_{suffix}")(name)
        body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": current.metadata.resource_version}}
        self._count_write()
        getattr(api, f"replace_{suffix}")(name, body)

    def delete_webhook_configuration(self, kind: str, name: str) -> None:
        api, suffix = self._webhook_api(kind)
        self._count_write()
        try:
            getattr(api, f"delete_{suffix}")(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _webhook_api(self, kind: str) -> tuple[AdmissionregistrationV1Api, str]:
        """The client and its method suffix for a webhook configuration kind."""
        suffix = {
            "ValidatingWebhookConfiguration": "validating_webhook_configuration",
            "MutatingWebhookConfiguration": "mutating_webhook_configuration",
        }[kind]
        return AdmissionregistrationV1Api(self.api), suffix

    # ---------------------------------------------------------------- events
    def post_event(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        """An Event on ``obj`` so ``kubectl describe`` tells the story. Failures are logged, not raised."""
        meta = obj["metadata"]
        now = datetime.now(UTC)
        event = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=obj.get("apiVersion"),
                kind=obj.get("kind"),
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=kubernetes.client.V1EventSource(component=COMPONENT, host=socket.gethostname()),
            reporting_component=COMPONENT,
            reporting_instance=socket.gethostname(),
        )
        self._count_write()
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc.reason)
