"""Reference data plane for cells-operator: a Topology Service classify API and an HTTP router.

Both read the operator's ConfigMaps as files (mounted, as a kubelet does) and share the operator's
models of the two formats (:mod:`cells_formats.records`, :mod:`cells_formats.router_format`), so each
format has exactly one definition. This package depends on :mod:`cells_formats` and never on the
operator, kopf or the kubernetes client (ADR 0016).
"""
