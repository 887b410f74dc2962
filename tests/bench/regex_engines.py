"""``python -m tests.bench.regex_engines``: the project's ECMAScript evaluator (``ecmaregex``) against
``regress`` (Python bindings to the Rust ECMAScript engine), measured on the differential corpus of
``tests/unit/test_ecmaregex_differential.py`` with Node.js (V8) as the reference (ADR 0003).

Per engine: how many patterns agree with V8 on every input (accept/reject the pattern alike; same index,
matched text, numbered and named groups), how many the engine refuses on purpose (ecmaregex's
``UnsupportedPattern``), how many disagree (with the first few examples), and the time to compile the
corpus and to match it. ``regress`` reports neither the number nor the names of a pattern's groups, so
the groups it is asked for are those V8 reported: a help to regress, not a handicap. ``regress`` reports
offsets in UTF-8 bytes; they are turned into UTF-16 code units, as JavaScript counts them.

Timings are the best of ``--repeat`` runs (the machine is shared); only ratios between the engines mean
anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import regress

from cells_formats.ecmaregex import PatternError, compile_pattern
from tests.unit.test_ecmaregex_differential import (
    CURATED,
    INPUTS,
    SHORT_INPUTS,
    python_side,
    random_pattern,
    run_node,
)


@dataclass
class Tally:
    agreed: int = 0
    refused: int = 0  # refused on purpose (unsupported), not a disagreement
    mismatches: list[str] = field(default_factory=list)


def _utf16_index(text: str, byte_offset: int) -> int:
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8").encode("utf-16-le", "surrogatepass")) // 2


def _slice_text(text: str, span: slice | None) -> str | None:
    return None if span is None else text.encode("utf-8")[span.start : span.stop].decode("utf-8")


def regress_side(pattern: str, inputs: list[str], expected: dict) -> dict:
    """regress on the corpus, shaped like the oracle's answer; group layout taken from V8's answer."""
    try:
        compiled = regress.Regex(pattern)
    except regress.RegressError as exc:
        return {"error": str(exc)}
    results = []
    for i, text in enumerate(inputs):
        try:
            m = compiled.find(text)
        except Exception as exc:  # e.g. text the binding cannot pass to Rust
            results.append({"failed": repr(exc)})
            continue
        if m is None:
            results.append(None)
            continue
        js = (expected.get("results") or [None] * len(inputs))[i] or {"groups": [], "named": {}}
        results.append(
            {
                "index": _utf16_index(text, m.range().start),
                "text": _slice_text(text, m.range()),
                "groups": [_slice_text(text, m.group(n)) for n in range(1, len(js["groups"]) + 1)],
                "named": {name: _slice_text(text, m.named_group(name)) for name in js["named"]},
            }
        )
    return {"results": results}


def ecmaregex_side(pattern: str, inputs: list[str], expected: dict) -> dict:
    """Our engine, exactly as the differential unit test runs it against the same oracle."""
    return python_side(pattern, inputs)


def tally(side: Callable[[str, list[str], dict], dict], patterns: list[str], inputs: list[str], oracle: list[dict]):
    t = Tally()
    for pattern, js in zip(patterns, oracle, strict=True):
        got = side(pattern, inputs, js)
        if "unsupported" in got:
            t.refused += 1
            continue
        if ("error" in js) != ("error" in got):
            t.mismatches.append(f"/{pattern}/: V8 {js.get('error', 'accepts')}; engine {got.get('error', 'accepts')}")
            continue
        bad = next(
            (
                f"/{pattern}/ on {text!r}: V8 {a}, engine {b}"
                for text, a, b in zip(inputs, js.get("results", []), got.get("results", []), strict=False)
                if a != b
            ),
            None,
        )
        if bad:
            t.mismatches.append(bad)
        else:
            t.agreed += 1
    return t


def _best(repeat: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        re.purge()  # Python's own cache of compiled expressions would make ecmaregex's compile look free
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def timings(patterns: list[str], inputs: list[str], repeat: int) -> dict[str, dict[str, float]]:
    """Seconds to compile every pattern of the corpus (rejections included: validation is half the work),
    and to search every input with each pattern the engine accepts."""

    def compiled_with(make: Callable[[str], object], errors: tuple[type[Exception], ...]) -> list:
        out = []
        for p in patterns:
            with contextlib.suppress(errors):
                out.append(make(p))
        return out

    engines = {
        # uncached: compile_pattern keeps the last 4,096 patterns, which would time a dictionary look-up
        "ecmaregex": (compile_pattern.__wrapped__, (PatternError,), lambda c, s: c.search(s)),
        "regress": (regress.Regex, (regress.RegressError,), lambda c, s: c.find(s)),
    }
    out = {}
    for name, (make, errors, search) in engines.items():
        compiled = compiled_with(make, errors)
        out[name] = {
            "compile_s": _best(repeat, lambda make=make, errors=errors: compiled_with(make, errors)),
            "match_s": _best(
                repeat, lambda compiled=compiled, search=search: [search(c, s) for c in compiled for s in inputs]
            ),
            "patterns_compiled": len(compiled),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=3000, help="random patterns drawn (fixed seed)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--examples", type=int, default=8, help="mismatches shown per engine and corpus")
    args = parser.parse_args()
    rng = random.Random(20261128)  # the seed of the differential test: the same corpus
    corpora = {
        "curated": (CURATED, INPUTS),
        "random": (sorted({random_pattern(rng) for _ in range(args.random)}), SHORT_INPUTS),
    }
    report: dict[str, dict] = {}
    for corpus, (patterns, inputs) in corpora.items():
        oracle = run_node([{"pattern": p, "inputs": inputs} for p in patterns])
        report[corpus] = {"patterns": len(patterns), "inputs": len(inputs)}
        for engine, side in (("ecmaregex", ecmaregex_side), ("regress", regress_side)):
            t = tally(side, patterns, inputs, oracle)
            report[corpus][engine] = {
                "agreed": t.agreed,
                "refused": t.refused,
                "mismatched": len(t.mismatches),
                "examples": t.mismatches[: args.examples],
            }
        report[corpus]["timing"] = timings(patterns, inputs, args.repeat)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
