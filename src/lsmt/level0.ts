/**
 * The in-memory level-0 index of a writable layer (the reference's `Index0`, docs/format.md
 * §2.4): a sorted, non-overlapping set of mappings where each insert cuts away whatever it
 * covers — entries fully inside are erased, partly covered ones are trimmed (moffset
 * advanced unless zeroed), and an entry strictly containing the new range is split in two.
 * Neighbours are never joined, as in the reference.
 *
 * Storage is a list of small typed-array chunks, so an insert moves at most one chunk's
 * worth of entries (a flat sorted array would move half the index per random write) and a
 * lookup is two binary searches. Offsets, lengths and moffsets are in sectors.
 */
import { runSync, type Steps } from '../io/slice.ts';
import { packable, packedOrder, sortKeyScale } from './sort-keys.ts';
import { MappingTable } from './table.ts';

/** Entries per chunk: small enough that shifting one is a short memmove. */
const CAP = 512;
/** Entries per chunk when built in bulk: room for later inserts before a chunk splits. */
const BULK_FILL = (CAP * 3) >>> 2;

class Chunk {
  n = 0;
  readonly off = new Float64Array(CAP);
  readonly len = new Uint32Array(CAP);
  readonly moff = new Float64Array(CAP);
  readonly zero = new Uint8Array(CAP);

  lastEnd(): number {
    return this.off[this.n - 1]! + this.len[this.n - 1]!;
  }

  /** First entry whose end is greater than `s` (n if none). */
  firstEndAfter(s: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.off[mid]! + this.len[mid]! <= s) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Moves entries [from, n) by `by` places (positive opens a gap, negative closes one). */
  shift(from: number, by: number): void {
    if (from < this.n) {
      this.off.copyWithin(from + by, from, this.n);
      this.len.copyWithin(from + by, from, this.n);
      this.moff.copyWithin(from + by, from, this.n);
      this.zero.copyWithin(from + by, from, this.n);
    }
    this.n += by;
  }

  set(i: number, off: number, len: number, moff: number, zero: number): void {
    this.off[i] = off;
    this.len[i] = len;
    this.moff[i] = moff;
    this.zero[i] = zero;
  }
}

/** Appends sorted mappings into chunks filled to BULK_FILL. */
class BulkBuilder {
  readonly chunks: Chunk[] = [];
  count = 0;
  #ch: Chunk | undefined;

  add(off: number, len: number, moff: number, zero: number): void {
    let ch = this.#ch;
    if (!ch || ch.n === BULK_FILL) {
      ch = this.#ch = new Chunk();
      this.chunks.push(ch);
    }
    ch.set(ch.n++, off, len, moff, zero);
    this.count++;
  }
}

/** Receives one mapping clipped to the visited range (sectors). */
export type SegmentVisitor = (offset: number, length: number, moffset: number, zeroed: boolean) => void;

/** Entries in log order, as the index file holds them (sectors; lengths > 0). */
export interface EntryLog {
  n: number;
  offset: Float64Array;
  length: Uint32Array;
  moffset: Float64Array;
  zeroed: Uint8Array;
  /**
   * Sort keys packed while the log was read (`keys[i] = offset[i] * scale + i`, scale from
   * sortKeyScale in ./sort-keys.ts), with the largest offset: the replay of an index file fills them in its
   * decoding loop, which saves fromLog two passes over the log. Computed here when absent.
   */
  sortKeys?: SortKeys;
}

/** See EntryLog.sortKeys. */
export interface SortKeys {
  keys: Float64Array;
  scale: number;
  maxOffset: number;
}


export class Level0Index {
  #chunks: Chunk[] = [];
  #count = 0;

  /**
   * The index that inserting `log`'s entries in order builds, computed in one sweep: opening
   * a layer replays its whole index file, and 16k random inserts cost ~40 ms cold where a
   * sort and a sweep cost a few. Each sector goes to the latest entry covering it, and each
   * entry keeps the maximal pieces of it that no later entry covers — what insert() leaves.
   */
  static fromLog(log: EntryLog): Level0Index {
    const ix = new Level0Index();
    const { n, offset: off, length: len, moffset: moff, zeroed: zero } = log;
    if (n === 0) return ix;
    const given = log.sortKeys;
    let maxOff = given?.maxOffset ?? 0;
    if (!given) for (let i = 0; i < n; i++) if (off[i]! > maxOff) maxOff = off[i]!;
    const scale = given?.scale ?? sortKeyScale(n);
    if (!packable(maxOff, scale)) {
      for (let i = 0; i < n; i++) ix.insert(off[i]!, len[i]!, moff[i]!, zero[i] === 1);
      return ix;
    }
    let keys: Float64Array;
    if (given) keys = given.keys.subarray(0, n);
    else {
      keys = new Float64Array(n);
      for (let i = 0; i < n; i++) keys[i] = off[i]! * scale + i;
    }
    // By offset and, among equal offsets, by age.
    const order = packedOrder(keys, scale);
    // Sweep in offset order; `heap` holds the entries begun at or before x, latest on top
    // (stale ones, ended before x, are dropped when they surface).
    const heap = new Uint32Array(n);
    let size = 0;
    const push = (e: number): void => {
      let i = size++;
      while (i > 0) {
        const p = (i - 1) >>> 1;
        if (heap[p]! >= e) break;
        heap[i] = heap[p]!;
        i = p;
      }
      heap[i] = e;
    };
    const pop = (): void => {
      const last = heap[--size]!;
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= size) break;
        if (c + 1 < size && heap[c + 1]! > heap[c]!) c++;
        if (heap[c]! <= last) break;
        heap[i] = heap[c]!;
        i = c;
      }
      heap[i] = last;
    };
    const b = new BulkBuilder();
    let p = 0;
    let x = 0;
    for (;;) {
      if (size === 0) {
        if (p === n) break;
        // Nothing begun is still open: an entry ending before the next one begins is kept whole
        // (most entries, unless writes overwrite each other).
        const e = order[p]!;
        if (p + 1 === n || off[order[p + 1]!]! >= off[e]! + len[e]!) {
          b.add(off[e]!, len[e]!, moff[e]!, zero[e]!);
          p++;
          continue;
        }
        x = off[e]!;
      }
      while (p < n && off[order[p]!]! <= x) push(order[p++]!);
      while (size > 0 && off[heap[0]!]! + len[heap[0]!]! <= x) pop();
      if (size === 0) continue;
      const w = heap[0]!;
      // w wins from x to its end or to where a later entry begins, whichever comes first.
      let segEnd = off[w]! + len[w]!;
      for (let q = p; q < n && off[order[q]!]! < segEnd; q++) {
        if (order[q]! > w) {
          segEnd = off[order[q]!]!;
          break;
        }
      }
      b.add(x, segEnd - x, zero[w] === 1 ? moff[w]! : moff[w]! + (x - off[w]!), zero[w]!);
      x = segEnd;
    }
    ix.#chunks = b.chunks;
    ix.#count = b.count;
    return ix;
  }

  /** Number of live mappings. */
  get count(): number {
    return this.#count;
  }

  /** Index of the first chunk whose last mapping ends after `s` (chunk count if none). */
  #chunkFor(s: number): number {
    const chunks = this.#chunks;
    let lo = 0;
    let hi = chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (chunks[mid]!.lastEnd() <= s) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Inserts at position i of chunk c, splitting a full chunk first. */
  #insertAt(c: number, i: number, off: number, len: number, moff: number, zero: number): void {
    let ch = this.#chunks[c]!;
    if (ch.n === CAP) {
      const half = CAP >>> 1;
      const right = new Chunk();
      right.off.set(ch.off.subarray(half));
      right.len.set(ch.len.subarray(half));
      right.moff.set(ch.moff.subarray(half));
      right.zero.set(ch.zero.subarray(half));
      right.n = CAP - half;
      ch.n = half;
      this.#chunks.splice(c + 1, 0, right);
      if (i > half) {
        ch = right;
        i -= half;
      }
    }
    ch.shift(i, 1);
    ch.set(i, off, len, moff, zero);
    this.#count++;
  }

  /** Adds a mapping; it overrides whatever it overlaps. */
  insert(offset: number, length: number, moffset: number, zeroed: boolean): void {
    if (length <= 0) return;
    const z = zeroed ? 1 : 0;
    const end = offset + length;
    if (this.#chunks.length === 0) {
      const ch = new Chunk();
      ch.set(0, offset, length, moffset, z);
      ch.n = 1;
      this.#chunks.push(ch);
      this.#count = 1;
      return;
    }
    let c = this.#chunkFor(offset);
    if (c === this.#chunks.length) {
      // Past everything: append to the last chunk.
      const last = this.#chunks.length - 1;
      this.#insertAt(last, this.#chunks[last]!.n, offset, length, moffset, z);
      return;
    }
    let ch = this.#chunks[c]!;
    let i = ch.firstEndAfter(offset);
    const eOff = ch.off[i]!;
    const eEnd = eOff + ch.len[i]!;
    if (eOff < offset) {
      if (eEnd > end) {
        // The new range lies strictly inside entry i: keep its head, add new, then its tail.
        const tailMoff = ch.zero[i] === 1 ? ch.moff[i]! : ch.moff[i]! + (end - eOff);
        const tailZero = ch.zero[i]!;
        ch.len[i] = offset - eOff;
        this.#insertAt(c, i + 1, end, eEnd - end, tailMoff, tailZero);
        c = this.#chunkFor(offset);
        this.#insertAt(c, this.#chunks[c]!.firstEndAfter(offset), offset, length, moffset, z);
        return;
      }
      ch.len[i] = offset - eOff;
      i++;
    }
    // Erase entries that lie entirely inside [offset, end); they may span chunks.
    for (;;) {
      let j = i;
      while (j < ch.n && ch.off[j]! + ch.len[j]! <= end) j++;
      if (j > i) {
        ch.shift(j, i - j);
        this.#count -= j - i;
      }
      if (i < ch.n) break;
      if (ch.n === 0) this.#chunks.splice(c, 1);
      else c++;
      if (c >= this.#chunks.length) break;
      ch = this.#chunks[c]!;
      i = 0;
    }
    // A right-overlapping entry now starts inside the new range: advance it to `end`.
    if (c < this.#chunks.length && i < ch.n && ch.off[i]! < end) {
      const d = end - ch.off[i]!;
      ch.off[i] = end;
      ch.len[i]! -= d;
      if (ch.zero[i] === 0) ch.moff[i]! += d;
    }
    if (this.#chunks.length === 0) {
      const fresh = new Chunk();
      fresh.set(0, offset, length, moffset, z);
      fresh.n = 1;
      this.#chunks.push(fresh);
      this.#count = 1;
      return;
    }
    c = this.#chunkFor(offset);
    if (c === this.#chunks.length) c--;
    this.#insertAt(c, this.#chunks[c]!.firstEndAfter(offset), offset, length, moffset, z);
  }

  /**
   * Calls `visit` for every mapping intersecting sectors [start, end), in order, clipped to
   * the range (moffset advanced accordingly unless zeroed). Synchronous: the index cannot
   * change while it runs.
   */
  visit(start: number, end: number, visit: SegmentVisitor): void {
    const chunks = this.#chunks;
    let c = this.#chunkFor(start);
    if (c === chunks.length) return;
    let ch = chunks[c]!;
    let i = ch.firstEndAfter(start);
    for (;;) {
      if (i === ch.n) {
        if (++c === chunks.length) return;
        ch = chunks[c]!;
        i = 0;
      }
      const off = ch.off[i]!;
      if (off >= end) return;
      const e = off + ch.len[i]!;
      const from = off < start ? start : off;
      const to = e > end ? end : e;
      const z = ch.zero[i] === 1;
      visit(from, to - from, z ? ch.moff[i]! : ch.moff[i]! + (from - off), z);
      i++;
    }
  }

  /** The whole index as a sorted MappingTable (for commit), every entry tagged `layer`. */
  toTable(layer = 0): MappingTable {
    return runSync(this.tableSteps(layer));
  }

  /**
   * toTable as checkpointed work (src/io/slice.ts), one checkpoint per chunk. Each chunk goes
   * over with four typed-array copies, not a push per entry: a commit's process builds the
   * table once, before any of its JavaScript is optimized, where 16k pushes cost ~4 ms.
   */
  *tableSteps(layer = 0): Steps<MappingTable> {
    const t = new MappingTable(Math.max(1, this.#count));
    for (const ch of this.#chunks) {
      const at = t.count;
      t.offset.set(ch.off.subarray(0, ch.n), at);
      t.length.set(ch.len.subarray(0, ch.n), at);
      t.moffset.set(ch.moff.subarray(0, ch.n), at);
      t.zeroed.set(ch.zero.subarray(0, ch.n), at);
      if (layer !== 0) t.layer.fill(layer, at, at + ch.n);
      t.count = at + ch.n;
      yield;
    }
    return t;
  }

  /** End of the last mapping (sectors; 0 when empty). */
  endSector(): number {
    const last = this.#chunks.at(-1);
    return last && last.n > 0 ? last.lastEnd() : 0;
  }

  /** Sectors covered by data (not zeroed) mappings. */
  dataSectors(): number {
    let n = 0;
    for (const ch of this.#chunks) for (let i = 0; i < ch.n; i++) if (ch.zero[i] === 0) n += ch.len[i]!;
    return n;
  }
}
