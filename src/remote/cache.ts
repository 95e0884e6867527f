/**
 * The on-disk blob cache: a pool of cached blobs (cache-entry.ts), each one sparse data file
 * (the outer, still-compressed bytes) plus a metadata file (cache-meta.ts) holding which
 * refill units are present and a CRC32C per unit.
 *
 * Crash safety is write-then-publish: unit bytes are written, the data file is synced, and
 * only then does a new metadata file (written aside and renamed) claim them. After a crash
 * the metadata names only units whose bytes were durable, and each unit's CRC is checked
 * the first time it is read in a process, so torn or rotted data is refetched, never served.
 * A blob whose every unit is present is sha256-checked against its digest before it is
 * marked complete; a mismatch drops it.
 *
 * The pool bounds the bytes held: past capacity it evicts whole blobs, least recently used
 * first, down to 90 %. `obd cache` (cache-admin.ts) lists, checks and trims a pool.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ClosedError, InvalidArgumentError } from '../io/errors.ts';
import { wrapFsError } from '../io/file.ts';
import { CacheEntry, clockNow, clockPast, tickClock, type HeldBlob } from './cache-entry.ts';
import { emptyMeta, heldBytes, readMeta } from './cache-meta.ts';
import { DEFAULT_CACHE_SIZE, DEFAULT_PUBLISH_DELAY_MS, DEFAULT_UNIT } from './defaults.ts';
import { checkUnit } from './lazy-source.ts';
import { isDigest } from './reference.ts';

export { CacheEntry } from './cache-entry.ts';
export { DEFAULT_CACHE_SIZE } from './defaults.ts';

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

export class BlobCache {
  readonly dir: string;
  readonly capacity: number;
  readonly unit: number;
  readonly publishDelayMs: number;
  readonly #tidy: boolean;
  readonly #known = new Map<string, HeldBlob>();
  readonly #opening = new Map<string, Promise<CacheEntry>>();
  #usage = 0;
  #evicting: Promise<void> | undefined;
  #again = false;
  #closed = false;

  private constructor(opts: BlobCacheOptions) {
    this.dir = path.resolve(opts.dir);
    this.capacity = opts.capacity ?? DEFAULT_CACHE_SIZE;
    this.unit = checkUnit(opts.unit ?? DEFAULT_UNIT);
    this.publishDelayMs = opts.publishDelayMs ?? DEFAULT_PUBLISH_DELAY_MS;
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
        clockPast(meta.lastUse);
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
      known = { key, base, size, bytes: 0, lastUse: tickClock(), open: undefined };
      this.#known.set(key, known);
    }
    const entry = new CacheEntry(this, known, fh, size, meta ?? emptyMeta(size, this.unit, clockNow(), key));
    known.open = entry;
    // A new entry holds no unit yet, so its metadata need not be durable before use: it is
    // published with the first units (or at close). Syncing it here cost a layer's open
    // ~1 ms of fsyncs, one layer after another; a crash before then leaves only an empty
    // data file, which the next open tidies away.
    if (!meta) entry.markDirty();
    return entry;
  }

  /** Accounting hook: an entry gained or lost `delta` bytes. */
  _account(known: HeldBlob, delta: number): void {
    known.bytes += delta;
    this.#usage += delta;
    if (delta > 0 && this.#usage > this.capacity) this.#kick(known);
  }

  /** Starts an eviction pass, or asks the running one to go again when it is done. */
  #kick(writer: HeldBlob): void {
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
  async #evict(writer: HeldBlob): Promise<void> {
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
  _closed(known: HeldBlob, entry: CacheEntry): void {
    if (known.open === entry) known.open = undefined;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.settle();
    for (const k of this.#known.values()) if (k.open) await k.open.shutdown();
  }
}

async function removeFiles(base: string): Promise<void> {
  await rm(base + '.data', { force: true });
  await rm(base + '.meta', { force: true });
}
