/**
 * Stable orders of entries by a whole-number key (a sector offset) with the engine's native
 * numeric sort: each (key, position) pair is packed as key·scale + position into one exact
 * double. At 2·10^4 entries a comparator sort cost ~25 ms of a cold open, this ~1 ms; a
 * layer's open and a stack's merge both sort their entries so.
 */

/** The scale for up to `capacity` entries: a power of two above every position. */
export function sortKeyScale(capacity: number): number {
  return 2 ** Math.ceil(Math.log2(capacity + 1));
}

/** Whether keys up to `maxKey` pack exactly (below 2^53) at `scale`. */
export function packable(maxKey: number, scale: number): boolean {
  return (maxKey + 1) * scale <= Number.MAX_SAFE_INTEGER;
}

/** Sorts `packed` (key·scale + position) in place and returns the positions in key order. */
export function packedOrder(packed: Float64Array, scale: number): Uint32Array {
  packed.sort();
  const n = packed.length;
  const order = new Uint32Array(n);
  // Exact: scale is a power of two (and `%` on doubles is several times slower cold).
  for (let k = 0; k < n; k++) order[k] = packed[k]! - Math.floor(packed[k]! / scale) * scale;
  return order;
}
