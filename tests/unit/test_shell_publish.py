"""``publish_configmap`` against an in-memory API: read -> plan -> write at the read resourceVersion, and
what it does with each answer the API server can give (created, 409, 404, 422, 403 terminating)."""

from __future__ import annotations

import inspect

import pytest
from kubernetes.client.exceptions import ApiException

from cells_operator.kube import ConfigMapState, Kube
from cells_operator.leader import NotLeader
from cells_operator.publish import PublishConflicts, publish_configmap
from tests.support.fake_kube import FAKED, MAX_CONFIGMAP_BYTES, FakeKube

NS, NAME = "ns", "out"


class Planner:
    """A plan that records what it was shown: ``value`` under key ``v``, and which content it read."""

    def __init__(self, value: str = "mine"):
        self.value = value
        self.seen: list[ConfigMapState] = []

    def __call__(self, current: ConfigMapState) -> tuple[dict[str, str], dict[str, str | None], str]:
        self.seen.append(current)
        return {"v": self.value}, {"by": "operator"}, f"planned over {current.data.get('v')}"


def publish(kube: FakeKube, planner: Planner, retries: int = 8):
    return publish_configmap(kube, NS, NAME, planner, retries)


def test_first_publish_creates_it():
    kube, planner = FakeKube(), Planner()
    out = publish(kube, planner)
    assert out.written and out.conflicts == 0 and out.plan == "planned over None"
    assert kube.read_configmap(NS, NAME).data == {"v": "mine"}
    assert out.bytes == len("v") + len("mine")


def test_the_same_content_again_writes_nothing():
    kube = FakeKube()
    publish(kube, Planner())
    kube.requests.clear()
    out = publish(kube, Planner())
    assert not out.written and kube.requests == [] and out.bytes == len("v") + len("mine")


def test_a_stale_write_is_replanned_against_what_the_other_writer_wrote():
    kube = FakeKube()
    kube.put_configmap(NS, NAME, {"v": "first"})
    kube.before_configmap_write.append(lambda: kube.put_configmap(NS, NAME, {"v": "theirs"}))
    planner = Planner()
    out = publish(kube, planner)
    assert out.written and out.conflicts == 1  # the 409, then a fresh read and a new plan
    assert [s.data.get("v") for s in planner.seen] == ["first", "theirs"]
    assert out.plan == "planned over theirs"


def test_created_by_someone_else_first_is_a_conflict_and_a_replan():
    kube, planner = FakeKube(), Planner()
    kube.before_configmap_write.append(lambda: kube.put_configmap(NS, NAME, {"v": "theirs"}))
    out = publish(kube, planner)
    assert out.conflicts == 1 and [s.resource_version is None for s in planner.seen] == [True, False]


def test_deleted_between_read_and_replace_is_created_again():
    """A replace of a ConfigMap that is gone is a 404: re-read (absent) and create."""
    kube = FakeKube()
    kube.put_configmap(NS, NAME, {"v": "old"})
    kube.before_configmap_write.append(lambda: kube.delete_configmap(NS, NAME))
    out = publish(kube, Planner())
    assert out.written and out.conflicts == 1 and kube.read_configmap(NS, NAME).data == {"v": "mine"}


def test_a_writer_that_always_wins_makes_it_give_up_after_the_retries():
    kube = FakeKube()
    for i in range(3):
        kube.before_configmap_write.append(lambda i=i: kube.put_configmap(NS, NAME, {"v": f"theirs-{i}"}))
    with pytest.raises(PublishConflicts, match="gave up after 3 write conflicts"):
        publish(kube, Planner(), retries=3)
    assert kube.writes == 3


def test_an_oversized_configmap_is_not_sent_and_what_is_published_stays():
    """Decided before writing (a 422 cannot be fixed by re-planning): no request, and the caller is told
    why, with the plan it made, so it can report it."""
    kube = FakeKube()
    publish(kube, Planner())
    kube.requests.clear()
    out = publish(kube, Planner("x" * (MAX_CONFIGMAP_BYTES + 1)))
    assert not out.written and out.too_large is not None and "over the ConfigMap limit" in out.too_large
    assert out.plan == "planned over mine" and kube.requests == []
    assert kube.read_configmap(NS, NAME).data == {"v": "mine"}


def test_others_labels_annotations_finalizers_and_owners_survive_a_publish():
    """Argo CD, Flux or a person added metadata to our ConfigMap: the replace keeps it, sets only ours."""
    kube = FakeKube()
    publish(kube, Planner("first"))
    current = kube.read_configmap(NS, NAME)
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": "u-1"}
    kube.put_configmap(
        NS,
        NAME,
        current.data,
        {**current.annotations, "argocd.argoproj.io/tracking-id": "app:x"},
        labels={**current.labels, "team": "routing"},
        finalizers=["example.com/keep"],
        owner_references=[owner],
    )
    assert publish(kube, Planner("second")).written
    after = kube.read_configmap(NS, NAME)
    assert after.data == {"v": "second"} and after.annotations["by"] == "operator"
    assert after.annotations["argocd.argoproj.io/tracking-id"] == "app:x"
    assert after.labels["team"] == "routing" and after.finalizers == ["example.com/keep"]
    assert after.owner_references == [owner]


def test_exactly_one_mib_of_values_is_accepted():
    """Probed on kube-apiserver 1.37: values of exactly 1 MiB pass, keys not counted (ValidateConfigMap
    refuses a total over MaxSecretSize)."""
    kube = FakeKube()
    assert publish(kube, Planner("x" * MAX_CONFIGMAP_BYTES)).written


def test_in_a_namespace_being_deleted_a_create_is_forbidden():
    kube = FakeKube()
    kube.terminate_namespace(NS)
    with pytest.raises(ApiException) as exc:
        publish(kube, Planner())
    assert exc.value.status == 403 and "being terminated" in exc.value.body


def test_in_a_namespace_being_deleted_an_existing_configmap_is_still_replaced():
    """NamespaceLifecycle refuses creates only: what still exists may be updated until it is deleted."""
    kube = FakeKube()
    kube.put_configmap(NS, NAME, {"v": "old"})
    kube.terminating.add(NS)
    assert publish(kube, Planner()).written


def test_a_replica_that_lost_the_lease_writes_nothing():
    kube = FakeKube()
    kube.fence = lambda: False
    with pytest.raises(NotLeader):
        publish(kube, Planner())
    assert kube.requests == [] and kube.read_configmap(NS, NAME).resource_version is None


def test_the_fake_replaces_every_verb_that_sends_a_request_with_the_same_signature():
    """The fake must stay the seam's twin: a new verb on Kube is faked here, or a test would reach for
    a real API client. Inherited (and so run as in production): the write counter, fence and logging."""
    public = {n for n, f in inspect.getmembers(Kube, inspect.isfunction) if not n.startswith("_")}
    assert public - FAKED == {"write_status"}
    for name in FAKED:
        assert inspect.signature(getattr(FakeKube, name)) == inspect.signature(getattr(Kube, name)), name
