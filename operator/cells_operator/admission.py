"""Admission review: what to refuse at ``kubectl apply`` time, decided by the same code as the status path.

The validating webhook (:mod:`cells_operator.webhook`) calls these pure functions. They do not
re-implement any rule: a Cell is judged by running :func:`cells_operator.topology.plan_topology` on the
published records and the namespace's Cells *with the change applied*, and refusing it when the planner
would mark it ``Stalled``; a RoutingRule is judged by :func:`cells_operator.rule.render_rule`. The
webhook and the status path therefore cannot disagree about what is invalid; the webhook only says it
earlier, and the status path stays the safety net for whatever the webhook did not see (webhook down,
two conflicting creates racing each other, objects created before the webhook existed).

What is *not* refused, because it is a moment in a GitOps sync rather than bad input:
- a rule whose ``proxy.cellRef`` names a Cell that is not registered (yet) or not routable: Argo CD and
  Flux apply Cells and rules together, and the Cell registers a moment later;
- any update that leaves ``spec`` unchanged (finalizers, labels, annotations): an object that is already
  invalid must still be deletable and labelable;
- anything on an object that is being deleted.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cells_formats.records import Topology
from cells_formats.router_format import Dialect

from .cell import GROUP, VERSION, Problem
from .cell import PLURAL as CELLS
from .config import FINALIZER
from .rule import PLURAL as RULES
from .rule import TOPOLOGY_DEPENDENT, parse_rule_spec, render_rule
from .topology import CellObject, plan_topology

# Sorts after every RFC 3339 creationTimestamp: a Cell being created is the newest claimant of an id,
# prefix or range, so it is the one refused when it collides with a Cell that exists already.
NEWEST = "~"
# A Cell being created has no uid yet; a placeholder that differs from any record's uid makes the
# planner treat a leftover record of the same name as another object (as the status path would).
NEW_UID = "admission-review-new-object"


@dataclass(frozen=True)
class Review:
    """The verdict on one admission request: refused with a ``problem``, or allowed (with ``warnings``)."""

    problem: Problem | None = None
    warnings: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.problem is None

    def message(self, kind: str, name: str) -> str:
        assert self.problem is not None
        return f"{kind} {name!r} is refused ({self.problem.reason}): {self.problem.message}"


def _spec_unchanged(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    return old is not None and (old.get("spec") or {}) == (new.get("spec") or {})


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def review_cell(
    new: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    siblings: Sequence[Mapping[str, Any]],
    records: Topology,
) -> Review:
    """Refuse a Cell create/update that the planner would not publish.

    ``siblings`` are the namespace's Cells as stored now (the one under review among them or not),
    ``records`` the published Topology. ``old`` is None for a create.
    """
    if _spec_unchanged(new, old) or _deleting(new):
        return Review()
    candidate = CellObject.from_api(new)
    if old is None:
        candidate = replace(candidate, uid=NEW_UID, created=NEWEST, status_ranges=())
    others = [CellObject.from_api(s) for s in siblings if s["metadata"]["name"] != candidate.name]
    plan = plan_topology(records, [*others, candidate])
    verdict = plan.verdicts[candidate.name]
    return Review(verdict.problem)


def review_rule(
    new: Mapping[str, Any], old: Mapping[str, Any] | None, records: Topology, dialect: Dialect = Dialect.CURRENT
) -> Review:
    """Refuse a RoutingRule create/update whose spec can never be published, whatever the Cells.

    ``records`` only turns a not-yet-registered ``cellRef`` into a warning instead of silence.
    """
    if _spec_unchanged(new, old) or _deleting(new):
        return Review()
    spec, problem = parse_rule_spec(dict(new.get("spec") or {}))
    if spec is None:
        return Review(problem)
    _, problem = render_rule(spec, records, name=(new.get("metadata") or {}).get("name"), dialect=dialect)
    if problem is not None and problem.reason in TOPOLOGY_DEPENDENT:
        return Review(
            warnings=(
                f"{problem.message} ({problem.reason}): accepted; it is published once the Cell is registered "
                "and routable, and its status says so until then",
            )
        )
    return Review(problem)


def cell_finalizers_at_creation(new: Mapping[str, Any]) -> list[str] | None:
    """The finalizer list a Cell should be created with, or None when it already has ours.

    The mutating webhook adds the operator's finalizer at creation, which saves the operator one API
    write per Cell; when the webhook is not there, the operator adds it itself on the first reconcile.
    """
    finalizers = list((new.get("metadata") or {}).get("finalizers") or [])
    if FINALIZER in finalizers or _deleting(new):
        return None
    return [*finalizers, FINALIZER]


# ---------------------------------------------------------------------------------------------- wiring
@dataclass(frozen=True)
class Webhook:
    """One webhook: its name in its configuration, the kopf handler id (= URL path), what it sees."""

    name: str
    handler_id: str
    plural: str
    mutating: bool = False
    operations: tuple[str, ...] = ("CREATE", "UPDATE")


CELL_WEBHOOK = Webhook("cells.validate.cells.dev", "validate-cell", CELLS)
RULE_WEBHOOK = Webhook("routingrules.validate.cells.dev", "validate-routingrule", RULES)
CELL_DEFAULTS_WEBHOOK = Webhook("cells.default.cells.dev", "default-cell", CELLS, mutating=True, operations=("CREATE",))
WEBHOOKS = (CELL_WEBHOOK, RULE_WEBHOOK, CELL_DEFAULTS_WEBHOOK)
# ADR 0007: fail open. The status path catches whatever gets past, so an operator that is down or slow
# must not block every apply of every GitOps sync; and a short timeout bounds what a hung one costs.
FAILURE_POLICY = "Ignore"
TIMEOUT_SECONDS = 5
VALIDATING = "ValidatingWebhookConfiguration"
MUTATING = "MutatingWebhookConfiguration"


def webhook_configurations(
    name: str,
    *,
    url: str | None = None,
    ca_bundle: bytes | None = None,
    service: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The ``ValidatingWebhookConfiguration`` and ``MutatingWebhookConfiguration``, both called ``name``.

    Reach the operator either at ``url`` (local control plane: ``https://127.0.0.1:<port>``) or through a
    ``service`` reference (in a cluster, where cert-manager's CA injector fills the ``caBundle``).
    """
    if (url is None) == (service is None):
        raise ValueError("exactly one of url and service")
    configurations = []
    for kind in (VALIDATING, MUTATING):
        webhooks = []
        for hook in WEBHOOKS:
            if hook.mutating != (kind == MUTATING):
                continue
            if url is not None:
                client: dict[str, Any] = {"url": f"{url.rstrip('/')}/{hook.handler_id}"}
            else:
                client = {"service": {**dict(service or {}), "path": f"/{hook.handler_id}"}}
            if ca_bundle is not None:
                client["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
            webhook: dict[str, Any] = {
                "name": hook.name,
                "admissionReviewVersions": ["v1", "v1beta1"],
                "sideEffects": "None",
                "failurePolicy": FAILURE_POLICY,
                "timeoutSeconds": TIMEOUT_SECONDS,
                "matchPolicy": "Equivalent",
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "resources": [hook.plural],
                        "operations": list(hook.operations),
                        "scope": "Namespaced",
                    }
                ],
                "clientConfig": client,
            }
            if hook.mutating:
                webhook["reinvocationPolicy"] = "Never"
            webhooks.append(webhook)
        metadata: dict[str, Any] = {"name": name}
        if labels:
            metadata["labels"] = dict(labels)
        configurations.append(
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": metadata, "webhooks": webhooks}
        )
    return configurations


# The Service and the cert-manager Certificate of deploy/webhook, which the cluster configurations name.
DEPLOY_SERVICE = {"namespace": "cells-system", "name": "cells-operator-webhook", "port": 443}
DEPLOY_CERTIFICATE = "cells-system/cells-operator-webhook"
DEPLOY_HEADER = """\
# Generated by `cells-operator manifests webhooks > deploy/webhook/webhooks.yaml` from
# cells_operator.admission.webhook_configurations; tests/unit/test_admission.py fails if they drift apart.
# failurePolicy Ignore and a 5 s timeout are deliberate: see docs/adr/0007-admission-webhooks.md.
"""


def deploy_webhook_configurations() -> list[dict[str, Any]]:
    """The configurations shipped in deploy/webhook: a Service reference, CA injected by cert-manager."""
    docs = webhook_configurations("cells-operator", service=DEPLOY_SERVICE)
    for doc in docs:
        doc["metadata"]["annotations"] = {"cert-manager.io/inject-ca-from": DEPLOY_CERTIFICATE}
    return docs
