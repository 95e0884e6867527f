/**
 * Remote-layer benchmarks, each side by side with its peer in one run (ratios are what
 * count on a shared machine; see docs/benchmarking.md):
 *  1. cold random 4 KiB read latency: lazy source (cache miss → one refill-unit GET, disk
 *     cache on /dev/shm) vs one raw keep-alive HTTP Range GET of 4 KiB from the same
 *     loopback docker-registry (goal ≤ 2×);
 *  2. warm-cache random 4 KiB read IOPS: lazy source over a complete cache entry vs the
 *     same blob as a local file, both on /dev/shm, at queue depth 1 and 16 (goal ≥ 0.9×);
 *  3. pull throughput: `pullImage` vs a plain streamed blob GET into a file (same registry).
 *
 * Usage: node bench/remote.ts [--size 64M] [--samples 200] [--registry-cpus 1]
 * (the client pins itself to CPU 0, the registry to --registry-cpus).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pipeline } from 'node:stream/promises';
import { FileSource } from '../src/io/file.ts';
import { MemorySource } from '../src/io/memory.ts';
import { parseSize } from '../src/io/util.ts';
import { BlobCache } from '../src/remote/cache.ts';
import { fillCache } from '../src/remote/download.ts';
import { LazySource } from '../src/remote/lazy-source.ts';
import { sha256Digest } from '../src/remote/manifest.ts';
import { pullImage } from '../src/image/pull.ts';
import { putImage } from '../src/image/push.ts';
import { RegistryClient } from '../src/remote/registry.ts';
import type { ByteSource } from '../src/io/types.ts';
import { startRegistry } from '../test/remote/helpers/registry.ts';
import { writeResults } from './util.ts';

// The client on CPU 0 (the registry gets its own CPU), so figures do not depend on placement.
if (!process.env.OBD_BENCH_PINNED) {
  const r = spawnSync('taskset', ['-c', '0', process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, OBD_BENCH_PINNED: '1' },
  });
  process.exit(r.status ?? 1);
}

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const SIZE = parseSize(arg('--size', '64M'));
const SAMPLES = Number(arg('--samples', '200'));
const ROUNDS = 5;
const SLICES = 25;
const K4 = 4096;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
};
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

/** One 4 KiB Range GET over a keep-alive node:http agent, body read to the end. */
function rawRangeGet(agent: http.Agent, url: string, off: number, len = K4): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent, headers: { range: `bytes=${off}-${off + len - 1}` } }, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => (n += c.length));
        res.on('end', () => (res.statusCode === 206 && n === len ? resolve(n) : reject(new Error(`status ${res.statusCode}, ${n} bytes`))));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

async function randomReadsIops(src: ByteSource, seconds: number, qd: number): Promise<number> {
  const blocks = Math.floor(src.size / K4);
  let ops = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: qd }, async () => {
      const buf = new Uint8Array(K4);
      while (performance.now() < end) {
        await src.read(buf, randomInt(blocks) * K4);
        ops++;
      }
    }),
  );
  return ops / seconds;
}

async function main(): Promise<void> {
  const shm = await mkdtemp(path.join('/dev/shm', 'obd-bench-remote-'));
  const reg = await startRegistry({ cpus: arg('--registry-cpus', '1') });
  const out: string[] = [];
  try {
    const data = randomBytes(SIZE);
    const digest = sha256Digest(data);
    const client = new RegistryClient(reg.host);
    const repo = client.repository('bench/blob');
    await repo.putBlob(digest, new MemorySource(data));
    await putImage(repo, [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size: SIZE }], 'v1');
    const url = `${reg.url}/v2/bench/blob/blobs/${digest}`;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    await rawRangeGet(agent, url, 0);

    // 1. cold latency, alternating raw / lazy per sample; each lazy sample hits a fresh unit
    const raw: number[] = [];
    const raw256: number[] = [];
    const cold: number[] = [];
    const cache = await BlobCache.open({ dir: path.join(shm, 'cache'), capacity: 4 * SIZE });
    const units = Math.floor(SIZE / (256 * 1024));
    for (let round = 0; round * units < SAMPLES * 1 + units; round++) {
      await cache.drop(digest);
      const entry = await cache.entry(digest, SIZE);
      const lazy = new LazySource(await repo.openBlob(digest, SIZE), { store: entry });
      const order = Array.from({ length: units }, (_, i) => i).sort(() => Math.random() - 0.5);
      const buf = new Uint8Array(K4);
      for (const u of order) {
        if (cold.length >= SAMPLES) break;
        const off = u * 256 * 1024 + randomInt(64) * K4;
        let t = performance.now();
        await rawRangeGet(agent, url, off);
        raw.push(performance.now() - t);
        t = performance.now();
        await rawRangeGet(agent, url, u * 256 * 1024, 256 * 1024);
        raw256.push(performance.now() - t);
        t = performance.now();
        await lazy.read(buf, off);
        cold.push(performance.now() - t);
      }
      await lazy.settle();
      await entry.close();
      if (cold.length >= SAMPLES) break;
    }
    const ratio1 = median(cold) / median(raw);
    out.push(
      '### Cold random 4 KiB read latency (lazy source vs one raw Range GET)',
      '',
      `Blob ${SIZE / 2 ** 20} MiB on a loopback docker-registry 2.8.2 (anonymous); ${cold.length} samples alternating A/B; refill unit 256 KiB; disk cache on /dev/shm.`,
      '',
      '| path | median ms | p90 ms | p99 ms |',
      '|---|---|---|---|',
      `| raw node:http keep-alive Range GET (4 KiB) | ${median(raw).toFixed(2)} | ${pct(raw, 0.9).toFixed(2)} | ${pct(raw, 0.99).toFixed(2)} |`,
      `| raw node:http keep-alive Range GET (256 KiB, for scale) | ${median(raw256).toFixed(2)} | ${pct(raw256, 0.9).toFixed(2)} | ${pct(raw256, 0.99).toFixed(2)} |`,
      `| lazy source, cache miss (256 KiB GET + cache write) | ${median(cold).toFixed(2)} | ${pct(cold, 0.9).toFixed(2)} | ${pct(cold, 0.99).toFixed(2)} |`,
      '',
      `**Ratio lazy / raw (median): ${ratio1.toFixed(2)}×** (goal ≤ 2×)`,
      '',
    );

    // 2. warm IOPS: complete cache entry vs local file, both on tmpfs, A/B rounds
    await cache.drop(digest);
    const entry = await cache.entry(digest, SIZE);
    const warm = new LazySource(await repo.openBlob(digest, SIZE), { store: entry });
    if (!(await fillCache(warm))) throw new Error('cache fill did not verify');
    const filled = warm.stats.requests;
    const localPath = path.join(shm, 'blob');
    await writeFile(localPath, data);
    const local = await FileSource.open(localPath);
    const rows: string[] = [];
    for (const qd of [1, 16]) {
      // Short alternating slices; the ratio is taken per pair so load swings cancel out.
      const a: number[] = [];
      const b: number[] = [];
      const ratios: number[] = [];
      await randomReadsIops(warm, 0.3, qd);
      await randomReadsIops(local, 0.3, qd);
      for (let r = 0; r < SLICES; r++) {
        const x = await randomReadsIops(local, 0.2, qd);
        const y = await randomReadsIops(warm, 0.2, qd);
        a.push(x);
        b.push(y);
        ratios.push(y / x);
      }
      rows.push(`| ${qd} | ${median(a).toFixed(0)} | ${median(b).toFixed(0)} | **${median(ratios).toFixed(2)}×** |`);
    }
    if (warm.stats.requests !== filled) throw new Error('warm reads went to the network');
    out.push(
      '### Warm-cache random 4 KiB read IOPS (lazy source over the disk cache vs local file)',
      '',
      `Same ${SIZE / 2 ** 20} MiB blob, both on /dev/shm; ${SLICES} pairs of 0.2 s slices alternating; IOPS medians and the median of per-pair ratios.`,
      '',
      '| queue depth | local FileSource IOPS | lazy + cache IOPS | ratio (goal ≥ 0.9×) |',
      '|---|---|---|---|',
      ...rows,
      '',
    );
    await warm.close();
    await local.close();
    await cache.close();

    // 3. pull throughput vs plain GET of the blob into a file
    const plain: number[] = [];
    const pulled: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const dst = path.join(shm, `plain-${r}`);
      let t = performance.now();
      await new Promise<void>((resolve, reject) => {
        http.get(url, { agent }, (res) => pipeline(res, createWriteStream(dst)).then(resolve, reject)).on('error', reject);
      });
      plain.push(SIZE / 2 ** 20 / ((performance.now() - t) / 1000));
      await rm(dst);
      const dir = path.join(shm, `pull-${r}`);
      t = performance.now();
      await pullImage(`${reg.host}/bench/blob:v1`, dir, { dockerConfig: false });
      pulled.push(SIZE / 2 ** 20 / ((performance.now() - t) / 1000));
      await rm(dir, { recursive: true });
    }
    out.push(
      '### Pull throughput (obd pull vs a plain streamed blob GET)',
      '',
      `One-layer image of ${SIZE / 2 ** 20} MiB; into files on /dev/shm; ${ROUNDS} rounds alternating, medians. Pull includes manifest resolution, sha256 verification, fsync and rename.`,
      '',
      '| path | MiB/s |',
      '|---|---|',
      `| plain node:http GET → file | ${median(plain).toFixed(0)} |`,
      `| obd pull | ${median(pulled).toFixed(0)} |`,
      '',
      `**Ratio pull / plain GET: ${(median(pulled) / median(plain)).toFixed(2)}×**`,
      '',
    );
    agent.destroy();
    await client.close();
  } finally {
    await reg.stop();
    await rm(shm, { recursive: true, force: true });
  }
  await writeResults(
    'remote',
    [
      '## Remote layers (registry, lazy source, cache, pull)',
      '',
      `Client pinned to CPU 0, docker-registry 2.8.2 on 127.0.0.1 pinned to CPU ${arg('--registry-cpus', '1')}; ${SIZE / 2 ** 20} MiB random blob; cache and files on /dev/shm.`,
      '',
      ...out,
      '### Reading the numbers',
      '- Cold reads: the registry spends a few ms per request whatever its size, so a cache miss that fetches a whole',
      '  256 KiB refill unit costs about one raw 4 KiB request. The caller is answered as soon as the unit arrives;',
      '  the cache write happens after.',
      '- Warm reads: held units are read from the cache file with a synchronous pread when it is in the page cache,',
      '  like the local FileSource they are compared with.',
      '- Pull includes manifest resolution, sha256 verification, fsync and rename, which the plain GET does not do.',
    ].join('\n'),
  );
}

await main();
