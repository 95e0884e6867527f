/**
 * Writes behind a producer that fills buffers (export, zfile decompress): up to `depth` writes
 * in flight over depth + 1 buffers, each handed to the thread pool before the next buffer is
 * filled, so a synchronous decode overlaps the writes. A buffer is given out again only once
 * the write that last used it is done.
 */
export class WriteBehind {
  readonly #bufs: Uint8Array[];
  readonly #writes: Promise<number>[] = [];
  readonly #depth: number;
  #k = 0;
  #written = 0;

  constructor(depth: number, size: number) {
    this.#depth = depth;
    this.#bufs = Array.from({ length: depth + 1 }, () => Buffer.allocUnsafe(size));
  }

  /** The next buffer to fill, once the oldest write in flight (the one that used it) is done. */
  async next(): Promise<Uint8Array> {
    if (this.#writes.length === this.#depth) this.#written += await this.#writes.shift()!;
    return this.#bufs[this.#k++ % this.#bufs.length]!;
  }

  /** Queues a write of the buffer given out last, resolving the bytes it wrote. */
  push(write: Promise<number>): void {
    // Observed at once so a failed write waits for its turn instead of crashing.
    write.catch(() => {});
    this.#writes.push(write);
  }

  /** Waits for every write; resolves the bytes written in all, or rejects with the first failure. */
  async drain(): Promise<number> {
    while (this.#writes.length > 0) this.#written += await this.#writes.shift()!;
    return this.#written;
  }

  /** Waits for the writes still in flight, failed or not (before the file is closed). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#writes);
  }
}
