/**
 * A qcow2 file as a block device over its backing device
 * (docs/qcow2.md: unallocated clusters read from the backing file, or zeros past its end or
 * without one). Extents name the chain position (bottom = 0) that backs each range, so an
 * import reads only what some image allocates.
 */
import type { BlockDevice, Extent, ExtentKind } from '../io/types.ts';
import { checkRange, readable, settleAll } from '../io/util.ts';
import { RUN_COMPRESSED, RUN_DATA, RUN_UNALLOCATED, RUN_ZERO, type Qcow2File } from './file.ts';

/** Appends an extent, joining it to the previous one when kind and layer match. */
function pushExtent(list: Extent[], offset: number, length: number, kind: ExtentKind, layer: number): void {
  const last = list.at(-1);
  if (last && last.kind === kind && last.layer === layer && last.offset + last.length === offset) last.length += length;
  else list.push({ offset, length, kind, layer });
}

/** Reads `dev` at `offset` into `buf`, zeros where `buf` reaches past its end. */
async function readClipped(dev: BlockDevice | undefined, buf: Uint8Array, offset: number): Promise<void> {
  const n = dev ? readable(buf, offset, dev.size).length : 0;
  if (n > 0) await dev!.read(buf.subarray(0, n), offset);
  if (n < buf.length) buf.fill(0, n);
}

/** A qcow2 file over its backing device (raw, qcow2, or none). */
export class Qcow2Device implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly layerCount: number;
  readonly writable = false;
  readonly file: Qcow2File;
  readonly backing: BlockDevice | undefined;
  /** This file's position in the chain, bottom = 0. */
  readonly #layer: number;

  constructor(file: Qcow2File, backing?: BlockDevice) {
    this.file = file;
    this.backing = backing;
    this.name = file.name;
    this.size = file.size;
    this.#layer = backing ? backing.layerCount : 0;
    this.layerCount = this.#layer + 1;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.name, offset, buf.length, this.size);
    const r = await this.file.runs(offset, buf.length);
    const jobs: Promise<void>[] = [];
    for (let k = 0; k < r.count; k++) {
      const at = r.offset[k]! - offset;
      const piece = buf.subarray(at, at + r.length[k]!);
      if (r.kind[k] === RUN_UNALLOCATED) jobs.push(readClipped(this.backing, piece, r.offset[k]!));
      else jobs.push(this.file.readRun(r, k, piece, r.offset[k]!));
    }
    await settleAll(jobs);
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange(this.name, offset, length, this.size);
    const r = await this.file.runs(offset, length);
    const out: Extent[] = [];
    for (let k = 0; k < r.count; k++) {
      const at = r.offset[k]!;
      const len = r.length[k]!;
      const kind = r.kind[k]!;
      if (kind === RUN_DATA || kind === RUN_COMPRESSED) pushExtent(out, at, len, 'data', this.#layer);
      else if (kind === RUN_ZERO) pushExtent(out, at, len, 'zero', this.#layer);
      else {
        const inBacking = this.backing ? Math.max(0, Math.min(len, this.backing.size - at)) : 0;
        if (inBacking > 0) for (const e of await this.backing!.extents(at, inBacking)) pushExtent(out, e.offset, e.length, e.kind, e.layer);
        if (inBacking < len) pushExtent(out, at + inBacking, len - inBacking, 'hole', -1);
      }
    }
    return out;
  }

  /**
   * What this file alone stores for [offset, offset+length): data (also compressed), zero,
   * or hole (layer -1) for what it leaves to its backing file.
   */
  async ownExtents(offset: number, length: number): Promise<Extent[]> {
    checkRange(this.name, offset, length, this.size);
    const r = await this.file.runs(offset, length);
    const out: Extent[] = [];
    for (let k = 0; k < r.count; k++) {
      const kind = r.kind[k]!;
      if (kind === RUN_UNALLOCATED) pushExtent(out, r.offset[k]!, r.length[k]!, 'hole', -1);
      else pushExtent(out, r.offset[k]!, r.length[k]!, kind === RUN_ZERO ? 'zero' : 'data', this.#layer);
    }
    return out;
  }


  async close(): Promise<void> {
    await settleAll([this.file.close(), ...(this.backing ? [this.backing.close()] : [])]);
  }
}
