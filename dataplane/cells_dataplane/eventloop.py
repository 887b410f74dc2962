"""The data plane's event loop: uvloop by default, the standard library's on request (ADR 0018).

uvloop (libuv) does the same socket work as asyncio's selector loop in C; ``--loop asyncio`` keeps the
standard loop one flag away, for comparison (``make bench`` measures both) or should uvloop misbehave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LOOPS = ("uvloop", "asyncio")
DEFAULT_LOOP = "uvloop"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop of the kind ``name`` (one of :data:`LOOPS`)."""
    if name not in LOOPS:
        raise ValueError(f"event loop must be one of {', '.join(LOOPS)}, got {name!r}")
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop
