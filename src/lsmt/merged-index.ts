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
import { packable, packedOrder, sortKeyScale } from './sort-keys.ts';
import { MappingTable } from './table.ts';

/** Merges per-layer tables given bottom → top; the result's `layer` is the source index. */
export function mergeIndexes(layers: readonly MappingTable[]): MappingTable {
  if (layers.length === 1) {
    // One layer is its own merge: a bulk copy (layer stays 0), not a cold per-entry loop.
    const src = layers[0]!;
    const n = src.count;
    const t = new MappingTable(Math.max(1, n));
    t.offset.set(src.offset.subarray(0, n));
    t.length.set(src.length.subarray(0, n));
    t.moffset.set(src.moffset.subarray(0, n));
    t.zeroed.set(src.zeroed.subarray(0, n));
    t.count = n;
    return t;
  }
  let total = 0;
  for (const l of layers) total += l.count;
  // Entries of all layers in flat typed arrays (layer by layer, bulk copies), then in start
  // order: the sweep reads no objects, which keeps it fast on its first, cold run, the one a
  // process start pays for.
  const cOff = new Float64Array(total);
  const cLen = new Uint32Array(total);
  const cMoff = new Float64Array(total);
  const cZer = new Uint8Array(total);
  const cLay = new Uint16Array(total);
  let k = 0;
  for (let L = 0; L < layers.length; L++) {
    const t = layers[L]!;
    const n = t.count;
    cOff.set(t.offset.subarray(0, n), k);
    cLen.set(t.length.subarray(0, n), k);
    cMoff.set(t.moffset.subarray(0, n), k);
    cZer.set(t.zeroed.subarray(0, n), k);
    cLay.fill(L, k, k + n);
    k += n;
  }
  const order = sortByStart(cOff);
  const start = new Float64Array(total);
  const end = new Float64Array(total);
  const moff = new Float64Array(total);
  const zer = new Uint8Array(total);
  const lay = new Uint16Array(total);
  for (let j = 0; j < total; j++) {
    const e = order[j]!;
    start[j] = cOff[e]!;
    end[j] = cOff[e]! + cLen[e]!;
    moff[j] = cMoff[e]!;
    zer[j] = cZer[e]!;
    lay[j] = cLay[e]!;
  }
  return sweep(total, start, end, moff, zer, lay);
}

/**
 * The painter's sweep over entries sorted by start, with a max-heap (by layer) of the entries
 * covering the sweep position; expired entries are dropped lazily. Heap and output are
 * sized up front: at most `total` entries are ever pushed, and each output piece ends where
 * an entry ends or another starts, so there are at most 2·total of them.
 */
function sweep(total: number, start: Float64Array, end: Float64Array, moff: Float64Array, zer: Uint8Array, lay: Uint16Array): MappingTable {
  const out = new MappingTable(Math.max(16, 2 * total));
  const oOff = out.offset;
  const oLen = out.length;
  const oMoff = out.moffset;
  const oZer = out.zeroed;
  const oLay = out.layer;
  let n = 0;
  const heap = new Uint32Array(Math.max(1, total));
  let heapN = 0;
  let pos = 0;
  let i = 0;
  let lastId = -1;
  while (i < total || heapN > 0) {
    if (heapN === 0) {
      pos = Math.max(pos, start[i]!);
      // Nothing else covers this entry (it ends before the next one starts): it is visible
      // whole, without the heap. Layers of scattered writes are mostly such entries, and the
      // short path keeps a cold sweep's interpreted work small.
      const e = end[i]!;
      if (e > pos && (i + 1 === total || e <= start[i + 1]!)) {
        oOff[n] = pos;
        oLen[n] = e - pos;
        oMoff[n] = zer[i] === 1 ? moff[i]! : moff[i]! + (pos - start[i]!);
        oZer[n] = zer[i]!;
        oLay[n] = lay[i]!;
        n++;
        lastId = i++;
        pos = e;
        continue;
      }
    }
    while (i < total && start[i]! <= pos) {
      const id = i++;
      if (end[id]! <= pos) continue;
      // Push: sift up by layer.
      let c = heapN++;
      const key = lay[id]!;
      while (c > 0) {
        const p = (c - 1) >> 1;
        if (lay[heap[p]!]! >= key) break;
        heap[c] = heap[p]!;
        c = p;
      }
      heap[c] = id;
    }
    while (heapN > 0 && end[heap[0]!]! <= pos) {
      // Pop: sift the last entry down from the root.
      const last = heap[--heapN]!;
      const key = lay[last]!;
      let c = 0;
      for (;;) {
        let ch = 2 * c + 1;
        if (ch >= heapN) break;
        if (ch + 1 < heapN && lay[heap[ch + 1]!]! > lay[heap[ch]!]!) ch++;
        if (lay[heap[ch]!]! <= key) break;
        heap[c] = heap[ch]!;
        c = ch;
      }
      heap[c] = last;
    }
    if (heapN === 0) continue;
    const top = heap[0]!;
    const nextStart = i < total ? start[i]! : Infinity;
    const segEnd = Math.min(end[top]!, nextStart);
    if (top === lastId && oOff[n - 1]! + oLen[n - 1]! === pos) {
      oLen[n - 1]! += segEnd - pos;
    } else {
      const z = zer[top]!;
      oOff[n] = pos;
      oLen[n] = segEnd - pos;
      oMoff[n] = z === 1 ? moff[top]! : moff[top]! + (pos - start[top]!);
      oZer[n] = z;
      oLay[n] = lay[top]!;
      n++;
      lastId = top;
    }
    pos = segEnd;
  }
  out.count = n;
  // The index lives as long as the stack: keep only the pieces made.
  out.offset = oOff.slice(0, n);
  out.length = oLen.slice(0, n);
  out.moffset = oMoff.slice(0, n);
  out.zeroed = oZer.slice(0, n);
  out.layer = oLay.slice(0, n);
  return out;
}

/** Indices of `keys` (whole sector numbers) in ascending key order (stable). */
export function sortByStart(keys: Float64Array): Uint32Array {
  const n = keys.length;
  let max = 0;
  for (let i = 0; i < n; i++) max = Math.max(max, keys[i]!);
  const scale = sortKeyScale(n);
  if (packable(max, scale)) {
    const packed = new Float64Array(n);
    for (let i = 0; i < n; i++) packed[i] = keys[i]! * scale + i;
    return packedOrder(packed, scale);
  }
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => keys[a]! - keys[b]! || a - b);
  return order;
}
