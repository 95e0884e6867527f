/**
 * A remote blob read lazily: reads are widened to whole refill units (256 KiB default),
 * units already held come from a chunk store (the disk cache or a small memory LRU),
 * missing neighbours are fetched in one request, concurrent readers of a unit share its
 * fetch, and at most `maxInflight` fetches run at once. After a full download the source
 * can switch to a local file and never touch the network again.
 */
import { InvalidArgumentError, ShortReadError } from '../io/errors.ts';
import type { ByteSource } from '../io/types.ts';
import { readable, settleAll } from '../io/util.ts';
import { DEFAULT_UNIT } from './defaults.ts';

export { DEFAULT_UNIT } from './defaults.ts';

/** Where fetched units are kept. */
export interface ChunkStore {
  readonly unit: number;
  /** The store a wrapping store (a verifying one) forwards to. */
  readonly inner?: ChunkStore;
  /**
   * The store keeping these units on disk across runs, able to check the whole blob against
   * its digest (the blob cache's entry): itself, or the one below a wrapping store, which
   * forwards it. Absent for memory stores. A background download fills only such a store.
   */
  readonly disk?: DiskChunkStore;
  /** True when unit `i` is held and readable. */
  has(i: number): boolean;
  /**
   * Reads [offset, offset + buf.length) from held units. Resolves false (and leaves the
   * read to the network) when a unit vanished meanwhile (eviction) or failed verification.
   */
  readHeld(buf: Uint8Array, offset: number): Promise<boolean>;
  /** readHeld without a promise: undefined when that cannot be answered synchronously. */
  readHeldSync?(buf: Uint8Array, offset: number): boolean | undefined;
  /** Drops unit `i` (it proved corrupt), so it is fetched again. */
  forget(i: number): void;
  /**
   * Keeps unit `i` (`data` is the whole unit, shorter only at the blob's end). May resolve
   * whether these bytes were stored (false: the unit was held already, or being written).
   */
  put(i: number, data: Uint8Array): Promise<boolean | void>;
  /**
   * Optional: a number that changes whenever unit `i`'s held bytes may have changed (stored,
   * forgotten, the store emptied), for a wrapper that remembers which units it checked.
   */
  generation?(i: number): number;
  close(): Promise<void>;
}

/** A chunk store on disk that holds a whole blob once every unit is fetched (see ChunkStore.disk). */
export interface DiskChunkStore extends ChunkStore {
  /** Units of the blob. */
  readonly units: number;
  /** The file holding the units at their blob offsets. */
  readonly dataPath: string;
  /** True once every unit is held and the whole blob matched its digest. */
  readonly complete: boolean;
  /** When every unit is held, checks the whole blob against its digest; resolves `complete`. */
  checkComplete(): Promise<boolean>;
}

export interface LazySourceOptions {
  /** Refill unit in bytes: a power of two, multiple of 4 KiB (default 256 KiB). */
  unit?: number;
  /** Concurrent fetches (default 8). */
  maxInflight?: number;
  /** Largest single fetch when neighbouring units are missing (default 4 MiB). */
  maxRequest?: number;
  /** Where units are kept; default a memory LRU of `memoryBytes`. */
  store?: ChunkStore;
  /** Memory LRU size when no store is given (default 16 MiB). */
  memoryBytes?: number;
}

/**
 * Bytes all lazy sources of the process may have in flight (fetching, or fetched and not yet
 * in their store) at once. Each source bounds its own fetches (8 of up to 4 MiB); an image of
 * many layers read cold, or opened in one wave, would otherwise hold a fetch buffer per layer
 * at a time. A fetch larger than the budget runs when it is alone.
 */
const FLIGHT_BYTES_MAX = 24 << 20;
let flightBytes = 0;
const flightQueue: Array<{ bytes: number; go: () => void }> = [];

/** Counts `bytes` in, or returns a promise that resolves when they fit. */
function admitFetch(bytes: number): Promise<void> | undefined {
  if (flightQueue.length === 0 && (flightBytes === 0 || flightBytes + bytes <= FLIGHT_BYTES_MAX)) {
    flightBytes += bytes;
    return undefined;
  }
  return new Promise<void>((go) => flightQueue.push({ bytes, go }));
}

function finishFetch(bytes: number): void {
  flightBytes -= bytes;
  while (flightQueue.length > 0 && (flightBytes === 0 || flightBytes + flightQueue[0]!.bytes <= FLIGHT_BYTES_MAX)) {
    const next = flightQueue.shift()!;
    flightBytes += next.bytes;
    next.go();
  }
}

export function checkUnit(unit: number): number {
  if (!Number.isSafeInteger(unit) || unit < 4096 || unit % 4096 !== 0 || (unit & (unit - 1)) !== 0) {
    throw new InvalidArgumentError(`refill unit ${unit} must be a power of two and a multiple of 4096`);
  }
  return unit;
}

interface Flight {
  /** The unit's bytes once fetched. */
  data: Promise<Uint8Array>;
  /** A reader found these bytes corrupt: they must not reach (or stay in) the store. */
  evicted?: boolean;
}

export class LazySource implements ByteSource {
  readonly remote: ByteSource;
  readonly unit: number;
  readonly store: ChunkStore;
  readonly #maxRequest: number;
  readonly #maxInflight: number;
  readonly #flights = new Map<number, Flight>();
  readonly #background = new Set<Promise<unknown>>();
  readonly #waiting: Array<() => void> = [];
  #running = 0;
  #local: ByteSource | undefined;
  /** Fetch statistics (requests and bytes from the remote). */
  readonly stats = { requests: 0, bytes: 0, hits: 0, misses: 0 };

  constructor(remote: ByteSource, opts: LazySourceOptions = {}) {
    this.remote = remote;
    this.unit = checkUnit(opts.store?.unit ?? opts.unit ?? DEFAULT_UNIT);
    this.store = opts.store ?? new MemoryChunkStore(this.unit, opts.memoryBytes ?? 16 << 20);
    this.#maxRequest = Math.max(this.unit, opts.maxRequest ?? 4 << 20);
    this.#maxInflight = Math.max(1, opts.maxInflight ?? 8);
  }

  get name(): string {
    return this.#local ? this.#local.name : `lazy(${this.remote.name})`;
  }

  get size(): number {
    return this.remote.size;
  }

  /** True once reads go to a complete local copy. */
  get isLocal(): boolean {
    return this.#local !== undefined;
  }

  /** From now on, reads go to `local` (a verified full copy of the same bytes). */
  async switchTo(local: ByteSource): Promise<void> {
    if (local.size !== this.size) throw new InvalidArgumentError(`${local.name}: ${local.size} bytes cannot stand in for ${this.remote.name} (${this.size} bytes)`);
    const old = this.#local;
    this.#local = local;
    await old?.close();
  }

  /** Serves reads of held units (or of the local copy) without a promise when the store can. */
  tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    if (this.#local) return this.#local.tryReadSync?.(buf, offset);
    const out = readable(buf, offset, this.size);
    const n = out.length;
    if (n === 0) return 0;
    if (!this.store.readHeldSync) return undefined;
    const unit = this.unit;
    const last = Math.floor((offset + n - 1) / unit);
    for (let u = Math.floor(offset / unit); u <= last; u++) if (!this.store.has(u) || this.#flights.has(u)) return undefined;
    if (this.store.readHeldSync(out, offset) !== true) return undefined;
    this.stats.hits++;
    return n;
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    if (this.#local) return this.#local.read(buf, offset);
    const sync = this.tryReadSync(buf, offset);
    if (sync !== undefined) return sync;
    const out = readable(buf, offset, this.size);
    const n = out.length;
    if (n === 0) return 0;
    const unit = this.unit;
    const first = Math.floor(offset / unit);
    const last = Math.floor((offset + n - 1) / unit);
    let held = true;
    for (let u = first; u <= last && held; u++) held = this.store.has(u);
    if (held && (await this.store.readHeld(out, offset))) {
      this.stats.hits++;
      return n;
    }
    this.stats.misses++;
    const parts: Promise<void>[] = [];
    for (let u = first; u <= last; u++) parts.push(this.#readUnitPart(u, out, offset, last));
    await settleAll(parts);
    return n;
  }

  /**
   * Starts fetching the units of [offset, offset + length) that are neither held nor in
   * flight, without waiting; reads of them then join those fetches.
   */
  prefetch(offset: number, length: number): void {
    if (this.#local) return;
    const from = Math.max(0, offset);
    const to = Math.min(this.size, offset + length);
    if (to <= from) return;
    const last = Math.floor((to - 1) / this.unit);
    for (let u = Math.floor(from / this.unit); u <= last; u++) {
      if (!this.#flights.has(u) && !this.store.has(u)) this.#launch(u, last);
    }
  }

  /**
   * Prefetches what opening the layer reads: the head (tar, zfile and LSMT headers, the
   * first block) and the tail (zfile trailer and jump table, the LSMT index in the last
   * blocks, the tar end). Opening reads the head, then the tail it points to: started
   * together for every layer, those dependent round trips become one parallel wave.
   */
  prefetchEnds(): void {
    // The jump table takes ~1/300 of a zfile blob, the LSMT index less: 1/128 covers both.
    const tail = Math.max(this.unit, Math.ceil(this.size / 128 / this.unit) * this.unit);
    this.prefetch(0, this.unit);
    this.prefetch(this.size - tail, tail);
  }

  /** Copies unit `u`'s share of the request [offset, offset + out.length) into `out`. */
  async #readUnitPart(u: number, out: Uint8Array, offset: number, last: number): Promise<void> {
    const unitStart = u * this.unit;
    const from = Math.max(offset, unitStart);
    const to = Math.min(offset + out.length, unitStart + this.unit);
    const dst = out.subarray(from - offset, to - offset);
    if (!this.#flights.has(u) && this.store.has(u) && (await this.store.readHeld(dst, from))) return;
    const data = await (this.#flights.get(u) ?? this.#launch(u, last)).data;
    dst.set(data.subarray(from - unitStart, to - unitStart));
  }

  /**
   * Starts one fetch for unit `u` and the missing units after it (up to `last` and the
   * request cap), registering a flight per unit so concurrent readers share it.
   */
  #launch(u: number, last: number): Flight {
    let end = u;
    const maxUnits = Math.floor(this.#maxRequest / this.unit);
    while (end + 1 <= last && end + 1 - u < maxUnits && !this.#flights.has(end + 1) && !this.store.has(end + 1)) end++;
    const start = u * this.unit;
    const stop = Math.min(this.size, (end + 1) * this.unit);
    const whole = this.#fetch(start, stop - start);
    let first: Flight | undefined;
    const stored: Promise<unknown>[] = [];
    for (let i = u; i <= end; i++) {
      const lo = (i - u) * this.unit;
      const data = whole.then((b) => b.subarray(lo, Math.min(b.length, lo + this.unit)));
      const flight: Flight = { data };
      this.#flights.set(i, flight);
      first ??= flight;
      const settle = data.then(
        async (d) => {
          if (!flight.evicted) await this.store.put(i, d).catch(() => {});
          if (flight.evicted) this.store.forget(i);
        },
        () => {},
      );
      stored.push(settle);
      const done = settle.finally(() => {
        if (this.#flights.get(i) === flight) this.#flights.delete(i);
        this.#background.delete(done);
      });
      this.#background.add(done);
    }
    // The fetch's bytes count against the budget until the store has them (or the fetch
    // failed), not only while they download: a cold read of many layers would otherwise pile
    // them up there. The units settle only after the fetch itself.
    void Promise.allSettled(stored).then(() => finishFetch(stop - start));
    return first!;
  }

  /** Fetches [offset, offset + length), admitted to the budget; #launch gives the bytes back. */
  async #fetch(offset: number, length: number): Promise<Uint8Array> {
    // A finished fetch hands its slot straight to the next waiter, so the bound is exact.
    if (this.#running < this.#maxInflight) this.#running++;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    const admitted = admitFetch(length);
    if (admitted) await admitted;
    try {
      const buf = new Uint8Array(length);
      const got = await this.remote.read(buf, offset);
      if (got !== length) throw new ShortReadError(this.remote.name, offset, length, got);
      this.stats.requests++;
      this.stats.bytes += length;
      return buf;
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }

  /**
   * Forgets the units holding [offset, offset+length): a reader found them corrupt (a bad
   * block CRC), so the next read fetches them again. A unit whose fetch has just delivered
   * those bytes is still in flight (on its way to the store): it is dropped too, or the
   * retry would read the same bad bytes back. A verified local copy is kept.
   */
  async evict(offset: number, length: number): Promise<void> {
    if (this.#local || length <= 0) return;
    const last = Math.floor((offset + length - 1) / this.unit);
    for (let u = Math.floor(offset / this.unit); u <= last; u++) {
      const flight = this.#flights.get(u);
      if (flight) {
        flight.evicted = true;
        this.#flights.delete(u);
      }
      this.store.forget(u);
    }
  }

  /** Waits until every unit fetched so far has been handed to the store. */
  async settle(): Promise<void> {
    while (this.#background.size) await Promise.all([...this.#background]);
  }

  async close(): Promise<void> {
    await this.settle();
    await this.#local?.close();
    await this.store.close();
    await this.remote.close();
  }
}

/** Units kept in memory, least recently used dropped first. */
export class MemoryChunkStore implements ChunkStore {
  readonly unit: number;
  readonly #capacity: number;
  readonly #units = new Map<number, Uint8Array>();
  #bytes = 0;

  constructor(unit: number, capacityBytes: number) {
    this.unit = unit;
    this.#capacity = capacityBytes;
  }

  has(i: number): boolean {
    return this.#units.has(i);
  }

  async readHeld(buf: Uint8Array, offset: number): Promise<boolean> {
    return this.readHeldSync(buf, offset);
  }

  readHeldSync(buf: Uint8Array, offset: number): boolean {
    let pos = 0;
    while (pos < buf.length) {
      const abs = offset + pos;
      const u = Math.floor(abs / this.unit);
      const data = this.#units.get(u);
      if (!data) return false;
      this.#units.delete(u);
      this.#units.set(u, data);
      const from = abs - u * this.unit;
      const n = Math.min(buf.length - pos, data.length - from);
      if (n <= 0) return false;
      buf.set(data.subarray(from, from + n), pos);
      pos += n;
    }
    return true;
  }

  forget(i: number): void {
    const old = this.#units.get(i);
    if (old) this.#bytes -= old.length;
    this.#units.delete(i);
  }

  async put(i: number, data: Uint8Array): Promise<void> {
    if (this.#capacity < data.length) return;
    const old = this.#units.get(i);
    if (old) this.#bytes -= old.length;
    this.#units.delete(i);
    this.#units.set(i, data);
    this.#bytes += data.length;
    for (const [k, v] of this.#units) {
      if (this.#bytes <= this.#capacity) break;
      this.#units.delete(k);
      this.#bytes -= v.length;
    }
  }

  async close(): Promise<void> {
    this.#units.clear();
    this.#bytes = 0;
  }
}
