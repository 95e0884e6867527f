/**
 * Verity benchmarks (docs/format.md §7), each side by side in one run (docs/benchmarking.md
 * §3), client pinned to CPU 0 and the registry to CPU 1 (§2), data on /dev/shm (§1):
 *  1. cold random 4 KiB read latency from a loopback docker-registry: verified lazy source
 *     vs the same lazy source unverified, alternating per sample (goal ≤ 1.1×), plus the
 *     first read of a freshly opened layer, which fetches its tree pages;
 *  2. warm-cache random 4 KiB read IOPS, verified vs unverified, queue depth 1 and 16
 *     (goal ≥ 0.98×);
 *  3. push time of one LSMT layer with trees vs `--no-verity` (goal ≤ 1.15×) and the tree's
 *     share of the blob (goal ≤ 0.1 %);
 *  4. `obd verify` (library call) on a local zfile image vs `sha256sum` of the same file.
 *
 * Usage: node bench/verity.ts [--size 64M] [--samples 200] [--verify-size 1G] [--quick] [--only cold|warm|push|verify]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemorySource } from '../src/io/memory.ts';
import { parseSize } from '../src/io/util.ts';
import type { ByteSource } from '../src/io/types.ts';
import { importRaw } from '../src/lsmt/import.ts';
import { BlobCache } from '../src/remote/cache.ts';
import { fillCache } from '../src/remote/download.ts';
import { LazySource } from '../src/remote/lazy-source.ts';
import { MediaType, sha256Digest, type Descriptor } from '../src/remote/manifest.ts';
import { pushImage } from '../src/image/push.ts';
import { RegistryClient } from '../src/remote/registry.ts';
import { compressFile } from '../src/zfile/writer.ts';
import { checkImage } from '../src/verity/check.ts';
import { verifyLayer } from '../src/verity/open.ts';
import { digestAndTree, publishTree } from '../src/verity/publish.ts';
import { DEFAULT_CHUNK, TreeShape } from '../src/verity/tree.ts';
import { startRegistry } from '../test/remote/helpers/registry.ts';
import { median, sh, writeResults } from './util.ts';

if (!process.env.OBD_BENCH_PINNED) {
  const r = spawnSync('taskset', ['-c', '0', process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit', env: { ...process.env, OBD_BENCH_PINNED: '1' } });
  process.exit(r.status ?? 1);
}

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const arg = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const SIZE = parseSize(arg('--size', quick ? '16M' : '64M'));
const SAMPLES = Number(arg('--samples', quick ? '40' : '200'));
const VERIFY_SIZE = parseSize(arg('--verify-size', quick ? '128M' : '1G'));
const ONLY = arg('--only', '');
const part = (name: string) => !ONLY || ONLY === name;
const UNIT = 256 * 1024;
const K4 = 4096;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

async function iops(src: ByteSource, seconds: number, qd: number): Promise<number> {
  const blocks = Math.floor(src.size / K4);
  let ops = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: qd }, async () => {
      const buf = new Uint8Array(K4);
      while (performance.now() < end) {
        const off = randomInt(blocks) * K4;
        if (src.tryReadSync?.(buf, off) === undefined) await src.read(buf, off);
        ops++;
      }
    }),
  );
  return ops / seconds;
}

async function main(): Promise<void> {
  const shm = await mkdtemp(path.join('/dev/shm', 'obd-bench-verity-'));
  const reg = await startRegistry({ cpus: '1' });
  const out: string[] = [];
  try {
    const data = randomBytes(SIZE);
    const digest = sha256Digest(data);
    const client = new RegistryClient(reg.host);
    const repo = client.repository('bench/verity');
    await repo.putBlob(digest, new MemorySource(data));
    const plainDesc: Descriptor = { mediaType: MediaType.ociLayer, digest, size: SIZE };
    const desc = await publishTree(repo, plainDesc, (await digestAndTree(new MemorySource(data), DEFAULT_CHUNK)).tree!);
    const cache = await BlobCache.open({ dir: path.join(shm, 'cache'), capacity: 8 * SIZE });
    const open = async (verified: boolean, key: string) => {
      const entry = await cache.entry(key, SIZE);
      const raw = await repo.openBlob(digest, SIZE);
      const { blob, store } = verified ? await verifyLayer(repo, desc, raw, entry) : { blob: raw, store: entry };
      return new LazySource(blob, { store });
    };
    // Two cache keys, so the two sides never share units.
    const keys = { plain: 'bench-plain', verified: 'bench-verified' };

    // 1. cold latency: fresh units, alternating; a fresh open of both sides per round.
    const cold = { plain: [] as number[], verified: [] as number[], firstPlain: [] as number[], firstVerified: [] as number[] };
    const units = Math.floor(SIZE / UNIT);
    while (part('cold') && cold.plain.length < SAMPLES) {
      await cache.drop(keys.plain);
      await cache.drop(keys.verified);
      const a = await open(false, keys.plain);
      const b = await open(true, keys.verified);
      const order = Array.from({ length: units }, (_, i) => i).sort(() => Math.random() - 0.5);
      const buf = new Uint8Array(K4);
      for (const [i, u] of order.entries()) {
        if (cold.plain.length >= SAMPLES) break;
        const off = u * UNIT + randomInt(UNIT / K4) * K4;
        // Which side goes first alternates: the first one's cache write overlaps the second's fetch.
        const timed = async (src: LazySource) => {
          const t = performance.now();
          await src.read(buf, off);
          return performance.now() - t;
        };
        const [pa, pb] = i % 2 ? [await timed(a), await timed(b)] : [await timed(b), await timed(a)].reverse();
        // The first read of an open pays for the tree pages; it is measured on its own below.
        if (i === 0) continue;
        cold.plain.push(pa);
        cold.verified.push(pb);
      }
      await a.close();
      await b.close();
    }
    // The first read of freshly opened layers: the verified one fetches its tree pages too.
    for (let k = 0; part('cold') && k < (quick ? 4 : 12); k++) {
      await cache.drop(keys.plain);
      await cache.drop(keys.verified);
      const a = await open(false, keys.plain);
      const b = await open(true, keys.verified);
      const off = randomInt(SIZE / K4) * K4;
      const buf = new Uint8Array(K4);
      const timed = async (src: LazySource) => {
        const t = performance.now();
        await src.read(buf, off);
        return performance.now() - t;
      };
      const [pa, pb] = k % 2 ? [await timed(a), await timed(b)] : [await timed(b), await timed(a)].reverse();
      cold.firstPlain.push(pa);
      cold.firstVerified.push(pb);
      await a.close();
      await b.close();
    }
    if (part('cold')) out.push(
      '### Cold random 4 KiB read latency, verified vs unverified (same registry, same lazy source)',
      '',
      `Blob ${SIZE / 2 ** 20} MiB on a loopback docker-registry; ${cold.plain.length} samples, A/B and B/A in turn, each a fresh 256 KiB refill unit; disk cache on /dev/shm; tree chunk 128 KiB.`,
      '',
      '| path | median ms | p90 ms | p99 ms |',
      '|---|---|---|---|',
      `| unverified lazy source | ${median(cold.plain).toFixed(2)} | ${pct(cold.plain, 0.9).toFixed(2)} | ${pct(cold.plain, 0.99).toFixed(2)} |`,
      `| verified lazy source | ${median(cold.verified).toFixed(2)} | ${pct(cold.verified, 0.9).toFixed(2)} | ${pct(cold.verified, 0.99).toFixed(2)} |`,
      `| first read after open, unverified (${cold.firstPlain.length} opens) | ${median(cold.firstPlain).toFixed(2)} | | |`,
      `| first read after open, verified (its leaf page fetched alongside) | ${median(cold.firstVerified).toFixed(2)} | | |`,
      '',
      `**Ratio verified / unverified (median): ${(median(cold.verified) / median(cold.plain)).toFixed(2)}×** (goal ≤ 1.1×); first read after open: ${(median(cold.firstVerified) / median(cold.firstPlain)).toFixed(2)}×`,
      '',
    );

    // 2. warm IOPS over complete cache entries.
    if (part('warm')) {
      await cache.drop(keys.plain);
      await cache.drop(keys.verified);
      const wa = await open(false, keys.plain);
      const wb = await open(true, keys.verified);
      await fillCache(wa);
      await fillCache(wb);
      const rows: string[] = [];
      for (const qd of [1, 16]) {
        const ratios: number[] = [];
        const xa: number[] = [];
        const xb: number[] = [];
        await iops(wa, 0.3, qd);
        await iops(wb, 0.3, qd);
        for (let r = 0; r < (quick ? 8 : 25); r++) {
          const x = await iops(wa, 0.2, qd);
          const y = await iops(wb, 0.2, qd);
          xa.push(x);
          xb.push(y);
          ratios.push(y / x);
        }
        rows.push(`| ${qd} | ${median(xa).toFixed(0)} | ${median(xb).toFixed(0)} | **${median(ratios).toFixed(2)}×** |`);
      }
      out.push(
        '### Warm-cache random 4 KiB read IOPS, verified vs unverified',
        '',
        `Same blob, complete cache entries on /dev/shm (filled through each side's own path); pairs of 0.2 s slices alternating; median of per-pair ratios.`,
        '',
        '| queue depth | unverified IOPS | verified IOPS | ratio (goal ≥ 0.98×) |',
        '|---|---|---|---|',
        ...rows,
        '',
      );
      await wa.close();
      await wb.close();
    }
    await cache.close();

    // 3. push with and without trees: one LSMT layer (half random, half zeros) compressed and uploaded.
    if (part('push')) {
      const rawFile = path.join(shm, 'disk.raw');
      const half = randomBytes(SIZE / 2);
      await writeFile(rawFile, Buffer.concat([half, Buffer.alloc(SIZE / 2)]));
      const layer = path.join(shm, 'layer.lsmt');
      await importRaw(rawFile, layer);
      const push = { plain: [] as number[], verified: [] as number[] };
      for (let r = 0; r < (quick ? 2 : 5); r++) {
        for (const verity of [false, true]) {
          const t = performance.now();
          await pushImage([layer], `${reg.host}/bench/push-${verity ? 'v' : 'p'}-${r}:v1`, { dockerConfig: false, verity });
          (verity ? push.verified : push.plain).push(performance.now() - t);
        }
      }
      const layerBlob = (await pushImage([layer], `${reg.host}/bench/push-size:v1`, { dockerConfig: false })).layers[0]!;
      const treeBytes = new TreeShape(layerBlob.size, DEFAULT_CHUNK).bytes;
      out.push(
        '### Push time with trees vs without',
        '',
        `One ${SIZE / 2 ** 20} MiB LSMT layer (half random, half zeros), compressed (lz4, 4 KiB blocks), tar-wrapped and uploaded to a fresh repository each time; ${push.plain.length} rounds alternating; medians.`,
        '',
        '| push | median ms |',
        '|---|---|',
        `| --no-verity | ${median(push.plain).toFixed(0)} |`,
        `| with trees (default) | ${median(push.verified).toFixed(0)} |`,
        '',
        `**Ratio with / without: ${(median(push.verified) / median(push.plain)).toFixed(2)}×** (goal ≤ 1.15×); tree ${treeBytes} bytes for a ${layerBlob.size}-byte blob = **${((100 * treeBytes) / layerBlob.size).toFixed(3)} %** (goal ≤ 0.1 %)`,
        '',
      );
      await rm(rawFile);
    }

    // 4. obd verify vs sha256sum on a local zfile image.
    if (part('verify')) {
      const vraw = path.join(shm, 'verify.raw');
      const chunk = randomBytes(1 << 20);
      const zero = Buffer.alloc(1 << 20);
      const parts: Buffer[] = [];
      for (let i = 0; i < VERIFY_SIZE >> 20; i++) parts.push(i % 2 ? zero : chunk.map((b, j) => (j % 7 === 0 ? i & 0xff : b)) as Buffer);
      await writeFile(vraw, Buffer.concat(parts));
      parts.length = 0;
      const vlayer = path.join(shm, 'verify.lsmt');
      await importRaw(vraw, vlayer);
      await rm(vraw);
      const zfile = path.join(shm, 'verify.zfile');
      await compressFile(vlayer, zfile, { algorithm: 'lz4', blockSize: 4096, crc: true });
      await rm(vlayer);
      const zsize = (await stat(zfile)).size;
      const times = { sha: [] as number[], verify: [] as number[] };
      for (let r = 0; r < (quick ? 2 : 3); r++) {
        let t = performance.now();
        await sh('sha256sum', [zfile]);
        times.sha.push(performance.now() - t);
        t = performance.now();
        const rep = await checkImage([zfile]);
        times.verify.push(performance.now() - t);
        if (!rep.ok) throw new Error('verify failed on a sound image');
      }
      const mbps = (ms: number) => (zsize / 2 ** 20 / (ms / 1000)).toFixed(0);
      out.push(
        '### obd verify throughput vs sha256sum',
        '',
        `A ${VERIFY_SIZE / 2 ** 20} MiB disk (half random, half zeros) as one LSMT layer compressed to a ${(zsize / 2 ** 20).toFixed(0)} MiB zfile (lz4, 4 KiB blocks, CRCs) on /dev/shm; ${times.sha.length} rounds alternating; medians. verify = sha256 of the blob, every zfile block CRC, the LSMT index (library call, no process start).`,
        '',
        '| tool | median ms | MiB/s of the file |',
        '|---|---|---|',
        `| sha256sum | ${median(times.sha).toFixed(0)} | ${mbps(median(times.sha))} |`,
        `| obd verify | ${median(times.verify).toFixed(0)} | ${mbps(median(times.verify))} |`,
        '',
        `**Ratio verify / sha256sum (time): ${(median(times.verify) / median(times.sha)).toFixed(2)}×**`,
        '',
      );
    }
    await client.close();
  } finally {
    await reg.stop();
    await rm(shm, { recursive: true, force: true });
  }
  if (ONLY) return void process.stdout.write(out.join('\n') + '\n');
  await writeResults(
    'verity',
    [
      '## Verity (verified lazy reads, push with trees, obd verify)',
      '',
      'Client pinned to CPU 0, docker-registry on 127.0.0.1 pinned to CPU 1; data on /dev/shm.',
      '',
      ...out,
      '### Reading the numbers',
      '- Cold reads: checking a 256 KiB unit costs two SHA-256 leaf hashes (~0.3 ms here); the tree pages a read needs',
      '  are fetched in parallel with the data and kept. Opening a layer starts fetching the upper pages and the first',
      '  leaf page, so a first read at a random offset waits for at most one more page (one more registry request).',
      '- Warm reads: checked units are served by the same synchronous pread path as unverified ones.',
      '- Push: each tree is built (one more SHA-256 over the blob) while the layers upload, and uploaded beside them;',
      '  the referrer goes up beside the image manifest. What is left is a few small registry requests per push,',
      '  which weigh on small layers and on a loaded registry (every upload costs it tens of ms here).',
      '- The machine is shared: medians of alternating samples; the load varies between runs by a factor of three.',
    ].join('\n'),
  );
}

await main();
