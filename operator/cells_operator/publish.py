"""Write a generated ConfigMap safely: plan against what is there, write at that exact resourceVersion.

Both outputs are derived from what is published *and* the resources (the records are the allocation
state; the router index is the last-valid-version state), so every write is read -> plan -> replace at
the read resourceVersion. A conflict means someone else wrote in between: re-read and re-plan. Output
that equals what is published is not written at all, and output over the API server's size limits is
not sent: :func:`plan_write` knows its size, so it is decided before writing, not learnt from a 422.

The operator owns only its keys of the ConfigMap: a replace carries over the labels, annotations,
finalizers and ownerReferences that others (Argo CD, Flux, a person) added, and sets only its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .kube import OUTPUT_LABELS, ConfigMapMeta, ConfigMapState, Conflict, Kube

log = logging.getLogger(__name__)
T = TypeVar("T")

# ValidateConfigMap refuses data values (keys not counted) over 1 MiB; exactly 1 MiB is accepted.
MAX_DATA_BYTES = 1024 * 1024
# apimachinery's TotalAnnotationSizeLimitB: annotation keys plus values over 256 KiB are refused.
MAX_ANNOTATIONS_BYTES = 256 * 1024


class PublishConflicts(RuntimeError):
    """Gave up after repeated write conflicts (another writer keeps winning)."""


@dataclass
class Published(Generic[T]):
    plan: T
    written: bool
    conflicts: int
    bytes: int
    # Why it was not written although it differs from what is published (over a size limit): what is
    # published stays. None when it was written or needed no write.
    too_large: str | None = None


def merge_annotations(current: dict[str, str], annotations: dict[str, str | None]) -> dict[str, str]:
    """``annotations`` over ``current``; a None value removes that annotation (also used by ``render``)."""
    return {k: v for k, v in {**current, **annotations}.items() if v is not None}


@dataclass(frozen=True)
class ConfigMapWrite:
    """What to write over ``current``: ``needed`` False when it is already published exactly;
    ``too_large`` says why it must not be sent (the API server would refuse it with a 422)."""

    data: dict[str, str]
    meta: ConfigMapMeta
    resource_version: str | None
    size: int
    needed: bool
    too_large: str | None = None

    @property
    def annotations(self) -> dict[str, str]:
        return self.meta.annotations


def data_size(data: dict[str, str]) -> int:
    """Bytes of ``data``, keys plus values (the API server's 1 MiB limit counts the values only)."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def values_size(data: dict[str, str]) -> int:
    """Bytes of ``data``'s values: what the API server's 1 MiB limit counts."""
    return sum(len(v.encode()) for v in data.values())


def annotations_size(annotations: dict[str, str]) -> int:
    """Bytes of annotation keys plus values: what the API server's 256 KiB limit counts."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def size_problem(data: dict[str, str], annotations: dict[str, str]) -> str | None:
    """Why the API server would refuse this content (its message names the size and the limit), or None."""
    values, notes = values_size(data), annotations_size(annotations)
    if values > MAX_DATA_BYTES:
        return f"its data would be {values:,} bytes, over the ConfigMap limit of {MAX_DATA_BYTES:,} bytes (1 MiB)"
    if notes > MAX_ANNOTATIONS_BYTES:
        return f"its annotations would be {notes:,} bytes, over the limit of {MAX_ANNOTATIONS_BYTES:,} bytes (256 KiB)"
    return None


def plan_write(current: ConfigMapState, data: dict[str, str], annotations: dict[str, str | None]) -> ConfigMapWrite:
    """The write of ``data`` and ``annotations`` (merged over the current ones) at the resourceVersion read.
    Nothing is written when the ConfigMap exists with exactly that content (an absent one is created,
    even empty: its existence says that something was published), nor when it is over a size limit.
    Others' labels, annotations, finalizers and ownerReferences are kept; ours are set over them."""
    meta = ConfigMapMeta(
        annotations=merge_annotations(current.annotations, annotations),
        labels={**current.labels, **OUTPUT_LABELS},
        finalizers=tuple(current.finalizers),
        owner_references=tuple(current.owner_references),
    )
    unchanged = (
        current.resource_version is not None
        and current.data == data
        and meta.annotations == current.annotations
        and meta.labels == current.labels
    )
    too_large = None if unchanged else size_problem(data, meta.annotations)
    return ConfigMapWrite(data, meta, current.resource_version, data_size(data), not unchanged, too_large)


def publish_configmap(
    kube: Kube,
    namespace: str,
    name: str,
    plan: Callable[[ConfigMapState], tuple[dict[str, str], dict[str, str | None], T]],
    retries: int,
) -> Published[T]:
    """``plan(current) -> (data, annotations, result)``; ``annotations`` are merged over the existing ones
    (a None value removes that annotation). Read -> plan -> write at the read resourceVersion; a conflict
    (someone wrote in between, or created it first, or deleted it) re-reads and re-plans. Content over
    the API server's size limits is not sent: ``too_large`` says why, and what is published stays (the
    caller reports it). Any other API error (403 in a namespace being deleted) is raised."""
    conflicts = 0
    for _ in range(retries):
        current = kube.read_configmap(namespace, name)
        data, annotations, result = plan(current)
        write = plan_write(current, data, annotations)
        if not write.needed or write.too_large is not None:
            return Published(result, False, conflicts, write.size, write.too_large)
        try:
            kube.write_configmap(namespace, name, write.data, write.meta, write.resource_version)
        except Conflict:
            conflicts += 1
            log.info("configmap %s/%s changed concurrently; re-planning", namespace, name)
            continue
        return Published(result, True, conflicts, write.size)
    raise PublishConflicts(f"configmap {namespace}/{name}: gave up after {conflicts} write conflicts")
