"""Series whose label set disappeared go to zero rather than keeping their last value on dashboards."""

from cells_operator.metrics import OperatorMetrics


def test_a_stalled_reason_that_disappeared_goes_to_zero_and_others_are_untouched():
    m = OperatorMetrics()
    m.observe_stalled("ns", "Cell", ["A", "A", "B"])
    m.observe_stalled("other", "Cell", ["A"])
    m.observe_stalled("ns", "Cell", ["B"])

    def value(namespace, reason):
        labels = {"namespace": namespace, "kind": "Cell", "reason": reason}
        return m.registry.get_sample_value("cells_operator_stalled_resources", labels)

    assert (value("ns", "A"), value("ns", "B"), value("other", "A")) == (0.0, 1.0, 1.0)
