/**
 * The on-disk blob cache: one sparse data file per blob (the outer, still-compressed bytes)
 * plus a metadata file holding which refill units are present and a CRC32C per unit.
 *
 * Crash safety is write-then-publish: unit bytes are written, the data file is synced, and
 * only then does a new metadata file (written aside and renamed) claim them. After a crash
 * the metadata names only units whose bytes were durable, and each unit's CRC is checked
 * the first time it is read in a process, so torn or rotted data is refetched, never served.
 * A blob whose every unit is present is sha256-checked against its digest before it is
 * marked complete; a mismatch drops it.
 *
 * Capacity is enforced by evicting whole blobs, least recently used first, down to 90 %.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { crc32c } from '../io/crc.ts';
import { ClosedError, InvalidArgumentError } from '../io/errors.ts';
import { wrapFsError } from '../io/file.ts';
import { SyncReadGate, preadFull } from '../io/fd-io.ts';
import { writeFull } from '../io/sink.ts';
import { checkUnit, DEFAULT_UNIT, type ChunkStore } from './lazy-source.ts';
import { isDigest } from './reference.ts';
import { DEFAULT_CACHE_SIZE } from './defaults.ts';

export { DEFAULT_CACHE_SIZE };

/**
 * Unit-sized buffers for checking units against their CRCs, by unit size, shared by every
 * entry: opening an image of many layers checks many units, and a fresh buffer per check made
 * the memory of a start grow with them.
 */
const verifyBuffers = new Map<number, Buffer[]>();
const VERIFY_BUFFERS_KEPT = 4;

const MAGIC = Buffer.from('OBDCACHE');
const VERSION = 1;
const HEADER = 40;
const FLAG_COMPLETE = 1;
/** LRU clock: wall time at startup (or later, past every stored value), then +1 per use. */
let useClock = Date.now();

export interface BlobCacheOptions {
  dir: string;
  /** Bytes of blob data the cache may hold (default 4 GiB). */
  capacity?: number;
  /** Refill unit (default 256 KiB); entries made with another unit are discarded. */
  unit?: number;
  /** How long new units may wait before their metadata is published (default 1000 ms). */
  publishDelayMs?: number;
  /**
   * Remove leftovers (temp metadata, data files without metadata) when opening (default true);
   * false for a second process looking at a directory a server may be writing (`obd cache`).
   */
  tidy?: boolean;
}

interface Known {
  key: string;
  base: string;
  /** The blob's size (its entry's data file size). */
  size: number;
  bytes: number;
  lastUse: number;
  open: CacheEntry | undefined;
}

export class BlobCache {
  readonly dir: string;
  readonly capacity: number;
  readonly unit: number;
  readonly publishDelayMs: number;
  readonly #tidy: boolean;
  readonly #known = new Map<string, Known>();
  readonly #opening = new Map<string, Promise<CacheEntry>>();
  #usage = 0;
  #evicting: Promise<void> | undefined;
  #again = false;
  #closed = false;

  private constructor(opts: BlobCacheOptions) {
    this.dir = path.resolve(opts.dir);
    this.capacity = opts.capacity ?? DEFAULT_CACHE_SIZE;
    this.unit = checkUnit(opts.unit ?? DEFAULT_UNIT);
    this.publishDelayMs = opts.publishDelayMs ?? 1000;
    this.#tidy = opts.tidy ?? true;
  }

  /** Opens (creating) a cache directory and indexes the blobs already in it. */
  static async open(opts: BlobCacheOptions): Promise<BlobCache> {
    const cache = new BlobCache(opts);
    await cache.#scan();
    return cache;
  }

  /** Bytes of blob data held. */
  get usage(): number {
    return this.#usage;
  }

  /** The blobs held: key, size, bytes held, last use (LRU clock ≈ ms since the epoch), least recently used first. */
  held(): Array<{ key: string; size: number; bytes: number; lastUse: number }> {
    return [...this.#known.values()].sort((a, b) => a.lastUse - b.lastUse).map(({ key, size, bytes, lastUse }) => ({ key, size, bytes, lastUse }));
  }

  /** Keys (digests) of the blobs held, least recently used first. */
  keys(): string[] {
    return [...this.#known.values()].sort((a, b) => a.lastUse - b.lastUse).map((k) => k.key);
  }

  #base(key: string): string {
    if (isDigest(key)) {
      const [alg, hex] = key.split(':');
      return path.join(this.dir, alg!, hex!);
    }
    return path.join(this.dir, 'key', createHash('sha256').update(key).digest('hex'));
  }

  async #scan(): Promise<void> {
    for (const sub of ['sha256', 'sha512', 'key']) {
      const d = path.join(this.dir, sub);
      await mkdir(d, { recursive: true });
      const names = await readdir(d);
      const metas = new Set(names.filter((n) => n.endsWith('.meta')).map((n) => n.slice(0, -5)));
      for (const n of names) {
        if (this.#tidy && (n.includes('.meta.tmp') || (n.endsWith('.data') && !metas.has(n.slice(0, -5))))) await rm(path.join(d, n), { force: true });
      }
      for (const stem of metas) {
        const base = path.join(d, stem);
        const meta = await readMeta(base + '.meta');
        const key = sub === 'key' ? meta?.key : `${sub}:${stem}`;
        if (!meta || meta.unit !== this.unit || !key) {
          if (this.#tidy) await removeFiles(base);
          continue;
        }
        const bytes = heldBytes(meta.bitmap, meta.size, meta.unit);
        useClock = Math.max(useClock, meta.lastUse);
        this.#known.set(key, { key, base, size: meta.size, bytes, lastUse: meta.lastUse, open: undefined });
        this.#usage += bytes;
      }
    }
  }

  /** The entry for blob `key` of `size` bytes, opened (shared while open) or created. */
  entry(key: string, size: number): Promise<CacheEntry> {
    if (this.#closed) throw new ClosedError(this.dir);
    const k = this.#known.get(key);
    if (k?.open) {
      if (k.open.size !== size) throw new InvalidArgumentError(`${key}: cached with size ${k.open.size}, asked for ${size}`);
      k.open.refs++;
      return Promise.resolve(k.open);
    }
    const pending = this.#opening.get(key);
    if (pending)
      return pending.then((e) => {
        e.refs++;
        return e;
      });
    const p = this.#openEntry(key, size).finally(() => this.#opening.delete(key));
    this.#opening.set(key, p);
    return p;
  }

  async #openEntry(key: string, size: number): Promise<CacheEntry> {
    let known = this.#known.get(key);
    const base = known?.base ?? this.#base(key);
    const units = Math.ceil(size / this.unit);
    let meta = known ? await readMeta(base + '.meta') : undefined;
    if (meta && (meta.size !== size || meta.unit !== this.unit)) meta = undefined;
    let fh: FileHandle;
    try {
      const existing = meta ? await open(base + '.data', 'r+').catch(() => undefined) : undefined;
      if (!existing) meta = undefined;
      fh = existing ?? (await open(base + '.data', 'w+'));
      if (meta && (await fh.stat()).size !== size) {
        await fh.close();
        meta = undefined;
        fh = await open(base + '.data', 'w+');
      }
      if (!meta) await fh.truncate(size);
    } catch (e) {
      throw wrapFsError(base + '.data', e);
    }
    if (!meta && known) {
      this.#usage -= known.bytes;
      known.bytes = 0;
    }
    if (!known) {
      known = { key, base, size, bytes: 0, lastUse: ++useClock, open: undefined };
      this.#known.set(key, known);
    }
    const entry = new CacheEntry(this, known, fh, size, meta ?? { size, unit: this.unit, flags: 0, lastUse: useClock, bitmap: new Uint8Array(Math.ceil(units / 8)), crcs: new Uint32Array(units), key });
    known.open = entry;
    if (!meta) await entry.publish(true);
    return entry;
  }

  /** Accounting hook: an entry gained or lost `delta` bytes. */
  _account(known: Known, delta: number): void {
    known.bytes += delta;
    this.#usage += delta;
    if (delta > 0 && this.#usage > this.capacity) this.#kick(known);
  }

  /** Starts an eviction pass, or asks the running one to go again when it is done. */
  #kick(writer: Known): void {
    if (this.#evicting) {
      this.#again = true;
      return;
    }
    this.#evicting = (async () => {
      do {
        this.#again = false;
        await this.#evict(writer);
      } while (this.#again && this.#usage > this.capacity);
    })().finally(() => (this.#evicting = undefined));
  }

  /** Waits for an eviction pass in progress, if any. */
  async settle(): Promise<void> {
    while (this.#evicting) await this.#evicting;
  }

  /** Drops whole blobs, least recently used first, until usage is at most 90 % of capacity. */
  async #evict(writer: Known): Promise<void> {
    const target = Math.floor(this.capacity * 0.9);
    const order = [...this.#known.values()].sort((a, b) => (a === writer ? 1 : b === writer ? -1 : a.lastUse - b.lastUse));
    for (const k of order) {
      if (this.#usage <= target) break;
      if (k.bytes === 0) continue;
      await this.drop(k.key);
    }
  }

  /** Removes one blob from the cache (an open entry is emptied in place). */
  async drop(key: string): Promise<void> {
    const k = this.#known.get(key);
    if (!k) return;
    if (k.open) {
      await k.open.clear();
      return;
    }
    this.#known.delete(key);
    this.#usage -= k.bytes;
    await removeFiles(k.base);
  }

  /** Called by an entry whose last user closed it. */
  _closed(known: Known, entry: CacheEntry): void {
    if (known.open === entry) known.open = undefined;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.settle();
    for (const k of this.#known.values()) if (k.open) await k.open.shutdown();
  }
}

interface Meta {
  size: number;
  unit: number;
  flags: number;
  lastUse: number;
  bitmap: Uint8Array;
  crcs: Uint32Array;
  key: string | undefined;
}

async function readMeta(file: string): Promise<Meta | undefined> {
  let b: Buffer;
  try {
    b = await readFile(file);
  } catch {
    return undefined;
  }
  if (b.length < HEADER || !b.subarray(0, 8).equals(MAGIC) || b.readUInt32LE(8) !== VERSION) return undefined;
  const unit = b.readUInt32LE(12);
  const size = Number(b.readBigUInt64LE(16));
  const stored = b.readUInt32LE(28);
  b.writeUInt32LE(0, 28);
  if (crc32c(b) !== stored || unit === 0) return undefined;
  const units = Math.ceil(size / unit);
  const bm = Math.ceil(units / 8);
  const keyAt = HEADER + bm + units * 4;
  if (b.length < keyAt) return undefined;
  const flags = b.readUInt32LE(24);
  const lastUse = Number(b.readBigUInt64LE(32));
  // Unknown flag bits or a clock past 2^53 are not ours: such a file is dropped like a bad CRC
  // (kept, they broke the LRU clock and made the next publish throw).
  if ((flags & ~FLAG_COMPLETE) !== 0 || !Number.isSafeInteger(lastUse)) return undefined;
  const crcs = new Uint32Array(units);
  for (let i = 0; i < units; i++) crcs[i] = b.readUInt32LE(HEADER + bm + i * 4);
  return {
    size,
    unit,
    flags,
    lastUse,
    bitmap: new Uint8Array(b.subarray(HEADER, HEADER + bm)),
    crcs,
    key: b.length > keyAt ? b.subarray(keyAt).toString('utf8') : undefined,
  };
}

function encodeMeta(m: Meta): Buffer {
  const units = m.crcs.length;
  const key = m.key ? Buffer.from(m.key) : Buffer.alloc(0);
  const b = Buffer.alloc(HEADER + m.bitmap.length + units * 4 + key.length);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(VERSION, 8);
  b.writeUInt32LE(m.unit, 12);
  b.writeBigUInt64LE(BigInt(m.size), 16);
  b.writeUInt32LE(m.flags, 24);
  b.writeBigUInt64LE(BigInt(m.lastUse), 32);
  b.set(m.bitmap, HEADER);
  for (let i = 0; i < units; i++) b.writeUInt32LE(m.crcs[i]!, HEADER + m.bitmap.length + i * 4);
  key.copy(b, HEADER + m.bitmap.length + units * 4);
  b.writeUInt32LE(crc32c(b), 28);
  return b;
}

function heldBytes(bitmap: Uint8Array, size: number, unit: number): number {
  let n = 0;
  const units = Math.ceil(size / unit);
  for (let i = 0; i < units; i++) if (bitmap[i >> 3]! & (1 << (i & 7))) n += Math.min(unit, size - i * unit);
  return n;
}

async function removeFiles(base: string): Promise<void> {
  await rm(base + '.data', { force: true });
  await rm(base + '.meta', { force: true });
}

/** One cached blob: a ChunkStore over its sparse data file. */
export class CacheEntry implements ChunkStore {
  readonly cache: BlobCache;
  readonly size: number;
  readonly unit: number;
  readonly units: number;
  refs = 1;
  readonly #known: Known;
  #fh: FileHandle | undefined;
  readonly #meta: Meta;
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

  constructor(cache: BlobCache, known: Known, fh: FileHandle, size: number, meta: Meta) {
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
    this.#known.lastUse = ++useClock;
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
      this.#known.lastUse = ++useClock;
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

  /** Drops unit `u` from the held set (corrupt on disk, or its bytes proved wrong upstream). */
  /** Changes whenever unit `i`'s held bytes may have changed (stored, forgotten, entry emptied). */
  generation(i: number): number {
    return this.#gen * 2 ** 32 + this.#unitGen[i]!;
  }

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
      this.#known.lastUse = ++useClock;
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

/** The cache entry under `store` and the stores wrapping it, if there is one. */
export function cacheEntryOf(store: ChunkStore | undefined): CacheEntry | undefined {
  for (let s = store; s; s = s.inner) if (s instanceof CacheEntry) return s;
  return undefined;
}
