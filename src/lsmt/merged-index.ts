/**
 * One merged index over a stack of layers: for every sector, the topmost layer with any
 * mapping (data or zeroed) there wins (the reference's painter's algorithm, docs/format.md
 * §2.7).
 *
 * Built by a single sweep over all entries sorted by offset with a max-heap of the layers
 * active at the sweep position: O(T log N) for T entries in N layers, where the
 * reference's recursive walk can cost O(T·N). Output pieces are exactly the painter's:
 * each is the visible part of one source entry, never joined with a neighbour.
 */
import { MappingTable } from './table.ts';

/** Merges per-layer tables given bottom → top; the result's `layer` is the source index. */
export function mergeIndexes(layers: readonly MappingTable[]): MappingTable {
  if (layers.length === 1) {
    const src = layers[0]!;
    const t = new MappingTable(Math.max(1, src.count));
    for (let i = 0; i < src.count; i++) t.push(src.offset[i]!, src.length[i]!, src.moffset[i]!, src.zeroed[i] === 1, 0);
    return t;
  }
  let total = 0;
  for (const l of layers) total += l.count;
  // Entries of all layers, addressed by (layer, index), sorted by start offset.
  const start = new Float64Array(total);
  const end = new Float64Array(total);
  const lay = new Uint16Array(total);
  const idx = new Uint32Array(total);
  let k = 0;
  for (let L = 0; L < layers.length; L++) {
    const t = layers[L]!;
    for (let i = 0; i < t.count; i++, k++) {
      start[k] = t.offset[i]!;
      end[k] = t.offset[i]! + t.length[i]!;
      lay[k] = L;
      idx[k] = i;
    }
  }
  const order = sortByStart(start);

  const out = new MappingTable(Math.max(16, total));
  // Max-heap of entry ids keyed by layer; expired entries are dropped lazily.
  const heap = new Uint32Array(Math.max(1, Math.min(total, layers.length * 2 + 16)));
  let heapN = 0;
  let heapArr = heap;
  const push = (id: number): void => {
    if (heapN === heapArr.length) {
      const bigger = new Uint32Array(heapArr.length * 2);
      bigger.set(heapArr);
      heapArr = bigger;
    }
    let c = heapN++;
    const key = lay[id]!;
    while (c > 0) {
      const p = (c - 1) >> 1;
      if (lay[heapArr[p]!]! >= key) break;
      heapArr[c] = heapArr[p]!;
      c = p;
    }
    heapArr[c] = id;
  };
  const pop = (): void => {
    const last = heapArr[--heapN]!;
    const key = lay[last]!;
    let c = 0;
    for (;;) {
      let ch = 2 * c + 1;
      if (ch >= heapN) break;
      if (ch + 1 < heapN && lay[heapArr[ch + 1]!]! > lay[heapArr[ch]!]!) ch++;
      if (lay[heapArr[ch]!]! <= key) break;
      heapArr[c] = heapArr[ch]!;
      c = ch;
    }
    heapArr[c] = last;
  };

  let pos = 0;
  let i = 0;
  let lastId = -1;
  while (i < total || heapN > 0) {
    if (heapN === 0) pos = Math.max(pos, start[order[i]!]!);
    while (i < total && start[order[i]!]! <= pos) {
      const id = order[i++]!;
      if (end[id]! > pos) push(id);
    }
    while (heapN > 0 && end[heapArr[0]!]! <= pos) pop();
    if (heapN === 0) continue;
    const top = heapArr[0]!;
    const nextStart = i < total ? start[order[i]!]! : Infinity;
    const segEnd = Math.min(end[top]!, nextStart);
    if (top === lastId && out.end(out.count - 1) === pos) {
      out.length[out.count - 1]! += segEnd - pos;
    } else {
      const src = layers[lay[top]!]!;
      const j = idx[top]!;
      const z = src.zeroed[j] === 1;
      out.push(pos, segEnd - pos, z ? src.moffset[j]! : src.moffset[j]! + (pos - start[top]!), z, lay[top]!);
      lastId = top;
    }
    pos = segEnd;
  }
  return out;
}

/** Indices of `keys` in ascending key order (stable). */
function sortByStart(keys: Float64Array): Uint32Array {
  const n = keys.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  // Typed-array sort of packed (key, index) pairs would need 128 bits; a comparator sort on
  // the index array is simple and fast enough for millions of entries.
  order.sort((a, b) => keys[a]! - keys[b]! || a - b);
  return order;
}
