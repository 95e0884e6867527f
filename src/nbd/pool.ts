/**
 * Recycles large reply buffers. A fresh multi-megabyte allocation per read costs page faults
 * on first touch and garbage-collector work on external memory; reusing a few buffers after
 * the socket has written them avoids both. Small replies stay with Buffer.allocUnsafe.
 */

/** Smallest buffer worth pooling. */
export const POOL_MIN = 64 * 1024;

export class BufferPool {
  readonly #free = new Map<number, ArrayBuffer[]>();
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** A buffer of exactly `size` bytes (contents undefined). */
  get(size: number): Buffer {
    if (size < POOL_MIN) return Buffer.allocUnsafe(size);
    const cls = sizeClass(size);
    const ab = this.#free.get(cls)?.pop();
    if (ab) {
      this.#bytes -= cls;
      return Buffer.from(ab, 0, size);
    }
    return Buffer.from(new ArrayBuffer(cls), 0, size);
  }

  /** Returns a buffer from `get` once nothing reads it any more. */
  put(buf: Buffer): void {
    const ab = buf.buffer;
    if (!(ab instanceof ArrayBuffer) || buf.byteOffset !== 0) return;
    const cls = ab.byteLength;
    if (cls < POOL_MIN || cls !== sizeClass(cls) || this.#bytes + cls > this.#maxBytes) return;
    let list = this.#free.get(cls);
    if (!list) this.#free.set(cls, (list = []));
    list.push(ab);
    this.#bytes += cls;
  }

  /** Bytes held for reuse. */
  get pooledBytes(): number {
    return this.#bytes;
  }
}

/** Header room on top of a power-of-two payload, so a 1 MiB read reply fits a 1 MiB class. */
const SLACK = 64;

/** A power of two plus SLACK, at or above `size`. */
function sizeClass(size: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, size - SLACK))) + SLACK;
}
