"""Reading and writing the election's Lease with the official client (``coordination.k8s.io/v1``)."""

from __future__ import annotations

from typing import Protocol

import kubernetes
from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException

from .leader import LeaseRecord, Write


class LeaseStore(Protocol):
    def get(self) -> tuple[LeaseRecord | None, str | None]:
        """The Lease's record and resourceVersion; (None, None) when it does not exist."""

    def put(self, write: Write) -> bool:
        """Create or update at ``write.resource_version``; False when someone else wrote first."""


class KubeLeaseStore:
    def __init__(self, api: ApiClient, namespace: str, name: str):
        self.api = CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name

    def get(self) -> tuple[LeaseRecord | None, str | None]:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        spec = lease.spec or kubernetes.client.V1LeaseSpec()  # a Lease without a spec is held by nobody
        record = LeaseRecord(
            holder=spec.holder_identity or "",
            lease_duration_seconds=spec.lease_duration_seconds or 0,
            acquire_time=spec.acquire_time,
            renew_time=spec.renew_time,
            transitions=spec.lease_transitions or 0,
        )
        return record, lease.metadata.resource_version if lease.metadata is not None else None

    def put(self, write: Write) -> bool:
        r = write.record
        body = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(
                name=self.name, namespace=self.namespace, resource_version=write.resource_version
            ),
            spec=kubernetes.client.V1LeaseSpec(
                holder_identity=r.holder,
                lease_duration_seconds=r.lease_duration_seconds,
                acquire_time=r.acquire_time,
                renew_time=r.renew_time,
                lease_transitions=r.transitions,
            ),
        )
        try:
            if write.resource_version is None:
                self.api.create_namespaced_lease(self.namespace, body)
            else:
                self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status in (409, 404):
                return False
            raise
        return True
