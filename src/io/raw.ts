/**
 * A raw disk image as a block device: every byte is data; a last partial sector reads as
 * zero padding, as qemu sizes raw images in whole sectors.
 */
import { ShortReadError } from './errors.ts';
import type { BlockDevice, ByteSource, Extent } from './types.ts';
import { checkRange, readable } from './util.ts';

export class RawDevice implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly layerCount = 1;
  readonly writable = false;
  readonly source: ByteSource;
  constructor(source: ByteSource) {
    this.source = source;
    this.name = source.name;
    this.size = Math.ceil(source.size / 512) * 512;
  }
  /** Also reached directly (import, export), not only through src/ops. */
  #check(offset: number, length: number): void {
    checkRange(this.name, offset, length, this.size);
  }
  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.#check(offset, buf.length);
    const view = readable(buf, offset, this.source.size);
    const got = view.length > 0 ? await this.source.read(view, offset) : 0;
    if (got !== view.length) throw new ShortReadError(this.name, offset, view.length, got);
    if (view.length < buf.length) buf.fill(0, view.length);
  }
  async extents(offset: number, length: number): Promise<Extent[]> {
    this.#check(offset, length);
    return length > 0 ? [{ offset, length, kind: 'data', layer: 0 }] : [];
  }
  close(): Promise<void> {
    return this.source.close();
  }
}
