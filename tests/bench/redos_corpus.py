"""How often the ReDoS check refuses patterns, and whether each refusal is real (ADR 0013).

Runs every pattern of the project's own samples, the curated routing and corner-case patterns and the
3,000 random patterns of the ECMAScript differential test (those the evaluator supports) through the
checker. Each refused pattern is then *confirmed*: the checker's attack string (cut to the router's 8 KiB
value cap) is matched by the project's ECMAScript evaluator in a child process; a refusal whose attack
still finishes within 1 s is counted a false positive. Prints a Markdown table for the ADR.

    .venv/bin/python -m tests.bench.redos_corpus
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from cells_formats.ecmaregex import PatternError, compile_pattern
from cells_operator import redos
from tests.unit.test_ecmaregex_differential import CURATED, random_pattern

ROOT = Path(__file__).resolve().parents[2]
CAP = 8 * 1024
CONFIRM_SECONDS = 1.0


def project_patterns() -> list[str]:
    """regexName/regexValue of deploy/samples and every pattern written in the unit and integration tests."""
    found = []
    for path in [*ROOT.glob("deploy/**/*.yaml"), *ROOT.glob("tests/**/*.py")]:
        text = path.read_text()
        found += re.findall(r"regex(?:Name|Value|_name|_value)[\"']?\s*[:=]\s*r?[\"']?([^\"'\n,}]+)", text)
    return sorted({p.strip() for p in found if p.strip()})


def supported(pattern: str) -> bool:
    try:
        compile_pattern(pattern)
    except PatternError:
        return False
    return True


def confirmed(pattern: str, attack: str) -> bool:
    """Whether matching the attack string (capped) takes the evaluator longer than CONFIRM_SECONDS."""
    code = (
        "import json, sys; from cells_formats.ecmaregex import compile_pattern; p, s = json.load(sys.stdin);"
        "print(flush=True); compile_pattern(p).search(s)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps([pattern, attack[:CAP]]))
    proc.stdin.close()
    proc.stdout.readline()  # imported and parsed: the clock starts now
    try:
        proc.wait(timeout=CONFIRM_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
    return False


def main() -> None:
    checker = redos.find_recheck()
    if checker is None:
        sys.exit("no ReDoS checker: run make recheck")
    rng = random.Random(20261128)
    corpora = {
        "project samples and tests": project_patterns(),
        "curated (differential test)": list(CURATED),
        "random (differential test, seed 20261128)": sorted({random_pattern(rng) for _ in range(3000)}),
    }
    print("| corpus | patterns | refused | confirmed by attack | false positives | unknown | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, patterns in corpora.items():
        patterns = [p for p in patterns if supported(p)]
        started = time.perf_counter()
        counts: Counter[str] = Counter()
        false_positives = []
        for p in patterns:
            v = checker(p)
            counts[v.status] += 1
            if redos.catastrophic_problem("p", p, v):
                counts["refused"] += 1
                if v.attack_string is not None and confirmed(p, v.attack_string):
                    counts["confirmed"] += 1
                else:
                    false_positives.append(p)
        elapsed = time.perf_counter() - started
        print(
            f"| {name} | {len(patterns)} | {counts['refused']} | {counts['confirmed']} | {len(false_positives)} "
            f"| {counts['unknown']} | {elapsed:.0f} |"
        )
        for p in false_positives:
            print(f"  false positive: /{p}/", file=sys.stderr)
    checker.close()


if __name__ == "__main__":
    main()
