// The reference: a real JavaScript engine. Reads [{pattern, inputs}] as JSON on stdin and writes, per
// pattern, {error} or {results: [null | {index, text, groups, named}]} as JSON on stdout.
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const out = cases.map(({ pattern, inputs }) => {
    let re;
    try {
      re = new RegExp(pattern);
    } catch (e) {
      return { error: String(e.message) };
    }
    return {
      results: inputs.map((input) => {
        const m = re.exec(input);
        if (m === null) return null;
        return {
          index: m.index,
          text: m[0],
          groups: Array.from(m).slice(1).map((g) => (g === undefined ? null : g)),
          named: m.groups ? Object.fromEntries(Object.entries(m.groups).map(([k, v]) => [k, v === undefined ? null : v])) : {},
        };
      }),
    };
  });
  process.stdout.write(JSON.stringify(out));
});
