"""Read a Prometheus text exposition in the tests with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str, name: str) -> list[Sample]:
    """The samples named ``name`` in a Prometheus text exposition, read by prometheus_client's own parser."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels...}`` in a Prometheus text exposition (labels may be a subset; none given:
    the sample without labels), or None."""
    for sample in samples(text, name):
        if labels.items() <= sample.labels.items() if labels else not sample.labels:
            return sample.value
    return None
