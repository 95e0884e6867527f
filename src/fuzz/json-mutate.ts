/**
 * Structure-aware mutations of a JSON document: replace a value (with a value of another
 * type or an edge value), delete a member, duplicate array elements, nest. Byte-level
 * mutations mostly make JSON unparsable; these reach the checks behind the parser.
 */
import type { Rng } from './rng.ts';
import type { Mutated } from './mutate.ts';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Slot = { parent: Json[] | { [k: string]: Json }; key: string | number; path: string };

/** Edge values; strings are harmless as paths (no traversal, no URLs). */
const VALUES: readonly Json[] = [
  null, true, false, 0, -1, 1, 0.5, 511, 512, 2 ** 31, 2 ** 32 - 1, 2 ** 53, 2 ** 63, 1e308, -(2 ** 53), '', 'x', '\u0000', 'a'.repeat(4096), '-1', '1e3',
  'sha256:' + '0'.repeat(64), 'sha256:' + 'g'.repeat(64), 'sha512:' + 'a'.repeat(128), [], [null], {}, { mediaType: 1 }, ['x'],
];

function slots(v: Json, path: string, out: Slot[]): void {
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push({ parent: v, key: i, path: `${path}[${i}]` });
      slots(x, `${path}[${i}]`, out);
    });
  } else if (v && typeof v === 'object') {
    for (const k of Object.keys(v)) {
      out.push({ parent: v, key: k, path: `${path}.${k}` });
      slots(v[k]!, `${path}.${k}`, out);
    }
  }
}

function get(s: Slot): Json {
  return (s.parent as Record<string | number, Json>)[s.key]!;
}

function set(s: Slot, v: Json): void {
  (s.parent as Record<string | number, Json>)[s.key] = v;
}

/** One to three structural mutations of the JSON text `seed`. */
export function mutateJson(seed: Uint8Array, rng: Rng): Mutated {
  const doc: Json = JSON.parse(Buffer.from(seed).toString('utf8'));
  const ops: string[] = [];
  const n = 1 + (rng.chance(0.3) ? rng.int(3) : 0);
  for (let i = 0; i < n; i++) {
    const all: Slot[] = [];
    slots(doc, '$', all);
    if (!all.length) break;
    const s = rng.pick(all);
    const kind = rng.int(6);
    if (kind <= 1) {
      const v = rng.pick(VALUES);
      set(s, structuredClone(v));
      ops.push(`${s.path} = ${JSON.stringify(v).slice(0, 40)}`);
    } else if (kind === 2) {
      if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
      else delete s.parent[s.key as string];
      ops.push(`delete ${s.path}`);
    } else if (kind === 3 && Array.isArray(s.parent)) {
      const times = rng.pick([1, 2, 10, 1000]);
      const v = get(s);
      for (let k = 0; k < times; k++) s.parent.push(structuredClone(v));
      ops.push(`duplicate ${s.path} ×${times}`);
    } else if (kind === 4) {
      const v = get(s);
      set(s, rng.chance(0.5) ? [v] : { v });
      ops.push(`nest ${s.path}`);
    } else {
      const v = get(s);
      const w: Json = typeof v === 'number' ? rng.pick([v + 1, v - 1, -v, v * 2 ** 20, String(v)]) : typeof v === 'string' ? rng.pick([v.slice(1), v + v, v.toUpperCase(), Number(v.length)]) : !v;
      set(s, w);
      ops.push(`tweak ${s.path} → ${JSON.stringify(w).slice(0, 40)}`);
    }
  }
  return { bytes: Buffer.from(JSON.stringify(doc)), ops };
}
