/**
 * `obd cache ls|verify|gc` on a cache directory: what is held, a check of every held unit
 * (its CRC, and the blob's sha256 once every unit is held; bad units are dropped so they are
 * fetched again), and eviction by size and age. A server may use the directory meanwhile: its
 * files in the making are left alone, metadata is replaced by rename, and every process checks
 * a unit (CRC, or the verity tree) before its first use, so nothing here makes it serve a
 * wrong byte; at worst a unit is fetched again.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { BlobCache } from './cache.ts';
import { peekUnit } from './cache-meta.ts';

export interface CacheListing {
  dir: string;
  unit: number;
  usage: number;
  blobs: Array<{ key: string; size: number; bytes: number; lastUse: string }>;
}

export interface CacheVerifyReport {
  dir: string;
  ok: boolean;
  blobs: Array<{ key: string; units: number; held: number; dropped: number; complete: boolean }>;
}

export interface CacheGcOptions {
  /** Keep at most this many bytes (least recently used blobs go first). */
  maxBytes?: number;
  /** Drop blobs not used for this many milliseconds. */
  maxAgeMs?: number;
}

/** The refill unit the cache's entries were made with (opening with another would discard them). */
async function unitOf(dir: string): Promise<number | undefined> {
  for (const sub of ['sha256', 'sha512', 'key']) {
    const names = await readdir(path.join(dir, sub)).catch(() => [] as string[]);
    for (const n of names.filter((x) => x.endsWith('.meta'))) {
      const b = await readFile(path.join(dir, sub, n)).catch(() => undefined);
      const u = b && peekUnit(b);
      if (u) return u;
    }
  }
  return undefined;
}

async function withCache<T>(dir: string, unit: number | undefined, fn: (c: BlobCache) => Promise<T>): Promise<T> {
  const cache = await BlobCache.open({ dir, unit: unit ?? (await unitOf(dir)), capacity: Number.MAX_SAFE_INTEGER, tidy: false });
  try {
    return await fn(cache);
  } finally {
    await cache.close();
  }
}

export function listCache(dir: string, unit?: number): Promise<CacheListing> {
  return withCache(dir, unit, async (c) => ({
    dir: c.dir,
    unit: c.unit,
    usage: c.usage,
    blobs: c.held().map((b) => ({ key: b.key, size: b.size, bytes: b.bytes, lastUse: new Date(b.lastUse).toISOString() })),
  }));
}

export function verifyCache(dir: string, unit?: number, onProgress?: (done: number, total: number) => void): Promise<CacheVerifyReport> {
  return withCache(dir, unit, async (c) => {
    const report: CacheVerifyReport = { dir: c.dir, ok: true, blobs: [] };
    const held = c.held();
    const total = held.reduce((a, b) => a + b.bytes, 0);
    let done = 0;
    for (const b of held) {
      const entry = await c.entry(b.key, b.size);
      try {
        const before = entry.heldUnits;
        const buf = new Uint8Array(entry.unit);
        for (let u = 0; u < entry.units; u++) {
          if (!entry.has(u)) continue;
          const len = Math.min(entry.unit, entry.size - u * entry.unit);
          await entry.readHeld(buf.subarray(0, len), u * entry.unit);
          done += len;
          onProgress?.(done, total);
        }
        const complete = entry.heldUnits === entry.units && (await entry.checkComplete());
        const dropped = before - entry.heldUnits;
        report.blobs.push({ key: b.key, units: entry.units, held: entry.heldUnits, dropped, complete });
        if (dropped > 0) report.ok = false;
      } finally {
        await entry.close();
      }
    }
    return report;
  });
}

export function gcCache(dir: string, opts: CacheGcOptions, unit?: number): Promise<{ dir: string; dropped: string[]; usage: number }> {
  return withCache(dir, unit, async (c) => {
    const dropped: string[] = [];
    const now = Date.now();
    for (const b of c.held()) {
      const old = opts.maxAgeMs !== undefined && now - b.lastUse > opts.maxAgeMs;
      const over = opts.maxBytes !== undefined && c.usage > opts.maxBytes;
      if (!old && !over) continue;
      await c.drop(b.key);
      dropped.push(b.key);
    }
    return { dir: c.dir, dropped, usage: c.usage };
  });
}
