// Owns reading a V8 heap snapshot (`.heapsnapshot`, as v8.writeHeapSnapshot writes it) as the
// DevTools "Summary" view does: self size and count by constructor (objects and native objects
// by their class name, everything else by its node type), and the difference between two.
//   node bench/support/heap-snapshot.ts A.heapsnapshot [B.heapsnapshot]   top 25 (by B − A)
import { readFileSync } from 'node:fs';

export interface Group {
  count: number;
  selfBytes: number;
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self size and count per constructor (`Object`, `Buffer`, `(string)`, `(compiled code)`…). */
export function summarize(file: string): Map<string, Group> {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const width = fields.length;
  const [typeAt, nameAt, sizeAt] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [
    number,
    number,
    number,
  ];
  const out = new Map<string, Group>();
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + typeAt]!]!;
    const name = s.strings[s.nodes[i + nameAt]!]!;
    const key =
      type === 'object' || type === 'native'
        ? name
        : type === 'code'
          ? '(compiled code)'
          : type.includes('string')
            ? '(string)'
            : `(${type})`;
    const g = out.get(key) ?? { count: 0, selfBytes: 0 };
    g.count++;
    g.selfBytes += s.nodes[i + sizeAt]!;
    out.set(key, g);
  }
  return out;
}

export function totalBytes(groups: Map<string, Group>): number {
  let sum = 0;
  for (const g of groups.values()) sum += g.selfBytes;
  return sum;
}

/** The `top` constructors by size in `b` less `a` (or by size alone without `a`), as table rows. */
export function compare(a: Map<string, Group> | null, b: Map<string, Group>, top = 25): string[] {
  const keys = new Set([...(a?.keys() ?? []), ...b.keys()]);
  const rows = [...keys].map((k) => {
    const x = a?.get(k) ?? { count: 0, selfBytes: 0 };
    const y = b.get(k) ?? { count: 0, selfBytes: 0 };
    return { k, x, y, d: y.selfBytes - x.selfBytes };
  });
  rows.sort((p, q) => (a ? Math.abs(q.d) - Math.abs(p.d) : q.y.selfBytes - p.y.selfBytes));
  const kb = (n: number) => (n / 1024).toFixed(1);
  return rows
    .slice(0, top)
    .map((r) =>
      a
        ? `| ${r.k} | ${r.x.count} / ${kb(r.x.selfBytes)} KB | ${r.y.count} / ${kb(r.y.selfBytes)} KB | ${r.d >= 0 ? '+' : ''}${kb(r.d)} KB |`
        : `| ${r.k} | ${r.y.count} | ${kb(r.y.selfBytes)} KB |`,
    );
}

if (import.meta.main) {
  const [fa, fb] = process.argv.slice(2);
  if (!fa) {
    console.error('usage: node bench/support/heap-snapshot.ts A.heapsnapshot [B.heapsnapshot]');
    process.exit(2);
  }
  const a = summarize(fa);
  const b = fb ? summarize(fb) : null;
  const mb = (n: number) => (n / 1024 / 1024).toFixed(2);
  console.log(`live: ${mb(totalBytes(a))} MB${b ? ` → ${mb(totalBytes(b))} MB` : ''}`);
  console.log(
    b
      ? '| constructor | A count / size | B count / size | B − A |\n|---|---|---|---|'
      : '| constructor | count | size |\n|---|---|---|',
  );
  for (const row of b ? compare(a, b) : compare(null, a)) console.log(row);
}
