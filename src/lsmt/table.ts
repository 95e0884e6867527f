/**
 * A sorted, non-overlapping list of mappings held in parallel typed arrays, so lookups and
 * read splitting touch no objects. Offsets, lengths and moffsets are in sectors.
 */
import type { Mapping } from './format.ts';

export class MappingTable {
  count: number;
  offset: Float64Array;
  length: Uint32Array;
  moffset: Float64Array;
  zeroed: Uint8Array;
  /** Layer index (bottom = 0) in a stack; 0 for a single layer. */
  layer: Uint16Array;

  constructor(capacity = 16) {
    this.count = 0;
    this.offset = new Float64Array(capacity);
    this.length = new Uint32Array(capacity);
    this.moffset = new Float64Array(capacity);
    this.zeroed = new Uint8Array(capacity);
    this.layer = new Uint16Array(capacity);
  }

  static from(list: readonly Mapping[]): MappingTable {
    const t = new MappingTable(Math.max(1, list.length));
    for (const m of list) t.push(m.offset, m.length, m.moffset, m.zeroed, m.tag);
    return t;
  }

  push(offset: number, length: number, moffset: number, zeroed: boolean, layer: number): void {
    if (this.count === this.offset.length) this.#grow();
    const i = this.count++;
    this.offset[i] = offset;
    this.length[i] = length;
    this.moffset[i] = moffset;
    this.zeroed[i] = zeroed ? 1 : 0;
    this.layer[i] = layer;
  }

  #grow(): void {
    const n = Math.max(16, this.offset.length * 2);
    const grow = <T extends Float64Array | Uint32Array | Uint8Array | Uint16Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a as never);
      return b;
    };
    this.offset = grow(this.offset, (k) => new Float64Array(k));
    this.length = grow(this.length, (k) => new Uint32Array(k));
    this.moffset = grow(this.moffset, (k) => new Float64Array(k));
    this.zeroed = grow(this.zeroed, (k) => new Uint8Array(k));
    this.layer = grow(this.layer, (k) => new Uint16Array(k));
  }

  end(i: number): number {
    return this.offset[i]! + this.length[i]!;
  }

  at(i: number): Mapping {
    return { offset: this.offset[i]!, length: this.length[i]!, moffset: this.moffset[i]!, zeroed: this.zeroed[i] === 1, tag: this.layer[i]! };
  }

  toArray(): Mapping[] {
    const out: Mapping[] = new Array(this.count);
    for (let i = 0; i < this.count; i++) out[i] = this.at(i);
    return out;
  }

  /** Sectors that hold stored data (zeroed entries excluded). */
  dataSectors(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (this.zeroed[i] === 0) n += this.length[i]!;
    return n;
  }
}
