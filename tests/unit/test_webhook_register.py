"""Registering the admission webhooks rides out a briefly unavailable API server, with jittered waits,
and gives up at once (as a permanent kopf error) when the API server refuses the operator."""

from __future__ import annotations

import asyncio
import logging

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from tenacity import wait_fixed

from cells_operator.webhook import REGISTER_WAIT, _register

OBJ = {"kind": "ValidatingWebhookConfiguration", "metadata": {"name": "cells"}}
LOG = logging.getLogger("test")


class FlakyKube:
    """Fails with the given errors, in order, then succeeds."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def apply_webhook_configuration(self, obj):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def register(kube, **kw) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    asyncio.run(_register(kube, OBJ, LOG, wait=wait_fixed(1.0), sleep=sleep, **kw))
    return slept


def test_transient_failures_are_retried_until_the_api_server_answers(caplog):
    kube = FlakyKube(ApiException(status=503), ConnectionRefusedError())
    assert register(kube) == [1.0, 1.0]
    assert kube.calls == 3
    assert caplog.text.count("registering ValidatingWebhookConfiguration failed") == 2


@pytest.mark.parametrize("status", [401, 403, 422])
def test_a_refusal_is_permanent_at_once(status):
    kube = FlakyKube(ApiException(status=status))
    with pytest.raises(kopf.PermanentError, match="cannot register ValidatingWebhookConfiguration cells"):
        register(kube)
    assert kube.calls == 1


def test_the_last_attempt_fails_permanently():
    kube = FlakyKube(*[ApiException(status=503)] * 5)
    with pytest.raises(kopf.PermanentError):
        register(kube, attempts=3)
    assert kube.calls == 3


def test_other_errors_are_not_retried_nor_disguised():
    kube = FlakyKube(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        register(kube)
    assert kube.calls == 1


def test_the_default_waits_are_jittered_around_a_second():
    assert REGISTER_WAIT.wait_random_min == 0.5 and REGISTER_WAIT.wait_random_max == 1.5
