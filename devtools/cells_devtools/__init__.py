"""Developer tooling for cells-operator (ADR 0016): the local control plane, the demo, the ConfigMap mirror.

Not shipped in any image and not imported by the operator or the data plane: ``cells-dev`` drives them
from a checkout (``make cluster``, ``make demo``) and the tests use them.
"""
