/**
 * The read-side form of a merged index, built for lookups that touch as few cache lines as
 * possible.
 *
 * Segment ends sit in one dense array that the search touches; the rest of a segment —
 * start, moffset, layer·2 + zeroed — is packed in a record read once the segment is found.
 * Both use u32 when every sector number fits in 32 bits (images below 2 TiB), f64 otherwise,
 * so a million segments search within 4 MiB. A bucket directory
 * splits the covered sector range into about as many equal-width buckets as there are
 * segments; `dir[b]` is the first segment ending after bucket b's start. A lookup reads two
 * adjacent directory slots and then searches the few records between them: two or three
 * cache lines, where a binary search over a million segments probes ~20 scattered ones.
 * Skewed layouts fall back to a binary search inside one bucket, so the worst case stays
 * logarithmic.
 */
import { runSliced, runSync, STEP, type Steps } from '../io/slice.ts';
import type { MappingTable } from './table.ts';

/** Record stride: start, moffset, layer·2 + zeroed. */
export const REC = 3;

export class IndexLookup {
  readonly count: number;
  /** End sector of each segment (ascending). */
  readonly ends: Uint32Array | Float64Array;
  /** [start, moffset, layer·2 + zeroed] per segment; sectors. */
  readonly rec: Uint32Array | Float64Array;
  readonly #dir: Uint32Array;
  readonly #base: number;
  readonly #invWidth: number;
  readonly #buckets: number;

  /** `parts` when built beforehand (lookupSteps, e.g. in slices on the serving thread). */
  constructor(t: MappingTable, parts: LookupParts = runSync(lookupSteps(t))) {
    this.count = t.count;
    this.rec = parts.rec;
    this.ends = parts.ends;
    this.#dir = parts.dir;
    this.#base = parts.base;
    this.#invWidth = 1 / parts.width;
    this.#buckets = parts.dir.length - 1;
  }

  /** Builds the lookup in slices between other work on this thread (src/io/slice.ts). */
  static async sliced(t: MappingTable): Promise<IndexLookup> {
    return new IndexLookup(t, await runSliced(lookupSteps(t)));
  }

  /** Index of the first segment whose end is greater than `sector` (count if none). */
  firstEndingAfter(sector: number): number {
    const rel = sector - this.#base;
    if (rel < 0) return 0;
    const b = Math.floor(rel * this.#invWidth);
    if (b >= this.#buckets) return this.count;
    let lo = this.#dir[b]!;
    let hi = this.#dir[b + 1]!;
    const ends = this.ends;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ends[mid]! <= sector) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** Plain binary search over the same ends: the baseline the benchmark compares against. */
export function firstEndingAfterBinary(lk: IndexLookup, sector: number): number {
  const ends = lk.ends;
  let lo = 0;
  let hi = lk.count;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ends[mid]! <= sector) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The arrays of an IndexLookup. */
export interface LookupParts {
  rec: Uint32Array | Float64Array;
  ends: Uint32Array | Float64Array;
  dir: Uint32Array;
  base: number;
  width: number;
}

function* lookupSteps(t: MappingTable): Steps<LookupParts> {
  const n = t.count;
  let max = 0;
  for (let i = 0; i < n; i++) {
    max = Math.max(max, t.offset[i]! + t.length[i]!, t.moffset[i]! + t.length[i]!);
    if (i % STEP === STEP - 1) yield;
  }
  const small = max < 2 ** 32;
  const rec = small ? new Uint32Array(n * REC) : new Float64Array(n * REC);
  const ends = small ? new Uint32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const r = i * REC;
    rec[r] = t.offset[i]!;
    rec[r + 1] = t.moffset[i]!;
    rec[r + 2] = t.layer[i]! * 2 + t.zeroed[i]!;
    ends[i] = t.offset[i]! + t.length[i]!;
    if (i % STEP === STEP - 1) yield;
  }
  const base = n > 0 ? rec[0]! : 0;
  const span = n > 0 ? ends[n - 1]! - base : 1;
  // Power-of-two widths keep bucket arithmetic exact for any sector number below 2^53.
  let width = 1;
  while (width * Math.max(1, n) < span) width *= 2;
  const buckets = Math.max(1, Math.ceil(span / width));
  const dir = new Uint32Array(buckets + 1);
  let j = 0;
  for (let b = 0; b <= buckets; b++) {
    const at = base + b * width;
    while (j < n && ends[j]! <= at) j++;
    dir[b] = j;
    if (b % STEP === STEP - 1) yield;
  }
  return { rec, ends, dir, base, width };
}
