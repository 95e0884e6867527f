/**
 * One blob of the on-disk cache (see cache.ts for the pool and the crash-safety rule): a
 * ChunkStore over a sparse data file holding the blob's outer bytes at their own offsets,
 * with its metadata (cache-meta.ts) in memory and published beside it.
 *
 * Per unit: held (bitmap), checked in this process (a unit loaded from a previous run has its
 * CRC checked on first read), a generation (bumped when it is stored or forgotten), and at
 * most one writer at a time. Emptying the entry (eviction, a failed digest) raises a barrier
 * that waits for reads in progress, so no reader sees bytes of the old generation.
 */
import { createHash } from 'node:crypto';
import { open, rename, type FileHandle } from 'node:fs/promises';
import { crc32c } from '../io/crc.ts';
import { ClosedError, InvalidArgumentError } from '../io/errors.ts';
import { SyncReadGate, preadFull } from '../io/fd-io.ts';
import { writeFull } from '../io/sink.ts';
import type { BlobCache } from './cache.ts';
import { encodeMeta, FLAG_COMPLETE, heldBytes, type CacheMeta } from './cache-meta.ts';
import type { DiskChunkStore } from './lazy-source.ts';
import { isDigest } from './reference.ts';

/** What the pool knows of a blob it holds, open or not; shared with the blob's open entry. */
export interface HeldBlob {
  key: string;
  /** Path of the blob's files without the `.data` / `.meta` suffix. */
  base: string;
  /** The blob's size (its entry's data file size). */
  size: number;
  bytes: number;
  lastUse: number;
  open: CacheEntry | undefined;
}

/** LRU clock: wall time at startup (or later, past every stored value), then +1 per use. */
let useClock = Date.now();

/** The next value of the LRU clock (a use). */
export function tickClock(): number {
  return ++useClock;
}

/** Moves the clock past a value read from a metadata file. */
export function clockPast(lastUse: number): void {
  useClock = Math.max(useClock, lastUse);
}

/** The clock's current value. */
export function clockNow(): number {
  return useClock;
}

/**
 * Unit-sized buffers for checking units against their CRCs, by unit size, shared by every
 * entry: opening an image of many layers checks many units, and a fresh buffer per check made
 * the memory of a start grow with them.
 */
const verifyBuffers = new Map<number, Buffer[]>();
const VERIFY_BUFFERS_KEPT = 4;

/** One cached blob: a ChunkStore over its sparse data file. */
export class CacheEntry implements DiskChunkStore {
  readonly cache: BlobCache;
  readonly size: number;
  readonly unit: number;
  readonly units: number;
  refs = 1;
  readonly #known: HeldBlob;
  #fh: FileHandle | undefined;
  readonly #meta: CacheMeta;
  /** Units whose CRC was checked (or that were written) in this process. */
  readonly #verified: Uint8Array;
  #held = 0;
  #gen = 0;
  /** Per unit: bumped whenever the unit is stored or forgotten (see generation()). */
  readonly #unitGen: Uint32Array;
  /** Units being written: a second writer of the same unit skips, so the bytes are one writer's. */
  readonly #writing = new Set<number>();
  #ops = 0;
  #drained: (() => void) | undefined;
  #barrier: Promise<void> | undefined;
  #dirty = false;
  #timer: NodeJS.Timeout | undefined;
  #publishing: Promise<void> = Promise.resolve();
  #checking: Promise<boolean> | undefined;
  readonly #gate = new SyncReadGate();

  constructor(cache: BlobCache, known: HeldBlob, fh: FileHandle, size: number, meta: CacheMeta) {
    this.cache = cache;
    this.#known = known;
    this.#fh = fh;
    this.size = size;
    this.unit = meta.unit;
    this.units = meta.crcs.length;
    this.#meta = meta;
    this.#verified = new Uint8Array(this.units);
    this.#unitGen = new Uint32Array(this.units);
    for (let i = 0; i < this.units; i++) if (this.has(i)) this.#held++;
  }

  /** This store keeps its units on disk and can check the whole blob (see ChunkStore.disk). */
  get disk(): DiskChunkStore {
    return this;
  }

  get key(): string {
    return this.#known.key;
  }

  get dataPath(): string {
    return this.#known.base + '.data';
  }

  /** True once every unit is held and the whole blob matched its digest. */
  get complete(): boolean {
    return (this.#meta.flags & FLAG_COMPLETE) !== 0;
  }

  /** Units held. */
  get heldUnits(): number {
    return this.#held;
  }

  has(i: number): boolean {
    return (this.#meta.bitmap[i >> 3]! & (1 << (i & 7))) !== 0;
  }

  #set(i: number, on: boolean): void {
    if (on) this.#meta.bitmap[i >> 3]! |= 1 << (i & 7);
    else this.#meta.bitmap[i >> 3]! &= ~(1 << (i & 7));
  }

  #unitLength(i: number): number {
    return Math.min(this.unit, this.size - i * this.unit);
  }

  async #enter(): Promise<FileHandle> {
    while (this.#barrier) await this.#barrier;
    const fh = this.#fh;
    if (!fh) throw new ClosedError(this.dataPath);
    this.#ops++;
    return fh;
  }

  #leave(): void {
    if (--this.#ops === 0) this.#drained?.();
  }

  /**
   * Synchronous readHeld for the page-cache fast path: undefined while eviction runs, when a
   * unit still needs its CRC checked, or when the read would be slow (see SyncReadGate).
   */
  readHeldSync(buf: Uint8Array, offset: number): boolean | undefined {
    const fh = this.#fh;
    if (this.#barrier || !fh) return undefined;
    const first = Math.floor(offset / this.unit);
    const last = Math.floor((offset + buf.length - 1) / this.unit);
    for (let u = first; u <= last; u++) {
      if (!this.has(u)) return false;
      if (!this.#verified[u]) return undefined;
    }
    const n = this.#gate.read(fh.fd, buf, offset);
    if (n === undefined) return undefined;
    if (n !== buf.length) return false;
    this.#known.lastUse = tickClock();
    return true;
  }

  async readHeld(buf: Uint8Array, offset: number): Promise<boolean> {
    // Hot path: no eviction running, so no await before the read itself.
    const fh = this.#barrier || !this.#fh ? await this.#enter() : (this.#ops++, this.#fh);
    try {
      const first = Math.floor(offset / this.unit);
      const last = Math.floor((offset + buf.length - 1) / this.unit);
      for (let u = first; u <= last; u++) {
        if (!this.has(u)) return false;
        if (!this.#verified[u] && !(await this.#verify(fh, u))) return false;
      }
      if ((await preadFull(fh.fd, buf, offset)) !== buf.length) return false;
      this.#known.lastUse = tickClock();
      return true;
    } finally {
      this.#leave();
    }
  }

  /** Checks a unit loaded from a previous run against its stored CRC; drops it on mismatch. */
  async #verify(fh: FileHandle, u: number): Promise<boolean> {
    const len = this.#unitLength(u);
    const free = verifyBuffers.get(this.unit) ?? verifyBuffers.set(this.unit, []).get(this.unit)!;
    const whole = free.pop() ?? Buffer.allocUnsafe(this.unit);
    try {
      const b = whole.subarray(0, len);
      if ((await preadFull(fh.fd, b, u * this.unit)) === len && crc32c(b) === this.#meta.crcs[u]) {
        this.#verified[u] = 1;
        return true;
      }
    } finally {
      if (free.length < VERIFY_BUFFERS_KEPT) free.push(whole);
    }
    this.forget(u);
    return false;
  }

  /** Changes whenever unit `i`'s held bytes may have changed (stored, forgotten, entry emptied). */
  generation(i: number): number {
    return this.#gen * 2 ** 32 + this.#unitGen[i]!;
  }

  /** Drops unit `u` from the held set (corrupt on disk, or its bytes proved wrong upstream). */
  forget(u: number): void {
    if (!this.has(u)) return;
    this.#unitGen[u]!++;
    this.#set(u, false);
    this.#verified[u] = 0;
    this.#held--;
    this.#meta.flags &= ~FLAG_COMPLETE;
    this.cache._account(this.#known, -this.#unitLength(u));
    this.#schedulePublish();
  }

  async put(i: number, data: Uint8Array): Promise<boolean> {
    if (data.length !== this.#unitLength(i)) throw new InvalidArgumentError(`${this.dataPath}: unit ${i} must be ${this.#unitLength(i)} bytes, got ${data.length}`);
    const fh = await this.#enter();
    let added = false;
    try {
      if (this.has(i) || this.#writing.has(i)) return false;
      this.#writing.add(i);
      const gen = this.#gen;
      const crc = crc32c(data as Buffer);
      try {
        await writeFull(fh, data, i * this.unit);
      } finally {
        this.#writing.delete(i);
      }
      if (gen !== this.#gen || this.has(i)) return false;
      this.#unitGen[i]!++;
      this.#meta.crcs[i] = crc;
      this.#verified[i] = 1;
      this.#set(i, true);
      this.#held++;
      this.#known.lastUse = tickClock();
      added = true;
      this.#schedulePublish();
    } finally {
      this.#leave();
    }
    if (added) {
      this.cache._account(this.#known, data.length);
      if (this.#held === this.units) void this.checkComplete().catch(() => {});
    }
    return added;
  }

  /**
   * When every unit is held, hashes the data file and compares it with the digest: a
   * match marks the entry complete; a mismatch empties it. Resolves `complete`.
   */
  checkComplete(): Promise<boolean> {
    if (this.complete) return Promise.resolve(true);
    this.#checking ??= this.#checkComplete().finally(() => (this.#checking = undefined));
    return this.#checking;
  }

  async #checkComplete(): Promise<boolean> {
    if (this.#held !== this.units) return false;
    const [alg, hex] = this.key.split(':');
    if (!isDigest(this.key) || alg !== 'sha256') return false;
    const gen = this.#gen;
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(1 << 20);
    const fh = await this.#enter();
    try {
      for (let pos = 0; pos < this.size; ) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, this.size - pos), pos);
        if (bytesRead === 0) break;
        hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
    } finally {
      this.#leave();
    }
    if (gen !== this.#gen) return false;
    if (hash.digest('hex') !== hex) {
      await this.clear();
      return false;
    }
    this.#meta.flags |= FLAG_COMPLETE;
    this.#verified.fill(1);
    await this.publish(true);
    return true;
  }

  /** The metadata changed without a unit being stored: publish it with the next batch. */
  markDirty(): void {
    this.#schedulePublish();
  }

  #schedulePublish(): void {
    this.#dirty = true;
    if (this.#timer || !this.#fh) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.publish().catch(() => {});
    }, this.cache.publishDelayMs);
    this.#timer.unref();
  }

  /**
   * Makes held units durable and then records them: snapshot the metadata, sync the data
   * file, write the snapshot aside, rename it over the old one.
   */
  publish(force = false): Promise<void> {
    const run = async () => {
      const fh = this.#fh;
      if (!fh || (!this.#dirty && !force)) return;
      this.#dirty = false;
      this.#meta.lastUse = this.#known.lastUse;
      const snapshot = encodeMeta(this.#meta);
      await fh.datasync();
      const file = this.#known.base + '.meta';
      const tmp = `${file}.tmp`;
      const mh = await open(tmp, 'w');
      try {
        await writeFull(mh, snapshot, 0);
        await mh.sync();
      } finally {
        await mh.close();
      }
      await rename(tmp, file);
    };
    const p = this.#publishing.then(run, run);
    this.#publishing = p.catch(() => {});
    return p;
  }

  /** Empties the entry (eviction, failed digest): no reader sees bytes of the old generation. */
  async clear(): Promise<void> {
    while (this.#barrier) await this.#barrier;
    this.#gen++;
    const freed = heldBytes(this.#meta.bitmap, this.size, this.unit);
    this.#meta.bitmap.fill(0);
    this.#meta.flags = 0;
    this.#verified.fill(0);
    this.#held = 0;
    this.cache._account(this.#known, -freed);
    this.#barrier = (async () => {
      if (this.#ops > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
      this.#drained = undefined;
      const fh = this.#fh;
      if (fh) {
        await fh.truncate(0);
        await fh.truncate(this.size);
      }
    })();
    try {
      await this.#barrier;
    } finally {
      this.#barrier = undefined;
    }
    await this.publish(true);
  }

  async close(): Promise<void> {
    if (--this.refs > 0) return;
    await this.shutdown();
  }

  /** Publishes and closes regardless of other users (cache shutdown). */
  async shutdown(): Promise<void> {
    if (!this.#fh) return;
    // Detach first: a new user of this blob opens a fresh entry instead of this closing one.
    this.cache._closed(this.#known, this);
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#barrier) await this.#barrier;
    try {
      await this.publish();
    } finally {
      // Closed even when publishing fails (a full disk): the entry is gone either way.
      const fh = this.#fh;
      this.#fh = undefined;
      await fh?.close();
    }
  }
}
