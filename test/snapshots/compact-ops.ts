/** The op stream of the online-compaction kill test: op i writes (or trims) one slot. */
export const SLOT = 8192;
export const SLOTS = 384;
export const COMPACT_VSIZE = SLOT * SLOTS;

export function opAt(seed: number, i: number): { slot: number; trim: boolean } {
  const h = Math.imul(i + 1, 2654435761) ^ Math.imul(seed, 40503);
  return { slot: (h >>> 0) % SLOTS, trim: i % 9 === 8 };
}

/** What op i writes: its number, then bytes derived from it (so a torn or stray slot is caught). */
export function slotContent(i: number): Uint8Array {
  const b = new Uint8Array(SLOT);
  new DataView(b.buffer).setUint32(0, i + 1, true);
  for (let k = 4; k < SLOT; k++) b[k] = (i * 31 + k) & 255;
  return b;
}

/** The op number a slot's bytes name, -1 for zeros; throws on bytes no op wrote. */
export function slotOp(b: Uint8Array): number {
  const n = new DataView(b.buffer, b.byteOffset).getUint32(0, true);
  if (n === 0 && b.every((x) => x === 0)) return -1;
  const want = slotContent(n - 1);
  for (let k = 0; k < SLOT; k++) if (b[k] !== want[k]) throw new Error(`slot bytes match no op (op ${n - 1}? byte ${k} is ${b[k]}, expected ${want[k]})`);
  return n - 1;
}

/**
 * The smallest K ≥ lo such that the slots read as ops [0, K) applied, searching up to `hi`;
 * -1 if none. `seen[s]` is slotOp of slot s.
 */
export function consistentPrefix(seed: number, seen: readonly number[], lo: number, hi: number): number {
  const expected = new Array<number>(SLOTS).fill(-1);
  let mismatches = 0;
  for (let s = 0; s < SLOTS; s++) if (seen[s] !== -1) mismatches++;
  for (let k = 0; k <= hi; k++) {
    if (k >= lo && mismatches === 0) return k;
    const op = opAt(seed, k);
    const was = expected[op.slot]! === seen[op.slot]!;
    expected[op.slot] = op.trim ? -1 : k;
    const now = expected[op.slot]! === seen[op.slot]!;
    if (was && !now) mismatches++;
    else if (!was && now) mismatches--;
  }
  return -1;
}
