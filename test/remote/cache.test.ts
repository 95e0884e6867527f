/**
 * The lazy source and the disk cache: aligned refills, shared and bounded fetches,
 * persistence across restarts, crash safety (unpublished or damaged units are never
 * served), LRU eviction under a size bound, digest-checked completion and downloads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import type { ByteSource } from '../../src/io/types.ts';
import { BlobCache } from '../../src/remote/cache.ts';
import { LazySource, MemoryChunkStore, type ChunkStore } from '../../src/remote/lazy-source.ts';
import { downloadBlob, fillCache, RateLimiter, startBackgroundDownload } from '../../src/remote/download.ts';
import { OciLayout } from '../../src/remote/oci-layout.ts';
import { DigestMismatchError } from '../../src/remote/errors.ts';
import { blob } from './helpers/blobs.ts';
import { tempDir } from '../helpers/temp.ts';

/** A real in-memory source that counts reads and can hold them until released. */
class CountingSource implements ByteSource {
  readonly name = 'counting';
  readonly bytes: Buffer;
  reads = 0;
  active = 0;
  maxActive = 0;
  gate: Promise<void> | undefined;
  constructor(bytes: Buffer) {
    this.bytes = bytes;
  }
  get size(): number {
    return this.bytes.length;
  }
  async read(buf: Uint8Array, offset: number): Promise<number> {
    this.reads++;
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      await this.gate;
      await new Promise((r) => setImmediate(r));
      const n = Math.max(0, Math.min(buf.length, this.bytes.length - offset));
      buf.set(this.bytes.subarray(offset, offset + n));
      return n;
    } finally {
      this.active--;
    }
  }
  async close(): Promise<void> {}
}

const K = 1024;

/** `inner` with its writes held until `release()`: fetched units stay on their way to it. */
function holdingPuts(inner: ChunkStore): { store: ChunkStore; release: () => void } {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const store: ChunkStore = {
    unit: inner.unit,
    has: (i) => inner.has(i),
    readHeld: (b, o) => inner.readHeld(b, o),
    forget: (i) => inner.forget(i),
    put: async (i, d) => (await held, inner.put(i, d)),
    close: () => inner.close(),
  };
  return { store, release };
}

test('random reads through memory and disk stores equal the blob', async (t) => {
  const dir = await tempDir(t);
  const data = blob('lazy-prop', 3 * 256 * K + 12345).bytes;
  const cache = await BlobCache.open({ dir, capacity: 64 << 20, unit: 64 * K });
  const disk = new LazySource(new CountingSource(data), { store: await cache.entry('sha256:' + 'a'.repeat(64), data.length) });
  const mem = new LazySource(new CountingSource(data), { unit: 64 * K, memoryBytes: 256 * K });
  await fc.assert(
    fc.asyncProperty(fc.nat(data.length + 100), fc.integer({ min: 1, max: 300 * K }), async (off, len) => {
      for (const src of [disk, mem]) {
        const buf = Buffer.alloc(len);
        const n = await src.read(buf, off);
        const want = data.subarray(Math.min(off, data.length), Math.min(off + len, data.length));
        assert.equal(n, want.length);
        assert.ok(buf.subarray(0, n).equals(want));
      }
    }),
    { numRuns: 150 },
  );
  await disk.close();
  await mem.close();
  await cache.close();
});

test('concurrent reads of one unit share one fetch; neighbours coalesce; fetches are bounded', async () => {
  const data = blob('share', 4 << 20).bytes;
  const remote = new CountingSource(data);
  let release!: () => void;
  remote.gate = new Promise((r) => (release = r));
  const lazy = new LazySource(remote, { unit: 256 * K, maxInflight: 2 });
  const reads = Array.from({ length: 10 }, (_, i) => {
    const buf = Buffer.alloc(4096);
    return lazy.read(buf, 1000 + i * 512).then(() => buf);
  });
  await new Promise((r) => setTimeout(r, 20));
  release();
  const bufs = await Promise.all(reads);
  bufs.forEach((b, i) => assert.ok(b.equals(data.subarray(1000 + i * 512, 1000 + i * 512 + 4096))));
  assert.equal(remote.reads, 1, 'one request for ten readers of the same unit');

  remote.reads = 0;
  const big = Buffer.alloc(1 << 20);
  await lazy.read(big, 1 << 20);
  assert.equal(remote.reads, 1, 'four missing neighbours in one request');
  assert.ok(big.equals(data.subarray(1 << 20, 2 << 20)));

  remote.reads = 0;
  remote.maxActive = 0;
  await Promise.all(Array.from({ length: 8 }, (_, i) => lazy.read(Buffer.alloc(100), (2 << 20) + i * 256 * K)));
  assert.equal(remote.reads, 8);
  assert.ok(remote.maxActive <= 2, `at most 2 fetches at once, saw ${remote.maxActive}`);
  await lazy.close();
});

test('prefetchEnds fetches head and tail at once; reads of them then join those fetches', async () => {
  const data = blob('ends', 64 << 20).bytes;
  const remote = new CountingSource(data);
  let release!: () => void;
  remote.gate = new Promise((r) => (release = r));
  const lazy = new LazySource(remote, { unit: 256 * K });
  lazy.prefetchEnds();
  // Both ends are in flight before anything was read: one wave, not head then tail.
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(remote.active, 2, 'head and tail fetched together');
  const head = Buffer.alloc(512);
  const tail = Buffer.alloc(300 * K);
  const reads = Promise.all([lazy.read(head, 0), lazy.read(tail, data.length - tail.length)]);
  release();
  await reads;
  assert.ok(head.equals(data.subarray(0, 512)));
  assert.ok(tail.equals(data.subarray(data.length - tail.length)));
  // The tail fetched is 1/128 of the blob (512 KiB here), so the 300 KiB read needed no more.
  assert.equal(remote.reads, 2);
  assert.equal(lazy.stats.bytes, 256 * K + 512 * K);
  await lazy.close();
});

test('the cache persists across restarts and serves without the network', async (t) => {
  const dir = await tempDir(t);
  const b = blob('persist', 1 << 20);
  let cache = await BlobCache.open({ dir, unit: 64 * K });
  let remote = new CountingSource(b.bytes);
  let lazy = new LazySource(remote, { store: await cache.entry(b.digest, b.bytes.length) });
  await lazy.read(Buffer.alloc(200 * K), 100 * K);
  await lazy.close();
  await cache.close();

  cache = await BlobCache.open({ dir, unit: 64 * K });
  assert.equal(cache.usage, 4 * 64 * K, 'units 1..4 are held (100K..300K spans four 64K units)');
  remote = new CountingSource(b.bytes);
  lazy = new LazySource(remote, { store: await cache.entry(b.digest, b.bytes.length) });
  const buf = Buffer.alloc(150 * K);
  await lazy.read(buf, 70 * K);
  assert.equal(remote.reads, 0);
  assert.ok(buf.equals(b.bytes.subarray(70 * K, 220 * K)));
  await lazy.close();
  await cache.close();
});

test('crash safety: unpublished units are not trusted, damaged units are refetched', async (t) => {
  const dir = await tempDir(t);
  const b = blob('crash', 512 * K);
  // "Crash": units written, metadata never published (the process dies before the timer).
  const a = await BlobCache.open({ dir, unit: 64 * K, publishDelayMs: 60_000 });
  const lazyA = new LazySource(new CountingSource(b.bytes), { store: await a.entry(b.digest, b.bytes.length) });
  await lazyA.read(Buffer.alloc(128 * K), 0);
  await lazyA.settle();
  const afterCrash = await BlobCache.open({ dir, unit: 64 * K });
  const e = await afterCrash.entry(b.digest, b.bytes.length);
  assert.equal(e.heldUnits, 0, 'nothing claimed without a publish');
  await e.close();
  await afterCrash.close();
  await lazyA.close();
  await a.close();

  // Published, then the data file is damaged behind the cache's back (torn write, bit rot).
  const c1 = await BlobCache.open({ dir, unit: 64 * K });
  const e1 = await c1.entry(b.digest, b.bytes.length);
  const l1 = new LazySource(new CountingSource(b.bytes), { store: e1 });
  await fillCache(l1);
  assert.ok(e1.complete);
  const dataPath = e1.dataPath;
  await l1.close();
  await c1.close();
  const fh = await open(dataPath, 'r+');
  await fh.write(Buffer.alloc(100, 0xee), 0, 100, 3 * 64 * K + 10);
  await fh.close();

  const c2 = await BlobCache.open({ dir, unit: 64 * K });
  const remote = new CountingSource(b.bytes);
  const l2 = new LazySource(remote, { store: await c2.entry(b.digest, b.bytes.length) });
  const buf = Buffer.alloc(4096);
  await l2.read(buf, 3 * 64 * K);
  assert.ok(buf.equals(b.bytes.subarray(3 * 64 * K, 3 * 64 * K + 4096)), 'damaged unit not served');
  assert.equal(remote.reads, 1, 'damaged unit refetched');
  await l2.read(buf, 0);
  assert.equal(remote.reads, 1, 'intact unit served from disk');
  await l2.close();
  await c2.close();

  // A garbled metadata file discards the entry instead of trusting it.
  const meta = dataPath.replace(/\.data$/, '.meta');
  const m = await readFile(meta);
  m[50] ^= 0xff;
  await writeFile(meta, m);
  const c3 = await BlobCache.open({ dir, unit: 64 * K });
  assert.equal(c3.usage, 0);
  await c3.close();
});

test('size bound: least recently used blobs are evicted, open ones emptied safely', async (t) => {
  const dir = await tempDir(t);
  const unit = 64 * K;
  const cache = await BlobCache.open({ dir, capacity: 1 << 20, unit });
  const blobs = ['ev-a', 'ev-b', 'ev-c'].map((l) => blob(l, 512 * K));
  const lazies = await Promise.all(blobs.map(async (b) => new LazySource(new CountingSource(b.bytes), { store: await cache.entry(b.digest, b.bytes.length) })));
  await fillCache(lazies[0]!);
  await fillCache(lazies[1]!);
  await lazies[0]!.read(Buffer.alloc(10), 0);
  await fillCache(lazies[2]!);
  await cache.settle();
  assert.ok(cache.usage <= 1 << 20, `usage ${cache.usage} over capacity`);
  assert.equal(lazies[1]!.store.has(0), false, 'b was least recently used');
  assert.ok(lazies[2]!.store.has(7));
  for (const [i, l] of lazies.entries()) {
    const buf = Buffer.alloc(512 * K);
    await l.read(buf, 0);
    assert.ok(buf.equals(blobs[i]!.bytes), `blob ${i} reads correctly after eviction`);
  }
  for (const l of lazies) await l.close();
  await cache.close();
});

test('downloadBlob resumes a partial file and checks the digest; switchTo goes local', async (t) => {
  const dir = await tempDir(t);
  const layout = await OciLayout.open(path.join(dir, 'layout'), { create: true });
  const b = blob('dl', 3 << 20);
  await layout.putBlob(b.digest, b.source());
  const dest = path.join(dir, 'overlaybd.commit');
  await writeFile(dest + '.download', b.bytes.subarray(0, 1 << 20));
  let first = -1;
  assert.equal(await downloadBlob(layout, b.digest, b.bytes.length, dest, { onProgress: (d) => (first = first < 0 ? d : first) }), true);
  assert.equal(first, 1 << 20, 'resumed after the bytes already there');
  assert.ok((await readFile(dest)).equals(b.bytes));
  assert.equal(await downloadBlob(layout, b.digest, b.bytes.length, dest), false, 'present: nothing to do');

  const bad = path.join(dir, 'bad');
  const wrong = Buffer.from(b.bytes.subarray(0, 1 << 20));
  wrong[5] ^= 1;
  await writeFile(bad + '.download', wrong);
  await assert.rejects(downloadBlob(layout, b.digest, b.bytes.length, bad), DigestMismatchError);
  await assert.rejects(readFile(bad + '.download'), /ENOENT/, 'a bad partial is removed so the next try starts over');

  const remote = new CountingSource(b.bytes);
  const lazy = new LazySource(remote, { unit: 256 * K });
  const bg = startBackgroundDownload([{ lazy, repo: layout, digest: b.digest, dest: path.join(dir, 'bg.commit') }], { maxBytesPerSec: 64 << 20 });
  await bg.done;
  assert.ok(lazy.isLocal);
  const buf = Buffer.alloc(1000);
  await lazy.read(buf, 2_000_000);
  assert.equal(remote.reads, 0);
  assert.ok(buf.equals(b.bytes.subarray(2_000_000, 2_001_000)));
  await lazy.close();
});

test('the rate limiter paces to the configured rate', async () => {
  const lim = new RateLimiter(4 << 20);
  const t0 = performance.now();
  for (let i = 0; i < 8; i++) await lim.take(128 * K);
  assert.ok(performance.now() - t0 >= 230, '1 MiB at 4 MiB/s takes at least ~250 ms');
});

test('constant eviction under concurrent reads never yields wrong bytes', async (t) => {
  const dir = await tempDir(t);
  const unit = 16 * K;
  const cache = await BlobCache.open({ dir, capacity: 256 * K, unit, publishDelayMs: 5 });
  const blobs = ['st-a', 'st-b', 'st-c'].map((l) => blob(l, 200 * K + 777));
  const lazies = await Promise.all(blobs.map(async (b) => new LazySource(new CountingSource(b.bytes), { store: await cache.entry(b.digest, b.bytes.length), maxInflight: 3 })));
  let seed = 12345;
  const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  await Promise.all(
    Array.from({ length: 12 }, async () => {
      for (let i = 0; i < 40; i++) {
        const which = rnd(3);
        const b = blobs[which]!.bytes;
        const len = 1 + rnd(40 * K);
        const off = rnd(b.length);
        const buf = Buffer.alloc(len);
        const n = await lazies[which]!.read(buf, off);
        assert.equal(n, Math.min(len, b.length - off));
        assert.ok(buf.subarray(0, n).equals(b.subarray(off, off + n)), `blob ${which} @${off}+${len}`);
      }
    }),
  );
  await cache.settle();
  for (const l of lazies) await l.settle();
  await cache.settle();
  assert.ok(cache.usage <= 256 * K + 3 * unit, `usage ${cache.usage}`);
  for (const l of lazies) await l.close();
  await cache.close();
});

test('evicting a unit whose fetch is still on its way to the store drops it: the retry fetches again, the store is not poisoned', async (t) => {
  const dir = await tempDir(t);
  const data = blob('evict-in-flight', 256 * K).bytes;
  // The first fetch is corrupted on the way (one byte flipped), as by a bad network hop.
  const remote = new CountingSource(data);
  const read = remote.read.bind(remote);
  remote.read = async (buf, offset) => {
    const n = await read(buf, offset);
    if (remote.reads === 1) buf[100] ^= 0x5a;
    return n;
  };
  const cache = await BlobCache.open({ dir, capacity: 64 << 20, unit: 64 * K });
  const disk = await cache.entry('sha256:' + 'e'.repeat(64), data.length);
  // Hold the store's writes, so the fetched unit is still in flight when the reader evicts it.
  const { store, release } = holdingPuts(disk);
  const lazy = new LazySource(remote, { store });
  const buf = Buffer.alloc(4096);
  await lazy.read(buf, 0);
  assert.notDeepEqual(buf, data.subarray(0, 4096), 'the first fetch arrives corrupted');
  await lazy.evict(0, 4096);
  await lazy.read(buf, 0);
  assert.deepEqual(buf, data.subarray(0, 4096), 'the retry after evict fetches again');
  assert.equal(remote.reads, 2);
  release();
  await lazy.settle();
  const again = Buffer.alloc(64 * K);
  await lazy.read(again, 0);
  assert.deepEqual(again, data.subarray(0, 64 * K), 'the corrupted fetch never reached the store');
  await lazy.close();
  await cache.close();
});

test('fetched bytes count against the shared in-flight budget until their store has them', async () => {
  const MiB = 1 << 20;
  // 24 MiB: the whole budget, in six 4 MiB fetches, whose store writes are held.
  const big = new CountingSource(Buffer.alloc(24 * MiB, 7));
  const inner = new MemoryChunkStore(4 * MiB, 32 * MiB);
  const { store: slow, release } = holdingPuts(inner);
  const a = new LazySource(big, { store: slow });
  await a.read(Buffer.alloc(24 * MiB), 0);
  const other = new CountingSource(blob('budget', 64 * K).bytes);
  const b = new LazySource(other, { unit: 64 * K });
  let done = false;
  const second = b.read(Buffer.alloc(4096), 0).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(other.reads, 0, 'another source fetches nothing while 24 MiB wait for their store');
  assert.equal(done, false);
  release();
  await second;
  assert.equal(other.reads, 1, 'and fetches once the store has them');
  await a.settle();
  await Promise.all([a.close(), b.close()]);
});
