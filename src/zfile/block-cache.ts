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
  /** The block's index, once held under a shared budget. */
  index?: number;
}

/**
 * Bytes of decoded blocks that many caches (every zfile layer of a server) hold together,
 * least recently used evicted first whichever cache holds it, so one budget bounds a server
 * whatever the number of layers and exports.
 */
export class MemoryBudget {
  readonly capacity: number;
  /** Held blocks, least recently used first, with the cache holding each. */
  readonly #lru = new Map<CacheEntry, BlockCache>();
  #bytes = 0;
  /** Blocks taken in, and blocks evicted to make room. */
  readonly stats = { admitted: 0, evictions: 0 };

  constructor(capacity: number) {
    this.capacity = Math.max(0, capacity);
  }

  /** Bytes of blocks held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Blocks held. */
  get blocks(): number {
    return this.#lru.size;
  }

  /** @internal A block became held by `cache`; evicts the least recently used past the capacity. */
  _admit(cache: BlockCache, e: CacheEntry): void {
    this.#lru.set(e, cache);
    this.#bytes += e.data!.length;
    while (this.#bytes > this.capacity) {
      const [old, owner] = this.#lru.entries().next().value!;
      this.stats.evictions++;
      owner._evicted(old);
      this._forget(old);
    }
  }

  /** @internal Marks a held block most recently used. */
  _touch(e: CacheEntry, cache: BlockCache): void {
    this.#lru.delete(e);
    this.#lru.set(e, cache);
  }

  /** @internal A block is no longer held (evicted, or its cache cleared). */
  _forget(e: CacheEntry): void {
    if (this.#lru.delete(e)) this.#bytes -= e.data!.length;
  }
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
  readonly #budget: MemoryBudget | undefined;

  /**
   * `capacity` = finished blocks kept; 0 keeps none (pending entries still deduplicate).
   * Evicted buffers of `reuseSize` bytes (the block size) are reused. With a `budget`, the
   * blocks count against it instead, and `capacity` is not used.
   */
  constructor(capacity: number, reuseSize = 0, budget?: MemoryBudget) {
    this.capacity = capacity;
    this.#reuseSize = reuseSize;
    this.#budget = budget;
  }

  get size(): number {
    return this.#done;
  }

  /** The entry for block `i`, marked most recently used. */
  get(i: number): CacheEntry | undefined {
    const e = this.#map.get(i);
    if (e?.data) {
      if (this.#budget) {
        this.#budget._touch(e, this);
        return e;
      }
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
    if (this.#budget) {
      e.index = i;
      this.#done++;
      this.#budget.stats.admitted++;
      this.#budget._admit(this, e);
      return;
    }
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

  /** @internal The budget evicted `e` to make room. */
  _evicted(e: CacheEntry): void {
    if (this.#map.get(e.index!) !== e) return;
    this.#map.delete(e.index!);
    this.#done--;
    this.#retire(e);
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
    if (this.#budget) for (const e of this.#map.values()) if (e.data) this.#budget._forget(e);
    this.#map.clear();
    this.#done = 0;
    this.#free.length = 0;
  }
}
