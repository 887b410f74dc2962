// ReDoS verdicts for routing patterns (ADR 0013), by recheck ("the trustworthy ReDoS checker").
// Protocol: one JSON request per line on stdin, {"pattern": "..."}; one JSON answer per line on stdout:
//   {"status": "safe"|"vulnerable"|"unknown", "complexity": "...", "degree": n, "hotspots": [[start, end], ...],
//    "attack": "...", "attack_string": "...", "error": "..."}
// The pure JavaScript backend runs in this Node process (no JVM, no native binary needed); the seed is fixed so
// that the same pattern always gets the same verdict.
const readline = require('readline');
const { checkSync } = require('recheck');

const PARAMS = { randomSeed: 0, timeout: 10000 };
process.env.RECHECK_BACKEND = process.env.RECHECK_BACKEND || 'pure';

function verdict(pattern) {
  const d = checkSync(pattern, '', PARAMS);
  const out = { status: d.status, checker: d.checker || null };
  if (d.status === 'vulnerable') {
    out.complexity = d.complexity.type;
    out.degree = d.complexity.degree || null;
    out.summary = d.complexity.summary;
    out.hotspots = (d.hotspot || []).map((h) => [h.start, h.end]);
    out.attack = d.attack.pattern;
    out.attack_string = d.attack.string.length <= 65536 ? d.attack.string : null;
  } else if (d.status === 'safe') {
    out.complexity = d.complexity.type;
  } else {
    out.error = d.error ? String(d.error.kind || d.error.message || d.error) : 'unknown';
  }
  return out;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let answer;
  try {
    answer = verdict(JSON.parse(line).pattern);
  } catch (e) {
    answer = { status: 'unknown', error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
});
