/**
 * One qcow2 file on its own (no backing): the L1/L2 cluster mapping (docs/qcow2.md,
 * "Mapping a guest offset") turned into runs of what the file itself stores for a
 * guest range, and reading those runs. Refcounts are not needed for reading and are never
 * looked at. Backing files are composed above this, in device.ts.
 */
import { FormatError } from '../io/errors.ts';
import type { ByteSource } from '../io/types.ts';
import { readable, readAt, readExact } from '../io/util.ts';
import { ClusterDecoder } from './compressed.ts';
import { readHeader, type HeaderOptions, type Qcow2Header } from './header.ts';

/** What a run of guest bytes is in this file. */
export const RUN_DATA = 0;
export const RUN_COMPRESSED = 1;
export const RUN_ZERO = 2;
/** Not stored here: reads from the backing file, or zeros without one. */
export const RUN_UNALLOCATED = 3;

/**
 * Runs as parallel arrays: guest offset, length, kind, and for data the host offset (a run
 * of data is contiguous in the file) or for a compressed cluster its descriptor's host
 * offset, with `csize` the bytes it may span.
 */
export interface Runs {
  count: number;
  offset: number[];
  length: number[];
  kind: number[];
  host: number[];
  csize: number[];
}

/** L2 tables kept decoded; 64 tables of 64 KiB clusters map 32 GiB. */
const L2_CACHE = 64;

export class Qcow2File {
  readonly name: string;
  readonly header: Qcow2Header;
  readonly source: ByteSource;
  readonly #l1: Float64Array;
  readonly #l2Entries: number;
  readonly #entryBytes: number;
  readonly #subclusterSize: number;
  readonly #l2Cache = new Map<number, DataView>();
  readonly #decoder: ClusterDecoder;

  private constructor(source: ByteSource, header: Qcow2Header, l1: Float64Array) {
    this.source = source;
    this.name = source.name;
    this.header = header;
    this.#l1 = l1;
    this.#entryBytes = header.extendedL2 ? 16 : 8;
    this.#l2Entries = header.clusterSize / this.#entryBytes;
    this.#subclusterSize = header.clusterSize / 32;
    this.#decoder = new ClusterDecoder(source, header.compression, header.clusterSize);
  }

  /** Parses the header and loads the L1 table of `source` (which the file then owns). */
  static async open(source: ByteSource, opts: HeaderOptions = {}): Promise<Qcow2File> {
    const header = await readHeader(source, opts);
    const raw = await readAt(source, header.l1Offset, header.l1Size * 8);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.length);
    const l1 = new Float64Array(header.l1Size);
    for (let i = 0; i < header.l1Size; i++) {
      const hi = dv.getUint32(i * 8);
      const lo = dv.getUint32(i * 8 + 4);
      // Bits 9..55 hold the L2 table offset; bit 63 is a refcount hint.
      const l2 = (hi & 0x00ffffff) * 2 ** 32 + ((lo & ~0x1ff) >>> 0);
      if (l2 !== 0 && (l2 % header.clusterSize !== 0 || l2 + header.clusterSize > source.size)) {
        throw new FormatError(source.name, `L1 entry ${i} points to an L2 table at ${l2}, not a cluster inside the file`, header.l1Offset + i * 8);
      }
      l1[i] = l2;
    }
    return new Qcow2File(source, header, l1);
  }

  get size(): number {
    return this.header.size;
  }

  async #l2(index: number): Promise<DataView | undefined> {
    const at = this.#l1[index]!;
    if (at === 0) return undefined;
    let t = this.#l2Cache.get(at);
    if (t) {
      // Refresh the entry's place in the LRU order.
      this.#l2Cache.delete(at);
      this.#l2Cache.set(at, t);
      return t;
    }
    const buf = await readAt(this.source, at, this.header.clusterSize);
    t = new DataView(buf.buffer, buf.byteOffset, buf.length);
    if (this.#l2Cache.size >= L2_CACHE) this.#l2Cache.delete(this.#l2Cache.keys().next().value!);
    this.#l2Cache.set(at, t);
    return t;
  }

  /**
   * What this file stores for guest bytes [offset, offset+length) (inside the virtual size),
   * as consecutive runs; adjacent runs of one kind are joined (data only when contiguous in
   * the file).
   */
  async runs(offset: number, length: number): Promise<Runs> {
    const r: Runs = { count: 0, offset: [], length: [], kind: [], host: [], csize: [] };
    const cs = this.header.clusterSize;
    const bits = this.header.clusterBits;
    const push = (at: number, len: number, kind: number, host: number, csize: number): void => {
      const k = r.count - 1;
      if (
        k >= 0 &&
        r.kind[k] === kind &&
        kind !== RUN_COMPRESSED &&
        r.offset[k]! + r.length[k]! === at &&
        (kind !== RUN_DATA || r.host[k]! + r.length[k]! === host)
      ) {
        r.length[k]! += len;
        return;
      }
      r.offset.push(at);
      r.length.push(len);
      r.kind.push(kind);
      r.host.push(host);
      r.csize.push(csize);
      r.count++;
    };
    const end = offset + length;
    for (let at = offset; at < end; ) {
      const cluster = Math.floor(at / cs);
      const l1i = Math.floor(cluster / this.#l2Entries);
      const l2 = await this.#l2(l1i);
      if (!l2) {
        // A whole L2 table's span is unallocated.
        const spanEnd = Math.min(end, (l1i + 1) * this.#l2Entries * cs);
        push(at, spanEnd - at, RUN_UNALLOCATED, 0, 0);
        at = spanEnd;
        continue;
      }
      const tableEnd = Math.min(end, (l1i + 1) * this.#l2Entries * cs);
      for (let c = cluster; at < tableEnd; c++) {
        const cStart = c * cs;
        const cEnd = Math.min(tableEnd, cStart + cs);
        const e = (c % this.#l2Entries) * this.#entryBytes;
        const hi = l2.getUint32(e);
        const lo = l2.getUint32(e + 4);
        const entryAt = this.#l1[l1i]! + e;
        if (hi & 0x40000000) {
          const { host, bytes } = this.#compressed(hi, lo, bits);
          if (bytes <= 0) throw new FormatError(this.name, `compressed guest cluster ${c} starts at ${host}, past the end of the file (${this.source.size} bytes)`, entryAt);
          push(at, cEnd - at, RUN_COMPRESSED, host, bytes);
          at = cEnd;
          continue;
        }
        const host = (hi & 0x00ffffff) * 2 ** 32 + ((lo & ~0x1ff) >>> 0);
        if (host !== 0 && (host % cs !== 0 || host >= this.source.size)) {
          throw new FormatError(this.name, `L2 entry for guest cluster ${c} points to ${host}, not a cluster inside the file`, entryAt);
        }
        if (!this.header.extendedL2) {
          const kind = lo & 1 && this.header.version === 3 ? RUN_ZERO : host === 0 ? RUN_UNALLOCATED : RUN_DATA;
          push(at, cEnd - at, kind, host + (at - cStart), 0);
          at = cEnd;
          continue;
        }
        const zeroBits = l2.getUint32(e + 8);
        const allocBits = l2.getUint32(e + 12);
        if (allocBits & zeroBits) throw new FormatError(this.name, `subclusters ${(allocBits & zeroBits).toString(2)}b of guest cluster ${c} are both allocated and zero`, entryAt);
        if (allocBits !== 0 && host === 0) throw new FormatError(this.name, `guest cluster ${c} has allocated subclusters but no host cluster`, entryAt);
        const sc = this.#subclusterSize;
        for (let s = Math.floor((at - cStart) / sc); at < cEnd; s++) {
          const sEnd = Math.min(cEnd, cStart + (s + 1) * sc);
          const bit = 2 ** s;
          const kind = allocBits & bit ? RUN_DATA : zeroBits & bit ? RUN_ZERO : RUN_UNALLOCATED;
          push(at, sEnd - at, kind, host + (at - cStart), 0);
          at = sEnd;
        }
      }
    }
    return r;
  }

  /** Host offset and byte span of a compressed cluster descriptor (docs/qcow2.md). */
  #compressed(hi: number, lo: number, bits: number): { host: number; bytes: number } {
    const d = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo);
    const x = BigInt(62 - (bits - 8));
    const host = Number(d & ((1n << x) - 1n));
    const extra = Number(d >> x);
    const end = (Math.floor(host / 512) + 1 + extra) * 512;
    return { host, bytes: Math.min(end, this.source.size) - host };
  }

  /**
   * Fills `buf` with the guest bytes of run `k` from `offset` (inside the run), for data,
   * compressed and zero runs. Unallocated runs are the caller's (the backing file's).
   */
  async readRun(r: Runs, k: number, buf: Uint8Array, offset: number): Promise<void> {
    const kind = r.kind[k]!;
    const within = offset - r.offset[k]!;
    if (kind === RUN_DATA) {
      const host = r.host[k]! + within;
      // A data cluster at the very end of the file may be shorter than a cluster: the rest reads as zeros.
      const n = readable(buf, host, this.source.size).length;
      if (n > 0) await readExact(this.source, buf.subarray(0, n), host);
      if (n < buf.length) buf.fill(0, n);
    } else if (kind === RUN_COMPRESSED) {
      await this.#decoder.read(r.host[k]!, r.csize[k]!, buf, offset % this.header.clusterSize);
    } else {
      buf.fill(0);
    }
  }

  close(): Promise<void> {
    return this.source.close();
  }
}
