"""A tiny cell: answers every request with JSON saying which cell it is and what it received.

``python -m cells_dataplane.echo --name cell-2 --port 18002`` (demos and tests). ``/stream?chunks=N`` streams N
chunks with pauses (to prove the router does not buffer); ``/slow?seconds=S`` waits before answering;
``/set-cookie?name=N&value=V`` answers with that ``Set-Cookie`` (to prove the router keeps no cookie jar).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json

from aiohttp import web


def build(name: str) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/stream":
            response = web.StreamResponse(headers={"X-Cell": name, "Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(int(request.query.get("chunks", "5"))):
                await response.write(f"chunk {i} from {name}\n".encode())
                await asyncio.sleep(float(request.query.get("pause", "0.2")))
            await response.write_eof()
            return response
        extra = {}
        if request.path == "/set-cookie":
            extra["Set-Cookie"] = f"{request.query.get('name', 'echo')}={request.query.get('value', '1')}; Path=/"
        if request.path == "/slow":
            await asyncio.sleep(float(request.query.get("seconds", "5")))
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            digest.update(chunk)
            size += len(chunk)
        body = {
            "cell": name,
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {k: v for k, v in request.headers.items()},
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
            # The client's port: requests on one kept-alive connection share it (tests of connection reuse).
            "peer_port": (request.transport.get_extra_info("peername") or ("", 0))[1] if request.transport else 0,
        }
        return web.json_response(
            body,
            headers={
                "X-Cell": name,
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "must-not-pass",
                **extra,
            },
        )

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps({"cell": args.name, "port": args.port}), flush=True)
    web.run_app(build(args.name), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
