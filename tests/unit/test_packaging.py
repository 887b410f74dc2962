"""The package boundaries of ADR 0016, proven by running things rather than by reading import lines.

import-linter (``make lint``) checks the static imports; these tests check what a user gets: the data
plane's distributions declare no dependency on kopf or the kubernetes client, none arrives
transitively, and the router and Topology Service start and route a request in a Python where kopf,
kubernetes and the operator's package cannot be imported at all (as in their images).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# What the data plane's images must not contain: the operator, its framework and its API client.
OPERATOR_ONLY = {"kopf", "kubernetes", "cells-operator", "cells-devtools"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement (``"google-re2>=1.1"`` -> ``google-re2``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _declared(pyproject: Path) -> set[str]:
    return {_name(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]}


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("formats", {"pydantic", "tomli-w"}),
        ("dataplane", {"cells-formats", "aiohttp", "prometheus-client", "google-re2", "uvloop"}),
    ],
)
def test_formats_and_data_plane_declare_no_operator_dependency(folder, expected):
    declared = _declared(ROOT / folder / "pyproject.toml")
    assert declared == expected
    assert not declared & OPERATOR_ONLY


def _closure(distribution: str) -> set[str]:
    """Every installed distribution ``distribution`` pulls in on this Python (no extras), itself included."""
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = _name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def test_the_data_plane_installs_without_kopf_or_the_kubernetes_client():
    """Transitively too: an image built from formats/ and dataplane/ has neither (Dockerfile)."""
    closure = _closure("cells-dataplane")
    assert {"cells-formats", "aiohttp", "google-re2"} <= closure
    assert not closure & OPERATOR_ONLY


def test_the_operator_depends_on_the_formats_and_not_on_the_dev_tools():
    declared = _declared(ROOT / "pyproject.toml")
    assert {"cells-formats", "cells-dataplane", "kopf", "kubernetes"} <= declared
    assert "cells-devtools" not in _closure("cells-operator")


# Runs in a fresh interpreter: a finder refuses the operator's modules before anything is imported, then
# the Topology Service and the router start on loopback sockets and one request goes the whole way:
# router -> rule (cookie, session prefix) -> Topology Service classify -> proxied to the cell's address,
# which is the Topology Service itself, so no third process is needed.
STANDALONE = textwrap.dedent(
    """
    import asyncio, importlib.abc, json, socket, sys, tempfile
    from pathlib import Path

    BLOCKED = ("kopf", "kubernetes", "cells_operator", "cells_devtools")

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is blocked: the data plane must not need it", name=name)
            return None

    sys.meta_path.insert(0, Refuse())

    import aiohttp
    from aiohttp import web
    from cells_dataplane import router as router_module, topology_service
    from cells_formats.records import CellRecord, Topology, render_topology_json
    from cells_formats.fields import CellState, SequenceRange

    def listening() -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        return sock

    async def serve(app: web.Application, sock: socket.socket) -> web.AppRunner:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return runner

    async def main() -> None:
        folder = Path(tempfile.mkdtemp())
        ts_sock, router_sock = listening(), listening()
        ts_address = "127.0.0.1:%d" % ts_sock.getsockname()[1]
        cell = CellRecord(
            name="cell-7", uid="u7", id=7, address=ts_address, session_prefix="cell-7",
            state=CellState.ACTIVE, first_cell=True, sequence_ranges=(SequenceRange(minval=1, maxval=10),),
        )
        (folder / "topology.json").write_text(render_topology_json(Topology(revision=1, cells=(cell,))))
        rule = {
            "match": {"type": "cookie", "regex_name": "^_gitlab_session$", "regex_value": "^(?<p>cell-[0-9]+)-"},
            "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${p}"},
        }
        (folder / "session_token.json").write_text(json.dumps([rule]))
        router = router_module.Router(folder / "session_token.json", "http://" + ts_address)
        app, _admin = router_module.build_apps(router)
        runners = [
            await serve(topology_service.build_app(folder / "topology.json"), ts_sock),
            await serve(app, router_sock),
        ]
        try:
            url = "http://127.0.0.1:%d/openapi.json" % router_sock.getsockname()[1]
            async with aiohttp.ClientSession(cookies={"_gitlab_session": "cell-7-abc"}) as session:
                async with session.get(url) as resp:
                    body = await resp.json()
                    print(json.dumps({"status": resp.status, "openapi": "openapi" in body}))
        finally:
            for runner in reversed(runners):
                await runner.cleanup()
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({"leaked": leaked}))

    asyncio.run(main())
    """
)


def test_router_and_topology_service_run_where_kopf_and_the_operator_cannot_be_imported():
    proc = subprocess.run([sys.executable, "-c", STANDALONE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == ['{"status": 200, "openapi": true}', '{"leaked": []}'], proc.stdout + proc.stderr


def test_the_blocker_really_blocks():
    """Without this, a finder that never fires would make the test above pass for the wrong reason."""
    script = STANDALONE.split("import aiohttp")[0] + "import cells_operator.cell\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "cells_operator.cell is blocked" in proc.stderr or "cells_operator is blocked" in proc.stderr
