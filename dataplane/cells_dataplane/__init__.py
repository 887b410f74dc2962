"""Reference data plane for cells-operator: a Topology Service classify API and an HTTP router.

Both read the operator's ConfigMaps as files (mounted, as a kubelet does) and share the operator's
models of the two formats (:mod:`cells_operator.records`, :mod:`cells_operator.router_format`), so each
format has exactly one definition.
"""
