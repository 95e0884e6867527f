/**
 * The metadata block cache. Every metadata block (inode tables, bitmaps, descriptors, the
 * superblock, directory, extent and xattr blocks) is read and changed here; flush writes only
 * the 512-byte sectors that differ from what the device holds, so a layer's delta carries the
 * sectors it changed and nothing else. Adjacent dirty sectors go out as one write.
 */
import type { Ext4Device } from './types.ts';
import { BLOCK_SIZE } from './superblock.ts';

const SECTOR = 512;
const SECTORS = BLOCK_SIZE / SECTOR;
/** Clean blocks are dropped after a flush once the cache holds more than this. */
const KEEP_BYTES = 64 << 20;

interface Entry {
  buf: Uint8Array;
  /** What the device holds, or null when unknown (every sector is then written). */
  base: Uint8Array | null;
  /** Held by the engine across calls (superblock, descriptors, bitmaps): never dropped. */
  pinned: boolean;
  /** With `base` null: all-zero sectors are left unwritten (see slack()). */
  skipZero?: boolean;
}

export class BlockCache {
  readonly #dev: Ext4Device;
  readonly #blocks = new Map<number, Entry>();
  readonly #dirty = new Set<number>();
  /** Bytes written by flushes so far. */
  written = 0;

  constructor(dev: Ext4Device) {
    this.#dev = dev;
  }

  /** The cached block; mutate it in place, then call dirty(). A pinned block stays cached. */
  async get(block: number, pin = false): Promise<Uint8Array> {
    const hit = this.#blocks.get(block);
    if (hit) {
      hit.pinned ||= pin;
      return hit.buf;
    }
    const buf = new Uint8Array(BLOCK_SIZE);
    await this.#dev.read(buf, block * BLOCK_SIZE);
    this.#blocks.set(block, { buf, base: buf.slice(), pinned: pin });
    return buf;
  }

  /** The cached block if present (no read). */
  peek(block: number): Uint8Array | undefined {
    return this.#blocks.get(block)?.buf;
  }

  /**
   * A block whose old content does not matter (newly allocated): zeroed and dirty. `known`
   * gives what the device holds there (zeros on a fresh format), so unchanged sectors are
   * skipped; without it every sector is written.
   */
  fresh(block: number, known?: Uint8Array, pin = false): Uint8Array {
    const buf = new Uint8Array(BLOCK_SIZE);
    this.#blocks.set(block, { buf, base: known ? known.slice() : null, pinned: pin });
    this.#dirty.add(block);
    return buf;
  }

  /**
   * A newly allocated directory or extent-tree block: like fresh(), but sectors still all zero
   * at the first flush are not written. Both formats reach their live bytes only through
   * structures that start in written sectors (rec_len chains, entry counts) and ignore the
   * rest, so whatever the device holds there does not matter — and a directory of a few
   * entries costs one sector of the layer instead of eight. (Not for xattr blocks: their entry
   * list ends at four zero bytes, which must be on the device.)
   */
  slack(block: number): Uint8Array {
    const buf = new Uint8Array(BLOCK_SIZE);
    this.#blocks.set(block, { buf, base: null, pinned: false, skipZero: true });
    this.#dirty.add(block);
    return buf;
  }

  dirty(block: number): void {
    this.#dirty.add(block);
  }

  /** A freed block: never written back, and re-read if used again. */
  forget(block: number): void {
    this.#blocks.delete(block);
    this.#dirty.delete(block);
  }

  /** Writes every changed sector; resolves the number of bytes written. */
  async flush(): Promise<number> {
    const order = [...this.#dirty].sort((a, b) => a - b);
    this.#dirty.clear();
    let bytes = 0;
    // A run of changed sectors: [start, end) in device sectors, with the pieces that fill it.
    let runStart = -1;
    let runEnd = -1;
    let pieces: Uint8Array[] = [];
    const emit = async (): Promise<void> => {
      if (runStart < 0) return;
      const buf = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
      await this.#dev.write(buf, runStart * SECTOR);
      bytes += buf.length;
      runStart = -1;
      pieces = [];
    };
    for (const block of order) {
      const e = this.#blocks.get(block)!;
      for (let s = 0; s < SECTORS; s++) {
        const lo = s * SECTOR;
        const same = e.base !== null
          ? Buffer.compare(e.buf.subarray(lo, lo + SECTOR), e.base.subarray(lo, lo + SECTOR)) === 0
          : e.skipZero === true && allZero(e.buf, lo);
        if (same) continue;
        const sector = block * SECTORS + s;
        if (sector !== runEnd) await emit();
        if (runStart < 0) runStart = sector;
        // Extend the last piece when it is the same block's previous sector.
        const last = pieces[pieces.length - 1];
        if (last && last.buffer === e.buf.buffer && last.byteOffset + last.length === e.buf.byteOffset + lo) {
          pieces[pieces.length - 1] = e.buf.subarray(last.byteOffset - e.buf.byteOffset, lo + SECTOR);
        } else {
          pieces.push(e.buf.subarray(lo, lo + SECTOR));
        }
        runEnd = sector + 1;
      }
      if (e.base === null) {
        e.base = e.buf.slice();
        e.skipZero = false;
      }
    }
    await emit();
    // The device now holds what the buffers hold.
    for (const block of order) {
      const e = this.#blocks.get(block)!;
      e.base!.set(e.buf);
    }
    if (this.#blocks.size * BLOCK_SIZE > KEEP_BYTES) {
      for (const [block, e] of this.#blocks) if (!e.pinned) this.#blocks.delete(block);
    }
    this.written += bytes;
    return bytes;
  }
}

function allZero(buf: Uint8Array, lo: number): boolean {
  for (let i = lo; i < lo + SECTOR; i++) if (buf[i] !== 0) return false;
  return true;
}
