"""Follow a mounted ConfigMap file: reload on change, keep the last good content when a change is bad.

Kubelet updates a ConfigMap volume by swapping a symlink, and editors or tests may rewrite files in
place, so change detection is by content hash (polled), not by inotify on one inode. A file that does not
parse -- half-written, hand-broken -- is rejected: the previous good value stays in service, and the
rejection is counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class WatchedFile(Generic[T]):
    def __init__(
        self,
        path: Path,
        parse: Callable[[bytes], T],
        on_reload: Callable[[T], None] | None = None,
        on_reject: Callable[[str], None] | None = None,
        interval: float = 1.0,
    ):
        self.path = Path(path)
        self.parse = parse
        self.on_reload = on_reload
        self.on_reject = on_reject
        self.interval = interval
        self.value: T | None = None
        self.digest: str | None = None
        self.rejected_digest: str | None = None
        self._task: asyncio.Task | None = None

    @property
    def loaded(self) -> bool:
        return self.value is not None

    def check(self) -> bool:
        """Reload if the content changed; True if a new value is now in service."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            if self.value is None:
                log.warning("cannot read %s yet: %s", self.path, exc)
            return False
        digest = hashlib.sha256(raw).hexdigest()
        if digest in (self.digest, self.rejected_digest):
            return False
        try:
            value = self.parse(raw)
        except Exception as exc:  # any parse failure: keep the last good value
            self.rejected_digest = digest
            message = f"rejected {self.path}: {exc}".splitlines()[0][:500]
            log.error("%s; keeping the last good version", message)
            if self.on_reject:
                self.on_reject(message)
            return False
        self.value, self.digest, self.rejected_digest = value, digest, None
        log.info("loaded %s (sha256 %s)", self.path, digest[:12])
        if self.on_reload:
            self.on_reload(value)
        return True

    async def _poll(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.check()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
