/**
 * A small LRU of decompressed blocks, keyed by block index. A block being decoded is entered
 * as pending first, so concurrent reads of the same block wait for one decode instead of
 * fetching and decoding it again. Only finished blocks count towards the capacity.
 *
 * Evicted buffers are handed out again by take(), which spares a 4 KiB read inside a larger
 * block the allocation (and the garbage) of a block-sized buffer. Blocks put() in finished
 * were only ever copied from synchronously, so their buffers are free at once; a block that
 * was pending may have readers waiting to copy from it in reactions queued when it resolved,
 * so its buffer is freed only after the microtasks queued before its eviction have run.
 */
export interface CacheEntry {
  /** Set once decoded. */
  data: Uint8Array | undefined;
  promise: Promise<Uint8Array>;
  /** Readers may have waited on `promise` (the entry was pending). */
  waited: boolean;
}

/** Evicted buffers kept for reuse at most. */
const FREE_MAX = 8;

export class BlockCache {
  readonly capacity: number;
  readonly #map = new Map<number, CacheEntry>();
  #done = 0;
  /** Evicted buffers of `#reuseSize` bytes, free for take(). */
  readonly #free: Uint8Array[] = [];
  /** Evicted buffers waiting for the microtask queue to pass them to #free. */
  #retired: Uint8Array[] = [];
  readonly #reuseSize: number;

  /**
   * `capacity` = finished blocks kept; 0 keeps none (pending entries still deduplicate).
   * Evicted buffers of `reuseSize` bytes (the block size) are reused.
   */
  constructor(capacity: number, reuseSize = 0) {
    this.capacity = capacity;
    this.#reuseSize = reuseSize;
  }

  get size(): number {
    return this.#done;
  }

  /** The entry for block `i`, marked most recently used. */
  get(i: number): CacheEntry | undefined {
    const e = this.#map.get(i);
    if (e?.data) {
      this.#map.delete(i);
      this.#map.set(i, e);
    }
    return e;
  }

  has(i: number): boolean {
    return this.#map.has(i);
  }

  addPending(i: number, promise: Promise<Uint8Array>): CacheEntry {
    const e: CacheEntry = { data: undefined, promise, waited: true };
    this.#map.set(i, e);
    return e;
  }

  /** Records the decoded bytes of a pending entry and evicts the least recently used blocks. */
  complete(i: number, e: CacheEntry, data: Uint8Array): void {
    if (this.#map.get(i) !== e) return;
    e.data = data;
    if (this.capacity === 0) {
      this.#map.delete(i);
      return;
    }
    this.#map.delete(i);
    this.#map.set(i, e);
    this.#done++;
    if (this.#done <= this.capacity) return;
    for (const [k, v] of this.#map) {
      if (!v.data) continue;
      this.#map.delete(k);
      this.#retire(v);
      if (--this.#done <= this.capacity) break;
    }
  }

  /** A buffer of `size` bytes for decoding a block into: an evicted one when there is one. */
  take(size: number): Uint8Array {
    if (size === this.#reuseSize) {
      const b = this.#free.pop();
      if (b) return b;
    }
    return Buffer.allocUnsafe(size);
  }

  #retire(e: CacheEntry): void {
    const data = e.data!;
    if (data.length !== this.#reuseSize || this.#free.length + this.#retired.length >= FREE_MAX) return;
    if (!e.waited) {
      this.#free.push(data);
      return;
    }
    if (this.#retired.length === 0) {
      queueMicrotask(() => {
        for (const b of this.#retired) this.#free.push(b);
        this.#retired = [];
      });
    }
    this.#retired.push(data);
  }

  /** Adds a block decoded outside any pending entry (the synchronous read path). */
  put(i: number, data: Uint8Array): void {
    const e: CacheEntry = { data: undefined, promise: Promise.resolve(data), waited: false };
    this.#map.set(i, e);
    this.complete(i, e, data);
  }

  /** Forgets a pending entry whose decode failed. */
  drop(i: number, e: CacheEntry): void {
    if (this.#map.get(i) === e && !e.data) this.#map.delete(i);
  }

  clear(): void {
    this.#map.clear();
    this.#done = 0;
    this.#free.length = 0;
  }
}
