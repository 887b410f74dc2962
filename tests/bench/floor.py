"""Reference proxies for the data-plane benchmark: how fast a Python proxy can be at all, measured in the same run.

Neither routes: both forward every request to one upstream on a kept-alive connection, on uvloop. They
bound what the router could reach by changing only its own code (ADR 0018):
- ``aiohttp``: aiohttp's server and client, as the router uses them, with no rules, metrics or header
  filtering -- the floor of the router's current HTTP stack;
- ``raw``: asyncio streams that read a request head up to its blank line, write it to the upstream, and
  copy back the answer's head and ``Content-Length`` body, with no HTTP parsing at all -- the floor of any
  Python proxy (it is no proxy one could ship: GET only, nothing checked).

``python -m tests.bench.floor {aiohttp|raw} PORT UPSTREAM_HOST:PORT``
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import uvloop
from aiohttp import web


async def aiohttp_proxy(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())

    async def handle(request: web.Request) -> web.Response:
        url = f"http://{upstream}{request.rel_url}"
        async with session.request(request.method, url, headers=request.headers, allow_redirects=False) as answer:
            body = await answer.read()
            return web.Response(status=answer.status, body=body, content_type=answer.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def raw_forwarder(port: int, upstream: str) -> None:
    host, _, upstream_port = upstream.rpartition(":")

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cell_reader, cell_writer = await asyncio.open_connection(host, int(upstream_port))
        try:
            while True:
                cell_writer.write(await reader.readuntil(b"\r\n\r\n"))
                head = await cell_reader.readuntil(b"\r\n\r\n")
                at = head.lower().index(b"content-length:") + len(b"content-length:")
                writer.write(head + await cell_reader.readexactly(int(head[at : head.index(b"\r\n", at)])))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            cell_writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    await server.serve_forever()


KINDS = {"aiohttp": aiohttp_proxy, "raw": raw_forwarder}


def floor_argv(kind: str, port: int, upstream: str) -> list[str]:
    return [sys.executable, "-m", "tests.bench.floor", kind, str(port), upstream]


if __name__ == "__main__":
    kind, port, upstream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    uvloop.run(KINDS[kind](port, upstream))
