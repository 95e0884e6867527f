import { declareCapabilities } from './capabilities.ts';
import { checkRange, readable } from './util.ts';
import type { BlockDevice, ByteSink, ByteSource, Extent } from './types.ts';

function copyOut(bytes: Uint8Array, buf: Uint8Array, offset: number): number {
  const n = readable(buf, offset, bytes.length).length;
  if (n > 0) buf.set(bytes.subarray(offset, offset + n));
  return n;
}

/** A byte source over a buffer in memory (tests, small blobs). */
export class MemorySource implements ByteSource {
  readonly name: string;
  readonly bytes: Uint8Array;
  constructor(bytes: Uint8Array, name = 'memory') {
    this.bytes = bytes;
    this.name = name;
  }
  get size(): number {
    return this.bytes.length;
  }
  tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    return copyOut(this.bytes, buf, offset);
  }
  async read(buf: Uint8Array, offset: number): Promise<number> {
    return copyOut(this.bytes, buf, offset);
  }
  async close(): Promise<void> {}
}

/**
 * A writable RAM disk. Tracks which 512-byte sectors were ever written so extents()
 * can report holes; trimmed sectors report as zero extents.
 */
export class MemoryDevice implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly layerCount = 1;
  readonly writable = true;
  readonly capabilities = declareCapabilities({ write: true, trim: true, flush: true });
  readonly bytes: Uint8Array;
  /** Per sector: 0 = never written, 1 = data, 2 = trimmed. */
  readonly #state: Uint8Array;

  constructor(size: number, name = 'memory') {
    this.size = size;
    this.name = name;
    this.bytes = new Uint8Array(size);
    this.#state = new Uint8Array(Math.ceil(size / 512));
  }

  /** Also reached directly (tests, library users): a request past the buffer must fail typed, not as a RangeError. */
  #check(offset: number, length: number): void {
    checkRange(this.name, offset, length, this.size);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.#check(offset, buf.length);
    buf.set(this.bytes.subarray(offset, offset + buf.length));
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.#check(offset, buf.length);
    this.bytes.set(buf, offset);
    this.#mark(offset, buf.length, 1);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.#check(offset, length);
    this.bytes.fill(0, offset, offset + length);
    this.#mark(offset, length, 2);
  }

  async flush(): Promise<void> {}

  #mark(offset: number, length: number, v: number): void {
    if (length === 0) return;
    this.#state.fill(v, Math.floor(offset / 512), Math.ceil((offset + length) / 512));
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.#check(offset, length);
    const out: Extent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const s = this.#state[Math.floor(pos / 512)]!;
      let next = (Math.floor(pos / 512) + 1) * 512;
      while (next < end && this.#state[next / 512] === s) next += 512;
      next = Math.min(next, end);
      out.push({ offset: pos, length: next - pos, kind: s === 0 ? 'hole' : s === 1 ? 'data' : 'zero', layer: s === 0 ? -1 : 0 });
      pos = next;
    }
    return out;
  }

  async close(): Promise<void> {}
}

/** A sink collecting bytes in memory (tests, small outputs). */
export class MemorySink implements ByteSink {
  readonly name: string;
  #chunks: Uint8Array[] = [];
  #size = 0;
  constructor(name = 'memory') {
    this.name = name;
  }
  get position(): number {
    return this.#size;
  }
  async write(buf: Uint8Array): Promise<void> {
    this.#chunks.push(buf.slice());
    this.#size += buf.length;
  }
  async close(): Promise<void> {}
  /** Everything written so far, as one buffer. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.#size);
    let at = 0;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    this.#chunks = [out];
    return out;
  }
}
