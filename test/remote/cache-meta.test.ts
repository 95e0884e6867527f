/**
 * Found by the fuzzing harness (npm run fuzz): a cache metadata file with a valid checksum
 * but unknown flag bits (2^31) made the next publish throw a RangeError and leak the data
 * file's descriptor. Such a file must be dropped like a damaged one: reads stay exact and
 * what is fetched again is recorded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { MemorySource } from '../../src/io/memory.ts';
import { BlobCache } from '../../src/remote/cache.ts';
import { LazySource } from '../../src/remote/lazy-source.ts';
import { blob } from './helpers/blobs.ts';
import { tempDir } from '../helpers/temp.ts';

const UNIT = 64 * 1024;

for (const [what, patch] of [
  ['flags 2^31', (b: Buffer) => b.writeUInt32LE(2 ** 31 + 1, 24)],
  ['a use clock past 2^53', (b: Buffer) => b.writeBigUInt64LE(2n ** 64n - 1n, 32)],
] as const) {
  test(`a cache entry whose metadata has ${what} is dropped and refetched, and closes cleanly`, async (t) => {
    const dir = await tempDir(t);
    const data = blob(`meta-${what}`, 3 * UNIT + 100);
    const cache = await BlobCache.open({ dir, unit: UNIT, publishDelayMs: 0 });
    const entry = await cache.entry(data.digest, data.bytes.length);
    for (let u = 0; u < 4; u++) await entry.put(u, data.bytes.subarray(u * UNIT, Math.min(data.bytes.length, (u + 1) * UNIT)));
    await entry.close();
    await cache.close();

    const meta = path.join(dir, 'sha256', `${data.digest.slice(7)}.meta`);
    const b = await readFile(meta);
    patch(b);
    // Unit 0's stored CRC is wrong too, so reopening forgets it and publishes new metadata.
    b.writeUInt32LE((b.readUInt32LE(41) ^ 1) >>> 0, 41);
    b.writeUInt32LE(0, 28);
    b.writeUInt32LE(crc32c(b), 28);
    await writeFile(meta, b);

    const again = await BlobCache.open({ dir, unit: UNIT, publishDelayMs: 0 });
    const upstream = new MemorySource(data.bytes, 'upstream');
    const lazy = new LazySource(upstream, { store: await again.entry(data.digest, data.bytes.length) });
    const buf = Buffer.alloc(data.bytes.length);
    assert.equal(await lazy.read(buf, 0), buf.length);
    assert.ok(buf.equals(data.bytes));
    await lazy.close();
    await again.close();

    // What the second run fetched was published: a third run needs nothing from upstream.
    const third = await BlobCache.open({ dir, unit: UNIT, publishDelayMs: 0 });
    let fetched = 0;
    const counting = new MemorySource(data.bytes, 'upstream');
    const read = counting.read.bind(counting);
    counting.read = (buf, offset) => (fetched++, read(buf, offset));
    counting.tryReadSync = () => undefined;
    const warm = new LazySource(counting, { store: await third.entry(data.digest, data.bytes.length) });
    assert.equal(await warm.read(buf.fill(0), 0), buf.length);
    assert.ok(buf.equals(data.bytes));
    assert.equal(fetched, 0, 'the refetched units were recorded');
    await warm.close();
    await third.close();
  });
}
