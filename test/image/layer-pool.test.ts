/**
 * Exports that stack the same layers open them once (src/image/layer-pool.ts): through a real
 * registry, two images sharing base layers fetch each byte of those layers once, read the
 * right bytes over NBD, and closing one export leaves the other working; local layer files
 * are shared by inode whatever path names them; decoded zfile blocks of every layer stay
 * under one memory budget.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, link, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { openImage } from '../../src/image/open.ts';
import { LayerPool } from '../../src/image/layer-pool.ts';
import { FileSource } from '../../src/io/file.ts';
import { NbdServer } from '../../src/nbd/index.ts';
import { pushImage } from '../../src/image/push.ts';
import { RawClient } from '../nbd/helpers/client.ts';
import { MemoryBudget } from '../../src/zfile/block-cache.ts';
import { ZFileReader } from '../../src/zfile/reader.ts';
import { deviceDigest } from '../helpers/layers.ts';
import { DIGESTS, FIXTURES, zinput8m } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';
import { startCountingProxy } from '../remote/helpers/counting-proxy.ts';
import { startFaultProxy } from '../remote/helpers/fault-proxy.ts';
import { startRegistry } from '../remote/helpers/registry.ts';

const run = promisify(execFile);
const [L1, L2, L3] = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((n) => path.join(FIXTURES, 'lsmt', n)) as [string, string, string];

async function nbdSha(uri: string): Promise<string> {
  const { stdout } = await run('bash', ['-o', 'pipefail', '-c', `nbdcopy '${uri}' - | sha256sum`]);
  return stdout.split(' ')[0]!;
}

test('two exports sharing layers through a registry fetch each byte once, and removing one with a client on it keeps the other working', async (t) => {
  const dir = await tempDir(t, 'obd-pool-');
  const registry = await startRegistry();
  const proxy = await startCountingProxy({ host: '127.0.0.1', port: registry.port });
  t.after(async () => {
    await proxy.stop();
    await registry.stop();
  });
  await pushImage([L1, L2], `${registry.host}/pool/a:v1`, { plainHttp: true });
  await pushImage([L1, L2, L3], `${registry.host}/pool/b:v1`, { plainHttp: true });
  const refA = `${proxy.host}/pool/a:v1`;
  const refB = `${proxy.host}/pool/b:v1`;

  // Without a pool each image opens its own layers: the shared ones are fetched twice
  // (this is what the counting proves it can see).
  {
    const a = await openImage([refA], { plainHttp: true });
    const b = await openImage([refB], { plainHttp: true });
    try {
      assert.equal(await deviceDigest(a), DIGESTS.layer12);
      assert.equal(await deviceDigest(b), DIGESTS.layer123);
    } finally {
      await a.close();
      await b.close();
    }
    assert.ok(proxy.refetchedBytes() > 1 << 20, `private opens fetched ${proxy.refetchedBytes()} bytes twice`);
  }
  proxy.fetches.length = 0;

  const pool = new LayerPool({ memory: 4 << 20 });
  const a = await openImage([refA], { plainHttp: true, pool });
  const b = await openImage([refB], { plainHttp: true, pool });
  const blobs = () => Object.fromEntries(pool.held().filter((h) => h.key.startsWith('blob:')).map((h) => [h.key.slice(5, 76), h.refs]));
  const held = blobs();
  assert.equal(Object.keys(held).length, 3, `three layer blobs, shared: ${JSON.stringify(pool.held())}`);
  assert.deepEqual(Object.values(held).sort(), [1, 2, 2]);
  // One client for the one repository each image names (plus one per blob that keeps it).
  assert.equal(pool.held().filter((h) => h.key.startsWith('registry:')).length, 2);
  assert.deepEqual({ layers: pool.stats().layers, users: pool.stats().users, repositories: pool.stats().repositories }, { layers: 3, users: 5, repositories: 2 });

  const server = new NbdServer({ exports: { a, b } });
  const socket = path.join(dir, 'nbd.sock');
  await server.listen({ socket });
  const uri = (name: string) => `nbd+unix:///${name}?socket=${socket}`;
  let bOpen = true;
  try {
    assert.equal(await nbdSha(uri('a')), DIGESTS.layer12);
    // Export a goes away before b reads anything, with a client on it: the client is
    // disconnected; b still reads, through the layers a opened.
    const client = await RawClient.connect({ socket });
    await client.handshake({ name: 'a' });
    assert.equal((await client.read(1 << 20, 65536)).error, 0);
    await server.removeExport('a');
    assert.equal(await client.closedByServer(), true);
    await assert.rejects(nbdSha(uri('a')), 'a removed export is no longer offered');
    await a.close();
    assert.deepEqual(Object.values(blobs()).sort(), [1, 1, 1], 'a released its holds');
    assert.equal(await nbdSha(uri('b')), DIGESTS.layer123);
    assert.equal(await nbdSha(uri('b')), DIGESTS.layer123);
    assert.equal(proxy.refetchedBytes(), 0, `no byte fetched twice (${proxy.blobBytes()} bytes in ${proxy.fetches.length} GETs)`);
    await server.close();
    await b.close();
    bOpen = false;
    assert.deepEqual(pool.held(), [], 'the last export closed everything it opened');
  } finally {
    await server.close();
    if (bOpen) await b.close();
    await pool.close();
  }
});

test('an image that fails to open through the pool leaves nothing held, and the next open tries again', async (t) => {
  const registry = await startRegistry();
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: registry.port });
  t.after(async () => {
    await proxy.stop();
    await registry.stop();
  });
  await pushImage([L1, L2], `${registry.host}/pool/f:v1`, { plainHttp: true });
  const ref = `${proxy.host}/pool/f:v1`;
  const pool = new LayerPool();
  // Every blob read fails: the layers' blobs open (their reads start lazily), then decoding
  // them fails, and what the open took from the pool must be let go again.
  proxy.rule = (r) => (r.method === 'GET' && /\/blobs\/sha256:/.test(r.url) ? { kind: 'status', status: 404 } : undefined);
  await assert.rejects(openImage([ref], { plainHttp: true, retries: 0, pool }));
  assert.deepEqual(pool.held(), [], 'nothing held after the failed open');
  proxy.rule = () => undefined;
  const dev = await openImage([ref], { plainHttp: true, pool });
  try {
    assert.equal(await deviceDigest(dev), DIGESTS.layer12);
  } finally {
    await dev.close();
  }
  assert.deepEqual(pool.held(), []);
});

test('local layer files are shared by device and inode, whatever path names them', async (t) => {
  const dir = await tempDir(t, 'obd-pool-files-');
  const base = path.join(dir, 'base.lsmt');
  const alias = path.join(dir, 'base-alias.lsmt');
  await copyFile(L1, base);
  await link(base, alias);
  const pool = new LayerPool();
  const a = await openImage([base, L2], { pool });
  const b = await openImage([alias, L2, L3], { pool });
  const files = () => pool.held().filter((h) => h.key.startsWith('file:')).map((h) => h.refs).sort();
  try {
    assert.deepEqual(files(), [1, 2, 2], 'layer1 (two names) and layer2 opened once each, layer3 once');
    assert.equal(await deviceDigest(a), DIGESTS.layer12);
    await a.close();
    assert.deepEqual(files(), [1, 1, 1]);
    assert.equal(await deviceDigest(b), DIGESTS.layer123);
  } finally {
    await a.close();
    await b.close();
    await pool.close();
  }
  assert.deepEqual(pool.held(), []);
});

test('config.v1.json images share their lower files with each other and with layer-file images', async (t) => {
  const dir = await tempDir(t, 'obd-pool-config-');
  const config = async (name: string, lowers: string[]) => {
    const p = path.join(dir, name);
    await writeFile(p, JSON.stringify({ lowers: lowers.map((file) => ({ file })) }));
    return p;
  };
  const pool = new LayerPool();
  const a = await openImage([await config('a.json', [L1, L2])], { pool });
  const b = await openImage([await config('b.json', [L1, L2, L3])], { pool });
  const c = await openImage([L1], { pool });
  try {
    assert.deepEqual(pool.held().filter((h) => h.key.startsWith('file:')).map((h) => h.refs).sort(), [1, 2, 3]);
    assert.equal(await deviceDigest(a), DIGESTS.layer12);
    assert.equal(await deviceDigest(b), DIGESTS.layer123);
    assert.equal(await deviceDigest(c), DIGESTS.layer1);
  } finally {
    await a.close();
    await b.close();
    await c.close();
  }
  assert.deepEqual(pool.held(), []);
});

test('decoded zfile blocks of several readers stay under one shared budget, least recently used evicted first', async () => {
  const budget = new MemoryBudget(64 << 10);
  const want = [zinput8m(), zinput8m()];
  const readers = await Promise.all(
    ['zinput-8m.lz4-bs4.zfile', 'zinput-8m.zstd-bs32.zfile'].map(async (n) => ZFileReader.open(await FileSource.open(path.join(FIXTURES, 'zfile', n)), { budget })),
  );
  try {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    for (let k = 0; k < 3000; k++) {
      const r = k % 2;
      // Reads smaller than a block, at odd offsets: these go through the cache.
      const len = 1 + rnd(3000);
      const off = rnd(want[r]!.length - len);
      const buf = new Uint8Array(len);
      await readers[r]!.read(buf, off);
      assert.ok(Buffer.from(buf).equals(want[r]!.subarray(off, off + len)), `reader ${r} read [${off}, +${len}) wrong`);
      assert.ok(budget.bytes <= budget.capacity, `budget holds ${budget.bytes} > ${budget.capacity}`);
    }
    assert.ok(budget.stats.evictions > 0, 'the budget evicted');
    assert.ok(budget.bytes > budget.capacity / 2, `the budget is used (${budget.bytes} bytes)`);
    // A block read again and again stays while others come and go (LRU, not FIFO).
    const hot = new Uint8Array(100);
    await readers[0]!.read(hot, 12345);
    const before = budget.stats.admitted;
    for (let k = 0; k < 200; k++) {
      await readers[0]!.read(hot, 12345);
      const other = new Uint8Array(10);
      await readers[1]!.read(other, 32768 * (1 + (k % 40)) + 5);
    }
    // Each cold read decodes its block into the cache; the hot one is never decoded again.
    assert.equal(budget.stats.admitted - before, 200, 'the hot block stayed cached');
    await readers[1]!.close();
    assert.equal(budget.bytes, budget.blocks * 4096, 'only the 4 KiB blocks of the open reader remain');
  } finally {
    for (const r of readers) await r.close();
  }
  assert.equal(budget.bytes, 0, 'closed readers hold nothing');
});
