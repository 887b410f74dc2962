"""An in-memory stand-in for :class:`cells_operator.kube.Kube`, answering as the API server does.

It replaces the verbs that send requests and inherits the rest (``write_status``, the write counter and
the leader fence), so the shell runs unchanged on top of it. What it keeps faithful, because the shell's
decisions depend on it:

- every write bumps a cluster-wide ``resourceVersion``; a ConfigMap replaced at a stale one, or created
  when it exists, is a 409, and replaced when absent a 404 -- both raise :class:`Conflict`, as ``Kube``
  translates them; finalizers patched at a stale resourceVersion are a 409 too (``Conflict``);
- a ConfigMap whose data values exceed 1 MiB in total (keys are not counted), or whose annotations (keys
  plus values) exceed 256 KiB, is a 422 Invalid (``ApiException``);
- in a namespace being deleted, a *create* (ConfigMap, Event) is a 403 Forbidden "unable to create new
  content in namespace X because it is being terminated" (the NamespaceLifecycle admission plugin);
  updates and patches of existing objects still succeed;
- a status or finalizer patch of an absent object is a 404 (the verb returns False); removing the last
  finalizer of an object being deleted deletes it; adding a finalizer to it is a 422;
- a ConfigMap replace sets exactly the metadata it sends (labels, annotations, finalizers, ownerReferences):
  what it leaves out is removed, as a PUT does;
- a status patch is a JSON merge patch (None removes a key, lists are replaced) and does not change
  ``generation``;
- an Event that cannot be created is logged by ``Kube.post_event``, never raised.

Each answer above was probed with the real ``Kube`` against the local kube-apiserver 1.37 (create of an
existing ConfigMap 409 AlreadyExists, replace at a stale resourceVersion 409, replace of an absent one
404, finalizers at a stale resourceVersion 409, status of an absent object 404, annotations over 256 KiB
422, create and Event in a terminating namespace 403 while a replace there succeeds, a new finalizer on
an object being deleted 422), except the 422 for data values over 1 MiB, which is ``ValidateConfigMap``'s
rule (exactly 1 MiB was probed and accepted).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from cells_operator.kube import ConfigMapMeta, ConfigMapState, Conflict, Kube

MAX_CONFIGMAP_BYTES = 1024 * 1024  # ValidateConfigMap: the values of data and binaryData > MaxSecretSize
MAX_ANNOTATIONS_BYTES = 256 * 1024  # apimachinery's TotalAnnotationSizeLimitB

# The verbs that send requests; every other public method of Kube is inherited and runs as is.
FAKED = frozenset(
    {
        "crd_exists",
        "list_objects",
        "patch_status",
        "set_finalizers",
        "read_configmap",
        "write_configmap",
        "apply_webhook_configuration",
        "delete_webhook_configuration",
        "post_event",
    }
)


def api_error(status: int, reason: str, message: str) -> ApiException:
    """An ``ApiException`` carrying a ``Status`` body, as the client raises it."""
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "reason": reason, "code": status})
    return exc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeKube(Kube):
    def __init__(self) -> None:  # no ApiClient: nothing here talks to a server
        self.writes = 0
        self._writes_lock = threading.Lock()
        self.fence: Callable[[], bool] | None = None
        self._lock = threading.RLock()  # the shell reports on a thread pool
        self._rv = 0
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.terminating: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (verb, what) of every write request, in order
        # Each runs just before one ConfigMap write request is applied: another writer getting in between.
        self.before_configmap_write: list[Callable[[], None]] = []

    # ---------------------------------------------------------------- test set-up and inspection
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create a custom object as ``kubectl apply`` would (uid, generation, resourceVersion)."""
        with self._lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", "ns")
            meta.setdefault("uid", f"uid-{meta['name']}")
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", f"2026-01-01T00:00:{len(self.objects):02}Z")
            meta["resourceVersion"] = self._next_rv()
            self.objects[(plural, meta["namespace"], meta["name"])] = obj
            return copy.deepcopy(obj)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def edit(self, plural: str, namespace: str, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Someone else writes the object (a spec edit bumps ``generation``, as the API server does)."""
        with self._lock:
            obj = self.objects[(plural, namespace, name)]
            spec = copy.deepcopy(obj.get("spec"))
            change(obj)
            if obj.get("spec") != spec:
                obj["metadata"]["generation"] += 1
            obj["metadata"]["resourceVersion"] = self._next_rv()

    def delete(self, plural: str, namespace: str, name: str) -> None:
        """``kubectl delete``: set deletionTimestamp while finalizers remain, else remove."""
        with self._lock:
            obj = self.objects[(plural, namespace, name)]
            if obj["metadata"].get("finalizers"):
                obj["metadata"].setdefault("deletionTimestamp", "2026-01-01T01:00:00Z")
                obj["metadata"]["resourceVersion"] = self._next_rv()
            else:
                del self.objects[(plural, namespace, name)]

    def put_configmap(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        annotations: dict[str, str] | None = None,
        **metadata: Any,
    ):
        """Someone else writes a ConfigMap (a hand edit, another replica, Argo CD): ``metadata`` may set
        ``labels``, ``finalizers`` and ``owner_references``."""
        with self._lock:
            self.configmaps[(namespace, name)] = {
                "data": dict(data),
                "annotations": dict(annotations or {}),
                "labels": dict(metadata.get("labels") or {}),
                "finalizers": list(metadata.get("finalizers") or []),
                "owner_references": copy.deepcopy(list(metadata.get("owner_references") or [])),
                "resourceVersion": self._next_rv(),
            }

    def delete_configmap(self, namespace: str, name: str) -> None:
        with self._lock:
            self.configmaps.pop((namespace, name), None)

    def terminate_namespace(self, namespace: str) -> None:
        """``kubectl delete namespace``: its objects get a deletionTimestamp, and the namespace controller
        deletes the ConfigMaps (which carry no finalizer) at once; creates there are refused from now on."""
        with self._lock:
            self.terminating.add(namespace)
            for plural, ns, name in list(self.objects):
                if ns == namespace:
                    self.delete(plural, ns, name)
            for ns, name in list(self.configmaps):
                if ns == namespace:
                    del self.configmaps[(ns, name)]

    def events_for(self, name: str) -> list[tuple[str, str]]:
        """(type, reason) of the Events posted on ``name``, in order."""
        return [(e["type"], e["reason"]) for e in self.events if e["involvedObject"]["name"] == name]

    def _forbid_create(self, namespace: str, what: str) -> None:
        if namespace in self.terminating:
            raise api_error(
                403,
                "Forbidden",
                f"{what} is forbidden: unable to create new content in namespace {namespace} "
                "because it is being terminated",
            )

    # ---------------------------------------------------------------- the verbs
    def crd_exists(self, name: str) -> bool:
        return True

    def list_objects(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(o) for (p, ns, _), o in sorted(self.objects.items()) if p == plural and ns == namespace
            ]

    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> bool:
        self._count_write()
        with self._lock:
            self.requests.append(("patch_status", f"{plural}/{name}"))
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                return False
            obj["status"] = merge_patch(obj.get("status") or {}, status)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            return True

    def set_finalizers(self, plural: str, obj: dict[str, Any], finalizers: list[str]) -> bool:
        meta = obj["metadata"]
        self._count_write()
        with self._lock:
            self.requests.append(("set_finalizers", f"{plural}/{meta['name']}"))
            key = (plural, meta["namespace"], meta["name"])
            stored = self.objects.get(key)
            if stored is None:
                return False
            if stored["metadata"]["resourceVersion"] != meta["resourceVersion"]:
                raise Conflict(f"{plural}/{meta['name']} changed while updating finalizers")
            before = stored["metadata"].get("finalizers") or []
            if stored["metadata"].get("deletionTimestamp") and set(finalizers) - set(before):
                raise api_error(
                    422, "Invalid", "Forbidden: no new finalizers can be added if the object is being deleted"
                )
            if stored["metadata"].get("deletionTimestamp") and not finalizers:
                del self.objects[key]
                return True
            stored["metadata"]["finalizers"] = list(finalizers)
            stored["metadata"]["resourceVersion"] = self._next_rv()
            return True

    def read_configmap(self, namespace: str, name: str) -> ConfigMapState:
        with self._lock:
            cm = self.configmaps.get((namespace, name))
            if cm is None:
                return ConfigMapState({}, {}, None)
            return ConfigMapState(
                dict(cm["data"]),
                dict(cm["annotations"]),
                cm["resourceVersion"],
                labels=dict(cm["labels"]),
                finalizers=list(cm["finalizers"]),
                owner_references=copy.deepcopy(cm["owner_references"]),
            )

    def write_configmap(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        meta: ConfigMapMeta,
        resource_version: str | None,
    ) -> str:
        annotations = meta.annotations
        self._count_write()
        with self._lock:
            self.requests.append(("write_configmap", name))
            if self.before_configmap_write:  # one interloper per write request
                self.before_configmap_write.pop(0)()
            current = self.configmaps.get((namespace, name))
            if resource_version is None:
                self._forbid_create(namespace, f'configmaps "{name}"')
                if current is not None:
                    raise Conflict(f"configmap {namespace}/{name} changed concurrently")  # 409 AlreadyExists
            elif current is None or current["resourceVersion"] != resource_version:
                raise Conflict(f"configmap {namespace}/{name} changed concurrently")  # 404 / 409
            if sum(len(v.encode()) for v in data.values()) > MAX_CONFIGMAP_BYTES:
                raise api_error(
                    422,
                    "Invalid",
                    f'ConfigMap "{name}" is invalid: []: Too long: may not be more than {MAX_CONFIGMAP_BYTES} bytes',
                )
            if sum(len(k) + len(v) for k, v in annotations.items()) > MAX_ANNOTATIONS_BYTES:
                raise api_error(
                    422,
                    "Invalid",
                    f'ConfigMap "{name}" is invalid: metadata.annotations: Too long: '
                    f"may not be more than {MAX_ANNOTATIONS_BYTES} bytes",
                )
            rv = self._next_rv()
            self.configmaps[(namespace, name)] = {
                "data": dict(data),
                "annotations": dict(annotations),
                "labels": dict(meta.labels),
                "finalizers": list(meta.finalizers),
                "owner_references": copy.deepcopy(list(meta.owner_references)),
                "resourceVersion": rv,
            }
            return rv

    def apply_webhook_configuration(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError("webhook configurations are not part of the reconcile")

    def delete_webhook_configuration(self, kind: str, name: str) -> None:
        raise NotImplementedError("webhook configurations are not part of the reconcile")

    def post_event(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        meta = obj["metadata"]
        self._count_write()
        with self._lock:
            self.requests.append(("post_event", f"{meta['name']}:{reason}"))
            if meta["namespace"] in self.terminating:
                return  # Kube.post_event logs the 403 and carries on
            self.events.append(
                {
                    "involvedObject": {"kind": obj.get("kind"), "name": meta["name"], "uid": meta.get("uid")},
                    "reason": reason,
                    "message": message[:1024],
                    "type": "Warning" if warning else "Normal",
                }
            )
