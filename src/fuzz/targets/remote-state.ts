/**
 * State the remote layer keeps on disk: prefetch traces (decoded, then replayed against
 * two layers as `obd serve` does in the background) and blob-cache entries (a metadata file
 * and a sparse data file, reopened and read through a lazy source whose upstream holds the
 * true bytes — the cache must never serve anything else).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { rawCrc32c } from '../../io/crc.ts';
import { MemorySource } from '../../io/memory.ts';
import { BlobCache } from '../../remote/cache.ts';
import { LazySource } from '../../remote/lazy-source.ts';
import { sha256Digest } from '../../remote/manifest.ts';
import { decodeTrace, encodeTrace, replayTrace, type TraceRecord } from '../../remote/trace.ts';
import type { Field } from '../mutate.ts';
import { readSource } from '../readback.ts';
import { content, MiB } from '../seeds.ts';
import type { Seed, Target } from '../target.ts';

const TRACE_HEADER = 24;
const TRACE_RECORD = 24;

function traceFields(b: Uint8Array): Field[] {
  const out: Field[] = [
    { at: 0, width: 4, name: 'magic' },
    { at: 8, width: 8, name: 'data_size' },
    { at: 16, width: 4, name: 'crc' },
  ];
  for (let at = TRACE_HEADER; at + TRACE_RECORD <= b.length && out.length < 40; at += TRACE_RECORD) {
    out.push({ at, width: 1, name: 'op' }, { at: at + 4, width: 4, name: 'layer' }, { at: at + 8, width: 8, name: 'count' }, { at: at + 16, width: 8, name: 'offset' });
  }
  return out;
}

function resealTrace(b: Uint8Array): Uint8Array {
  if (b.length < TRACE_HEADER) return b;
  let crc = 0;
  for (let at = TRACE_HEADER; at + TRACE_RECORD <= b.length; at += TRACE_RECORD) crc = rawCrc32c(b.subarray(at, at + TRACE_RECORD), crc);
  new DataView(b.buffer, b.byteOffset, b.length).setUint32(16, crc, true);
  return b;
}

const LAYERS = [new MemorySource(content('trace-l0', 4 * MiB), 'l0'), new MemorySource(content('trace-l1', MiB), 'l1')];

export const traceTarget: Target = {
  name: 'trace',
  async seeds() {
    const records: TraceRecord[] = [
      { op: 'R', layer: 0, offset: 0, count: 4096 },
      { op: 'R', layer: 1, offset: 512 * 1024, count: 300 * 1024 },
      { op: 'W', layer: 0, offset: 8192, count: 512 },
      { op: 'R', layer: 0, offset: 3 * MiB, count: 2 * MiB },
      { op: 'R', layer: 1, offset: MiB - 512, count: 512 },
    ];
    const one = encodeTrace(records);
    const empty = encodeTrace([]);
    return [one, empty].map((b, i) => ({ name: i ? 'empty.trace' : 'five.trace', bytes: b, fields: traceFields(b), guarded: false, reseal: resealTrace }));
  },
  async run(seed, input) {
    const records = decodeTrace(input, seed.name);
    const r = await replayTrace(records, LAYERS, { concurrency: 4 });
    return { output: Buffer.from(JSON.stringify({ records, r })) };
  },
};

const UNIT = 64 * 1024;
const BLOB = content('cache-blob', 5 * UNIT + 1234);
const DIGEST = sha256Digest(BLOB);

function metaFields(b: Uint8Array): Field[] {
  const out: Field[] = [
    { at: 8, width: 4, name: 'version' },
    { at: 12, width: 4, name: 'unit' },
    { at: 16, width: 8, name: 'size' },
    { at: 24, width: 4, name: 'flags' },
    { at: 28, width: 4, name: 'crc' },
    { at: 32, width: 8, name: 'last_use' },
    { at: 40, width: 1, name: 'bitmap' },
  ];
  for (let i = 0; i < 6; i++) out.push({ at: 41 + 4 * i, width: 4, name: `unit${i}.crc` });
  return out.filter((f) => f.at + f.width <= b.length);
}

/** The metadata checksum: CRC32C of the file with its own field zeroed. */
function resealMeta(b: Uint8Array): Uint8Array {
  if (b.length < 40) return b;
  const buf = Buffer.from(b.buffer, b.byteOffset, b.length);
  buf.writeUInt32LE(0, 28);
  buf.writeUInt32LE(crc32c(buf), 28);
  return b;
}

export const cacheTarget: Target = {
  name: 'cache',
  async seeds(ctx) {
    const out: Seed[] = [];
    for (const [label, units] of [['partial', [0, 1, 3, 5]], ['complete', [0, 1, 2, 3, 4, 5]]] as const) {
      const dir = path.join(ctx.tmp, `cache-seed-${label}`);
      await rm(dir, { recursive: true, force: true });
      const cache = await BlobCache.open({ dir, unit: UNIT, publishDelayMs: 0 });
      const entry = await cache.entry(DIGEST, BLOB.length);
      for (const u of units) await entry.put(u, BLOB.subarray(u * UNIT, Math.min(BLOB.length, (u + 1) * UNIT)));
      await entry.checkComplete();
      await entry.close();
      await cache.close();
      const base = path.join(dir, 'sha256', DIGEST.slice(7));
      const meta = await readFile(`${base}.meta`);
      const data = await readFile(`${base}.data`);
      await rm(dir, { recursive: true, force: true });
      out.push({ name: `${label}.meta`, bytes: meta, fields: metaFields(meta), guarded: true, reseal: resealMeta, meta: { role: 'meta', other: data } });
      out.push({ name: `${label}.data`, bytes: data, fields: [], guarded: true, meta: { role: 'data', other: meta } });
    }
    return out;
  },
  async run(seed, input, ctx) {
    const dir = path.join(ctx.tmp, 'cache');
    const base = path.join(dir, 'sha256', DIGEST.slice(7));
    await rm(dir, { recursive: true, force: true });
    await mkdir(path.dirname(base), { recursive: true });
    const isMeta = seed.meta!.role === 'meta';
    await writeFile(`${base}.meta`, isMeta ? input : (seed.meta!.other as Uint8Array));
    await writeFile(`${base}.data`, isMeta ? (seed.meta!.other as Uint8Array) : input);
    const cache = await BlobCache.open({ dir, unit: UNIT, publishDelayMs: 0 });
    try {
      const entry = await cache.entry(DIGEST, BLOB.length);
      const lazy = new LazySource(new MemorySource(BLOB, 'upstream'), { store: entry });
      try {
        // Twice: the second read is served from what the first left in the cache.
        const first = await readSource(lazy, ctx.readCap);
        return first.failure === undefined ? await readSource(lazy, ctx.readCap) : first;
      } finally {
        await lazy.close();
      }
    } finally {
      await cache.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
