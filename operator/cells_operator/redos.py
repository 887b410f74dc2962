"""Catastrophic-backtracking (ReDoS) check for routing patterns (ADR 0013).

A pattern such as ``^(a+)+$`` makes a backtracking engine -- the edge router's JavaScript engine, and this
project's ECMAScript evaluator -- take time exponential in the input: a 30-character cookie stops a router
process for minutes. The operator refuses such patterns before they are published, in admission and in
the planner (both go through :func:`cells_operator.rule.render_rule`), with reason ``CatastrophicPattern``.

The verdict comes from `recheck <https://makenowjust-labs.github.io/recheck/>`_, a checker made for
ECMAScript patterns (automaton analysis, fuzzing where the automaton cannot model the pattern), run by
Node.js from ``tools/recheck`` (installed by ``make recheck``). This module is the thin shell around it
(one long-lived ``node`` process, answers cached per pattern) plus the pure policy
:func:`catastrophic_problem`, which decides from a verdict and names the offending part of the pattern.

Policy: refuse exponential complexity and polynomial complexity of degree >= ``MAX_DEGREE``; accept
quadratic (linear in the cookie/header cap times itself is bounded by the router's value cap and matching
budget, and refusing it would refuse common patterns such as ``^.*-.*$``). A pattern the checker cannot
judge (``unknown``) or a checker that is not installed is *accepted and counted* (``unchecked``): the
router's linear-time engine and matching budget bound it at the edge, and the alert
``CellsCatastrophicPatternRefused``/the counter say so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REASON = "CatastrophicPattern"
MAX_DEGREE = 3  # polynomial of this degree or more is refused; quadratic is accepted (see module doc)
RECHECK_DIR_ENV = "CELLS_RECHECK_DIR"
_DEFAULT_DIRS = (
    Path(__file__).resolve().parents[2] / "tools" / "recheck",  # a checkout (make recheck)
    Path("/opt/cells/recheck"),  # the operator image
)


@dataclass(frozen=True)
class Verdict:
    """What the checker said about one pattern."""

    status: str  # safe | vulnerable | unknown | unchecked
    complexity: str | None = None  # constant | linear | safe | polynomial | exponential
    degree: int | None = None
    hotspots: tuple[tuple[int, int], ...] = ()  # [start, end) in the pattern
    attack: str | None = None  # the checker's attack string, as a JavaScript expression
    attack_string: str | None = field(default=None, repr=False, compare=False)  # the same, evaluated
    error: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            status=str(data.get("status", "unknown")),
            complexity=data.get("complexity"),
            degree=data.get("degree"),
            hotspots=tuple((int(s), int(e)) for s, e in data.get("hotspots") or ()),
            attack=data.get("attack"),
            attack_string=data.get("attack_string"),
            error=data.get("error"),
        )


UNCHECKED = Verdict("unchecked", error="no ReDoS checker installed (make recheck)")


def catastrophic_problem(field: str, pattern: str, verdict: Verdict) -> str | None:
    """The refusal message for ``pattern`` (in ``field``) if ``verdict`` is catastrophic, else None. Pure."""
    if verdict.status != "vulnerable":
        return None
    if verdict.complexity == "polynomial" and (verdict.degree or 0) < MAX_DEGREE:
        return None
    if verdict.complexity == "exponential":
        how = "exponential backtracking"
    else:
        how = f"polynomial backtracking of degree {verdict.degree}"
    parts = [pattern[s:e] for s, e in verdict.hotspots if 0 <= s < e <= len(pattern)]
    where = ", ".join(f"{p!r} at {s}" for p, (s, _) in zip(parts, verdict.hotspots, strict=False)) or "the pattern"
    attack = f"; for example {verdict.attack}" if verdict.attack else ""
    return (
        f"{field}: /{pattern}/ can take {how} on a hostile input ({where}){attack}. "
        "Rewrite the repeated part so that each character can be matched in only one way "
        "(e.g. (a+)+ -> a+, (a|a)* -> a*)"
    )


class Recheck:
    """One long-lived ``node check.js`` process; thread-safe, answers cached per pattern."""

    def __init__(self, directory: Path, node: str, timeout: float = 30.0):
        self.directory = directory
        self.node = node
        self.timeout = timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._cache: dict[str, Verdict] = {}

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.node, str(self.directory / "check.js")],
            cwd=self.directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    def __call__(self, pattern: str) -> Verdict:
        with self._lock:
            if pattern in self._cache:
                return self._cache[pattern]
            verdict = self._ask(pattern)
            if verdict.status in ("safe", "vulnerable", "unknown"):
                self._cache[pattern] = verdict  # a checker failure is not remembered: the next call retries
            return verdict

    def _ask(self, pattern: str) -> Verdict:
        for _attempt in range(2):
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"pattern": pattern}) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except (BrokenPipeError, OSError) as exc:
                line = ""
                log.warning("ReDoS checker failed: %r", exc)
            if line:
                return Verdict.from_json(json.loads(line))
            self.close()
        return Verdict("unchecked", error="the ReDoS checker process died")

    def close(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.kill()
            proc.wait()


def find_recheck() -> Recheck | None:
    """The installed checker: ``$CELLS_RECHECK_DIR``, a checkout's ``tools/recheck``, or the image's copy."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        return None
    env = os.environ.get(RECHECK_DIR_ENV)
    for directory in (Path(env),) if env else _DEFAULT_DIRS:
        if (directory / "check.js").is_file() and (directory / "node_modules" / "recheck").is_dir():
            return Recheck(directory, node)
    return None


Checker = Callable[[str], Verdict]
_checker: Checker | None = None
_configured = False
_lock = threading.Lock()


def configure(checker: Checker | None) -> None:
    """Use ``checker`` for every pattern from now on (tests inject a fake; None means unchecked)."""
    global _checker, _configured
    with _lock:
        _checker, _configured = checker, True


def verdict(pattern: str) -> Verdict:
    """The verdict of the configured checker (found on first use); :data:`UNCHECKED` without one."""
    global _checker, _configured
    with _lock:
        if not _configured:
            _checker, _configured = find_recheck(), True
            if _checker is None:
                log.warning("no ReDoS checker installed: catastrophic patterns are not refused (make recheck)")
        checker = _checker
    if checker is None:
        return UNCHECKED
    return checker(pattern)
