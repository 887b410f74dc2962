"""Write a generated ConfigMap safely: plan against what is there, write at that exact resourceVersion.

Both outputs are derived from what is published *and* the resources (the records are the allocation
state; the router index is the last-valid-version state), so every write is read -> plan -> replace at
the read resourceVersion. A conflict means someone else wrote in between: re-read and re-plan. Output
that equals what is published is not written at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .kube import ConfigMapState, Conflict, Kube

log = logging.getLogger(__name__)
T = TypeVar("T")


class PublishConflicts(RuntimeError):
    """Gave up after repeated write conflicts (another writer keeps winning)."""


@dataclass
class Published(Generic[T]):
    plan: T
    written: bool
    conflicts: int
    bytes: int


def merge_annotations(current: dict[str, str], annotations: dict[str, str | None]) -> dict[str, str]:
    """``annotations`` over ``current``; a None value removes that annotation (also used by ``render``)."""
    return {k: v for k, v in {**current, **annotations}.items() if v is not None}


@dataclass(frozen=True)
class ConfigMapWrite:
    """What to write over ``current``: ``needed`` False when it is already published exactly."""

    data: dict[str, str]
    annotations: dict[str, str]
    resource_version: str | None
    size: int
    needed: bool


def data_size(data: dict[str, str]) -> int:
    """Bytes of ``data``, keys plus values (the API server's 1 MiB limit counts the values only)."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def plan_write(current: ConfigMapState, data: dict[str, str], annotations: dict[str, str | None]) -> ConfigMapWrite:
    """The write of ``data`` and ``annotations`` (merged over the current ones) at the resourceVersion read.
    Nothing is written when the ConfigMap exists with exactly that content (an absent one is created,
    even empty: its existence says that something was published)."""
    merged = merge_annotations(current.annotations, annotations)
    unchanged = current.resource_version is not None and current.data == data and merged == current.annotations
    return ConfigMapWrite(data, merged, current.resource_version, data_size(data), not unchanged)


def publish_configmap(
    kube: Kube,
    namespace: str,
    name: str,
    plan: Callable[[ConfigMapState], tuple[dict[str, str], dict[str, str | None], T]],
    retries: int,
) -> Published[T]:
    """``plan(current) -> (data, annotations, result)``; ``annotations`` are merged over the existing ones
    (a None value removes that annotation). Read -> plan -> write at the read resourceVersion; a conflict
    (someone wrote in between, or created it first, or deleted it) re-reads and re-plans. Any other API
    error (422 for content over the API server's limits, 403 in a namespace being deleted) is raised."""
    conflicts = 0
    for _ in range(retries):
        current = kube.read_configmap(namespace, name)
        data, annotations, result = plan(current)
        write = plan_write(current, data, annotations)
        if not write.needed:
            return Published(result, False, conflicts, write.size)
        try:
            kube.write_configmap(namespace, name, write.data, write.annotations, write.resource_version)
        except Conflict:
            conflicts += 1
            log.info("configmap %s/%s changed concurrently; re-planning", namespace, name)
            continue
        return Published(result, True, conflicts, write.size)
    raise PublishConflicts(f"configmap {namespace}/{name}: gave up after {conflicts} write conflicts")
