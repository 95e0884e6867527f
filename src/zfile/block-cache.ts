/**
 * A small LRU of decompressed blocks, keyed by block index. A block being decoded is entered
 * as pending first, so concurrent reads of the same block wait for one decode instead of
 * fetching and decoding it again. Only finished blocks count towards the capacity.
 */
export interface CacheEntry {
  /** Set once decoded. */
  data: Uint8Array | undefined;
  promise: Promise<Uint8Array>;
}

export class BlockCache {
  readonly capacity: number;
  readonly #map = new Map<number, CacheEntry>();
  #done = 0;

  /** `capacity` = finished blocks kept; 0 keeps none (pending entries still deduplicate). */
  constructor(capacity: number) {
    this.capacity = capacity;
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
    const e: CacheEntry = { data: undefined, promise };
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
      if (--this.#done <= this.capacity) break;
    }
  }

  /** Adds a block decoded outside any pending entry (the synchronous read path). */
  put(i: number, data: Uint8Array): void {
    const e: CacheEntry = { data: undefined, promise: Promise.resolve(data) };
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
  }
}
