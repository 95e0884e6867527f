/**
 * File data on its way to the device: a file's pieces cut into 4 KiB blocks (all-zero blocks
 * and gaps stay holes), each block given the next free one, runs of contiguous blocks joined into
 * large writes (the producer's chunks written in place, small pieces copied together), the block
 * holding EOF written only to the end of its sector. Writes go out a few at a time without
 * waiting; drain() waits for them (before blocks are freed, whose reuse could overlap one, and
 * before metadata is flushed).
 */
import { Ext4ArgumentError } from './errors.ts';
import type { Extent } from './extents.ts';
import { pushRun } from './extents.ts';
import { BLOCK_SIZE } from './superblock.ts';
import type { Ext4Device, FileData } from './types.ts';

const SECTOR = 512;
/** Largest single data write (pieces of one contiguous run are joined up to this). */
const WRITE_MAX = 8 << 20;
/** Pieces below this are copied together into one write; larger ones are written as they are. */
const COPY_MAX = 1 << 20;
/** Data writes in flight at once (to distinct, freshly allocated blocks). */
const IN_FLIGHT = 8;
const ZERO_BLOCK = new Uint8Array(BLOCK_SIZE);

export class DataWriter {
  readonly #dev: Ext4Device;
  readonly #block: () => Promise<number>;
  readonly #inFlight = new Set<Promise<void>>();
  #error: unknown = undefined;

  constructor(dev: Ext4Device, block: () => Promise<number>) {
    this.#dev = dev;
    this.#block = block;
  }

  /** Starts a write without waiting for it; a failure surfaces at the next write or drain. */
  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.#error !== undefined) throw this.#error;
    while (this.#inFlight.size >= IN_FLIGHT) await Promise.race(this.#inFlight);
    const p: Promise<void> = this.#dev.write(buf, offset).catch((e: unknown) => { this.#error ??= e; })
      .finally(() => this.#inFlight.delete(p));
    this.#inFlight.add(p);
  }

  async drain(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.race(this.#inFlight);
    if (this.#error !== undefined) throw this.#error;
  }

  /** Streams a file's pieces into freshly allocated blocks; all-zero blocks and gaps stay holes. */
  async file(name: string, size: number, data: FileData): Promise<{ extents: Extent[]; written: number }> {
    const extents: Extent[] = [];
    const lastLblk = size === 0 ? -1 : Math.floor((size - 1) / BLOCK_SIZE);
    let runStart = -1;
    let runBlocks = 0;
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let written = 0;
    const flushRun = async (): Promise<void> => {
      if (pending.length === 0) return;
      const buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      await this.write(buf, runStart * BLOCK_SIZE);
      written += pendingBytes;
      pending = [];
      pendingBytes = 0;
      runBlocks = 0;
    };
    const emit = async (lblk: number, block: Uint8Array): Promise<void> => {
      if (Buffer.compare(block, ZERO_BLOCK.subarray(0, block.length)) === 0) return;
      const pblk = await this.#block();
      pushRun(extents, lblk, pblk, 1);
      const keep = lblk === lastLblk ? Math.ceil((size - lblk * BLOCK_SIZE) / SECTOR) * SECTOR : BLOCK_SIZE;
      const piece = block.length > keep ? block.subarray(0, keep) : block;
      const last = pending[pending.length - 1];
      // The next block of the producer's chunk extends the last piece in place (no copy).
      const adjacent = last !== undefined && last.buffer === piece.buffer && last.byteOffset + last.length === piece.byteOffset;
      if (pending.length > 0 && (pblk !== runStart + runBlocks || pendingBytes >= WRITE_MAX ||
        (!adjacent && last!.length >= COPY_MAX))) await flushRun();
      if (pending.length === 0) runStart = pblk;
      if (adjacent && pending.length > 0) pending[pending.length - 1] = new Uint8Array(last!.buffer, last!.byteOffset, last!.length + piece.length);
      else pending.push(piece);
      pendingBytes += piece.length;
      runBlocks++;
    };
    let cur: Uint8Array | undefined;
    let curLblk = -1;
    let end = 0;
    for await (const { offset, bytes } of data) {
      if (offset < end || offset + bytes.length > size) {
        throw new Ext4ArgumentError(`${this.#dev.name}: file "${name}": piece at ${offset} (+${bytes.length}) overlaps the previous one or passes the size ${size}`);
      }
      end = offset + bytes.length;
      let pos = offset;
      while (pos < end) {
        const lblk = Math.floor(pos / BLOCK_SIZE);
        const within = pos - lblk * BLOCK_SIZE;
        const n = Math.min(BLOCK_SIZE - within, end - pos);
        const src = bytes.subarray(pos - offset, pos - offset + n);
        if (within === 0 && n === BLOCK_SIZE) {
          if (cur) await emit(curLblk, cur);
          cur = undefined;
          await emit(lblk, src);
        } else {
          if (cur && curLblk !== lblk) {
            await emit(curLblk, cur);
            cur = undefined;
          }
          if (!cur) {
            cur = new Uint8Array(BLOCK_SIZE);
            curLblk = lblk;
          }
          cur.set(src, within);
        }
        pos += n;
      }
    }
    if (cur) await emit(curLblk, cur);
    await flushRun();
    return { extents, written };
  }
}
