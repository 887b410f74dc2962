"""Wire formats shared by the cells operator and its data plane (ADR 0016).

Each format the operator writes and the data plane reads has exactly one definition, here: the
Topology Service records (:mod:`cells_formats.records`, built of :mod:`cells_formats.fields`), the HTTP
router's rules (:mod:`cells_formats.router_format`) and the ECMAScript patterns those rules match with
(:mod:`cells_formats.ecmaregex`). This package depends on pydantic and tomli-w only: never on kopf, the kubernetes
client, aiohttp, or the operator and data plane packages that use it.
"""
