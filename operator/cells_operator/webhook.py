"""kopf wiring of the admission webhooks: serve them, and on the local control plane register them.

Thin on purpose, like :mod:`cells_operator.handlers`: each handler reads what the decision needs (the
namespace's Cells, the published records), calls the pure review in :mod:`cells_operator.admission`,
and answers. Two rules keep it safe to run in front of every ``kubectl apply``:

- it only ever refuses for a reason the status path would also give; anything it cannot check (records
  unreadable, API error, a namespace that is not ours) is *allowed*, with a warning when it is ours --
  the operator then reports the problem as status, as it always has;
- it never raises: kopf turns a handler exception into a refusal, which would make an operator bug
  block users. The configurations also fail open (``failurePolicy: Ignore``, ADR 0007).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import kopf
import tenacity
from kubernetes.client.exceptions import ApiException
from tenacity.wait import wait_base
from urllib3.exceptions import HTTPError

from cells_formats.records import TOPOLOGY_JSON, Topology, parse_topology_json

from .admission import (
    CELL_DEFAULTS_WEBHOOK,
    CELL_WEBHOOK,
    RULE_WEBHOOK,
    Review,
    Webhook,
    cell_finalizers_at_creation,
    review_cell,
    review_rule,
    webhook_configurations,
)
from .cell import GROUP, VERSION
from .cell import PLURAL as CELLS
from .certs import CertError, ServingCert, ensure_self_signed
from .config import MANAGED_BY, MANAGED_BY_LABEL, OperatorConfig
from .kube import Kube, load_api_client
from .rule import PLURAL as RULES

log = logging.getLogger(__name__)
# Reviews in flight at once; the API server sends them concurrently during a burst of applies.
ADMISSION_THREADS = 4
# Between tries to register the webhook configurations: about a second, jittered (30 tries, ~30 s).
REGISTER_WAIT = tenacity.wait_random(0.5, 1.5)


# ---------------------------------------------------------------------------------------------- server
def serving_cert(config: OperatorConfig) -> ServingCert:
    """The certificate to serve: made here if asked to (local), else expected from cert-manager."""
    directory = Path(config.webhook_cert_dir)
    if config.webhook_self_signed:
        try:
            return ensure_self_signed(directory, advertised_hosts(config))
        except (CertError, OSError) as exc:
            raise kopf.PermanentError(f"cannot make the webhook certificate in {directory}: {exc}") from exc
    cert = ServingCert(directory)
    if not cert.present():
        raise kopf.PermanentError(
            f"no webhook certificate in {directory} (tls.crt, tls.key): mount cert-manager's Secret there, "
            "or pass --webhook-self-signed"
        )
    return cert


def advertised_hosts(config: OperatorConfig) -> list[str]:
    """Who the API server dials: --webhook-host, else the listen address (loopback for a wildcard)."""
    host, _ = config.webhook_address
    if config.webhook_host:
        return [config.webhook_host]
    if host in ("", "0.0.0.0", "::"):
        return ["127.0.0.1", "localhost"]
    return [host]


def webhook_server(config: OperatorConfig, cert: ServingCert) -> kopf.WebhookServer:
    addr, port = config.webhook_address
    return kopf.WebhookServer(
        addr=addr,
        port=port,
        host=advertised_hosts(config)[0],
        certfile=str(cert.certfile),
        pkeyfile=str(cert.keyfile),
        cafile=str(cert.cafile),
    )


class _RefusalIsNotAnError(logging.Filter):
    """kopf logs every refused admission as an ERROR ("Webhook ... failed permanently"). A refusal is the
    webhook working, and a user's typo must not page anyone: we log it ourselves, at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Webhook ") and "failed permanently" in message and " is refused (" in message)


@dataclass
class AdmissionContext:
    """What reviews run on, kept apart from the reconcile loops: a reconcile of a big namespace holds a
    worker thread and API connections for seconds, and a review waiting behind it would time out and be
    admitted unchecked. Reviews get their own threads and their own API client (connection pool)."""

    kube: Kube
    pool: ThreadPoolExecutor

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger) -> None:
    """Called from the startup handler when ``--webhook-listen`` is set, at the start of every kopf run
    (the supervisor restarts kopf after transient failures): the server belongs to kopf's settings and
    is set every time; the review threads and the registration are done once per process."""
    config: OperatorConfig = memo.config
    cert = await asyncio.to_thread(serving_cert, config)
    settings.admission.server = webhook_server(config, cert)
    if getattr(memo, "admission", None) is not None:
        return
    logging.getLogger("kopf.objects").addFilter(_RefusalIsNotAnError())
    memo.admission = AdmissionContext(
        Kube(load_api_client()), ThreadPoolExecutor(max_workers=ADMISSION_THREADS, thread_name_prefix="admission")
    )
    addr, port = config.webhook_address
    if config.webhook_configuration:
        host = advertised_hosts(config)[0]
        url = f"https://{f'[{host}]' if ':' in host else host}:{port}"
        for obj in webhook_configurations(
            config.webhook_configuration,
            url=url,
            ca_bundle=cert.cafile.read_bytes(),
            labels={MANAGED_BY_LABEL: MANAGED_BY},
        ):
            await _register(memo.kube, obj, logger)
        logger.info("registered the %s admission webhooks at %s", config.webhook_configuration, url)
    logger.info("serving admission webhooks on %s:%s with the certificate in %s", addr, port, cert.directory)


def _transient(exc: BaseException) -> bool:
    """Worth another try: the API server (or the way to it) failed, but not because it refuses us."""
    refused = isinstance(exc, ApiException) and exc.status in (401, 403, 422)
    return isinstance(exc, (ApiException, HTTPError, OSError)) and not refused


async def _register(
    kube: Kube,
    obj: dict[str, Any],
    logger: kopf.Logger,
    attempts: int = 30,
    wait: wait_base = REGISTER_WAIT,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Create or replace one configuration, riding out a briefly unavailable API server. Retried here
    rather than by kopf: a failed startup handler is re-run whole, and its metrics port is taken."""

    def warn(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning("registering %s failed (%s); retrying", obj["kind"], error)

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait,
        retry=tenacity.retry_if_exception(_transient),
        before_sleep=warn,
        sleep=sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                await asyncio.to_thread(kube.apply_webhook_configuration, obj)
    except (ApiException, HTTPError, OSError) as exc:
        raise kopf.PermanentError(f"cannot register {obj['kind']} {obj['metadata']['name']}: {exc}") from exc


async def stop(memo: kopf.Memo, logger: kopf.Logger) -> None:
    """Unregister what :func:`start` registered: a stopped local operator leaves no webhook behind."""
    config: OperatorConfig = memo.config
    admission = getattr(memo, "admission", None)
    if admission is not None:
        admission.pool.shutdown(wait=False, cancel_futures=True)
    if config.webhook_listen and config.webhook_configuration:
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            await asyncio.to_thread(memo.kube.delete_webhook_configuration, kind, config.webhook_configuration)
        logger.info("unregistered the %s admission webhooks", config.webhook_configuration)


# ---------------------------------------------------------------------------------------------- handlers
def _records(kube: Kube, config: OperatorConfig, namespace: str) -> Topology:
    text = kube.read_configmap(namespace, config.topology_configmap).data.get(TOPOLOGY_JSON)
    return parse_topology_json(text) if text else Topology()


def _review_cell(kube: Kube, config: OperatorConfig, namespace: str, new: dict, old: dict | None) -> Review:
    return review_cell(new, old, kube.list_objects(CELLS, namespace), _records(kube, config, namespace))


def _review_rule(kube: Kube, config: OperatorConfig, namespace: str, new: dict, old: dict | None) -> Review:
    # Only a proxy to a named Cell looks at the records (for a warning): the rest need no API read.
    needs_records = bool(((new.get("spec") or {}).get("proxy") or {}).get("cellRef"))
    records = _records(kube, config, namespace) if needs_records else Topology()
    return review_rule(new, old, records, config.router_dialect)


async def _answer(
    hook: Webhook,
    kind: str,
    review_fn: Any,
    body: kopf.Body,
    old: kopf.Body | None,
    namespace: str | None,
    memo: kopf.Memo,
    warnings: list[str],
) -> None:
    config: OperatorConfig = memo.config
    if not namespace or not config.manages(namespace):
        return  # not ours to judge (and with namespaced RBAC, not ours to read)
    new = dict(body)
    meta = dict(new.get("metadata") or {})
    meta.setdefault("name", (meta.get("generateName") or "") + "<generated>")
    new["metadata"] = meta
    started = time.monotonic()
    try:
        review = await memo.admission.run(
            review_fn, memo.admission.kube, config, namespace, new, dict(old) if old else None
        )
    except Exception as exc:
        log.warning("%s %s/%s could not be reviewed: %s", kind, namespace, meta["name"], exc)
        memo.metrics.observe_admission(hook.handler_id, "unchecked", time.monotonic() - started)
        warnings.append(
            f"cells-operator could not check this {kind} at admission ({type(exc).__name__}): it is accepted, "
            "and its status will report any problem"
        )
        return
    warnings.extend(review.warnings)
    memo.metrics.observe_admission(
        hook.handler_id, "allowed" if review.allowed else "refused", time.monotonic() - started
    )
    if not review.allowed:
        assert review.problem is not None
        log.info("refused %s %s/%s: %s", kind, namespace, meta["name"], review.problem.message)
        raise kopf.AdmissionError(review.message(kind, meta["name"]), code=422)


# kopf passes ``old`` to admission handlers (None on CREATE), but its WebhookFn protocol does not name it:
# the default lets these handlers match that protocol.
async def validate_cell(body: kopf.Body, old: kopf.Body | None = None, *, namespace: str | None, memo: kopf.Memo,
                        warnings: list[str], **_: Any) -> None:  # fmt: skip
    await _answer(CELL_WEBHOOK, "Cell", _review_cell, body, old, namespace, memo, warnings)


async def validate_rule(body: kopf.Body, old: kopf.Body | None = None, *, namespace: str | None, memo: kopf.Memo,
                        warnings: list[str], **_: Any) -> None:  # fmt: skip
    await _answer(RULE_WEBHOOK, "RoutingRule", _review_rule, body, old, namespace, memo, warnings)


async def default_cell(body: kopf.Body, namespace: str | None, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Create every Cell of ours with the operator's finalizer (one API write fewer per Cell)."""
    if not namespace or not memo.config.manages(namespace):
        return
    started = time.monotonic()
    finalizers = cell_finalizers_at_creation(dict(body))
    if finalizers is not None:
        patch.metadata["finalizers"] = finalizers
    memo.metrics.observe_admission(CELL_DEFAULTS_WEBHOOK.handler_id, "allowed", time.monotonic() - started)


class _Common(TypedDict):
    """What all three admission handlers register with."""

    ignore_failures: bool
    side_effects: bool
    persistent: bool


def register() -> None:
    """Register the admission handlers with kopf; only when a webhook server is configured, because kopf
    refuses to start with admission handlers and no server."""
    common = _Common(ignore_failures=True, side_effects=False, persistent=False)
    kopf.on.validate(GROUP, VERSION, CELLS, id=CELL_WEBHOOK.handler_id, operations=["CREATE", "UPDATE"], **common)(
        validate_cell
    )
    kopf.on.validate(GROUP, VERSION, RULES, id=RULE_WEBHOOK.handler_id, operations=["CREATE", "UPDATE"], **common)(
        validate_rule
    )
    kopf.on.mutate(GROUP, VERSION, CELLS, id=CELL_DEFAULTS_WEBHOOK.handler_id, operations=["CREATE"], **common)(
        default_cell
    )
