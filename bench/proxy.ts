/**
 * Registry reads through a SOCKS5 proxy (microsocks on loopback), side by side in one run:
 *  1. random 4 KiB Range GETs at queue depth 1 and 8: through socks5h:// vs direct (the cost
 *     of the proxy hop and the handshake on kept-alive connections);
 *  2. one whole-blob GET: obd through the proxy vs direct, and vs curl through the same proxy
 *     (`curl --socks5-hostname`, the peer).
 * Rounds alternate the order of the sides; medians are reported.
 *
 * Usage: node bench/proxy.ts [--size 64M] [--seconds 3] [--registry-cpus 1]
 * (the client pins itself to CPU 0, the registry to --registry-cpus).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { MemorySource } from '../src/io/memory.ts';
import { parseSize } from '../src/io/util.ts';
import { sha256Digest } from '../src/remote/manifest.ts';
import { RegistryClient } from '../src/remote/registry.ts';
import type { ByteSource } from '../src/io/types.ts';
import { startRegistry } from '../test/remote/helpers/registry.ts';
import { startMicrosocks } from '../test/remote/helpers/socks.ts';
import { median, table, writeResults } from './util.ts';

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
const SECONDS = Number(arg('--seconds', '3'));
const ROUNDS = 5;
const K4 = 4096;

async function iops(src: ByteSource, qd: number): Promise<number> {
  const blocks = Math.floor(src.size / K4);
  let ops = 0;
  const end = performance.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: qd }, async () => {
      const buf = new Uint8Array(K4);
      while (performance.now() < end) {
        await src.read(buf, randomInt(blocks) * K4);
        ops++;
      }
    }),
  );
  return ops / SECONDS;
}

/** MB/s of one whole-blob read (one GET). */
async function whole(src: ByteSource): Promise<number> {
  const buf = new Uint8Array(SIZE);
  const t = performance.now();
  await src.read(buf, 0);
  return SIZE / 1e6 / ((performance.now() - t) / 1000);
}

/** Requests per second of `n` sequential 4 KiB Range GETs in one curl (one kept-alive connection). */
function curlRanges(url: string, proxy: string, n: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const off = randomInt(Math.floor(SIZE / K4)) * K4;
    const urls = Array.from({ length: n }, () => [url, '-o', '/dev/null']).flat();
    const t = performance.now();
    const c = spawn('curl', ['-sS', '--fail', '-r', `${off}-${off + K4 - 1}`, '--socks5-hostname', proxy, ...urls], { stdio: 'ignore' });
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(n / ((performance.now() - t) / 1000)) : reject(new Error(`curl exited ${code}`))));
  });
}

function curlWhole(url: string, proxy: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', '--socks5-hostname', proxy, url]);
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('error', reject);
    c.on('exit', (code) => {
      const [n, secs] = out.split(' ').map(Number);
      if (code !== 0 || n !== SIZE) reject(new Error(`curl exited ${code}: ${out}`));
      else resolve(SIZE / 1e6 / secs!);
    });
  });
}

const m1 = (xs: number[]) => xs[xs.length - 1] ?? 20;

async function main(): Promise<void> {
  const reg = await startRegistry({ cpus: arg('--registry-cpus', '1') });
  const socks = await startMicrosocks();
  try {
    const data = randomBytes(SIZE);
    const digest = sha256Digest(data);
    const direct = new RegistryClient(reg.host, { plainHttp: true });
    const viaSocks = new RegistryClient(`localhost:${reg.port}`, { plainHttp: true, proxy: `socks5h://${socks.host}` });
    await direct.repository('bench/proxy').putBlob(digest, new MemorySource(data));
    const srcDirect = await direct.repository('bench/proxy').openBlob(digest, SIZE);
    const srcSocks = await viaSocks.repository('bench/proxy').openBlob(digest, SIZE);
    const url = `http://localhost:${reg.port}/v2/bench/proxy/blobs/${digest}`;
    await iops(srcSocks, 1);
    const r: Record<string, number[]> = { d1: [], s1: [], c1: [], d8: [], s8: [], wd: [], ws: [], wc: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const flip = round % 2 === 1;
      for (const qd of [1, 8]) {
        const pair: [string, ByteSource][] = [[`d${qd}`, srcDirect], [`s${qd}`, srcSocks]];
        for (const [k, src] of flip ? pair.reverse() : pair) r[k]!.push(await iops(src, qd));
      }
      r.c1!.push(await curlRanges(url, socks.host, Math.max(20, Math.round(m1(r.s1!) * SECONDS))));
      const w: [string, () => Promise<number>][] = [['wd', () => whole(srcDirect)], ['ws', () => whole(srcSocks)], ['wc', () => curlWhole(url, socks.host)]];
      for (const [k, f] of flip ? w.reverse() : w) r[k]!.push(await f());
    }
    await direct.close();
    await viaSocks.close();
    const m = (k: string) => median(r[k]!);
    const f0 = (x: number) => x.toFixed(0);
    const f2 = (x: number) => x.toFixed(2);
    await writeResults(
      'proxy',
      [
        '## Registry reads through a SOCKS5 proxy (bench/proxy.ts)',
        '',
        `Blob of ${SIZE / 2 ** 20} MiB on a loopback docker-registry 2.8.2; proxy: Debian microsocks 1.0.3 on loopback, \`socks5h://\`; client on CPU 0, registry on CPU ${arg('--registry-cpus', '1')}; medians of ${ROUNDS} rounds alternating the order.`,
        '',
        table(
          ['read', 'direct', 'through SOCKS5', 'SOCKS5 / direct'],
          [
            ['random 4 KiB Range GETs, qd 1 (IOPS)', f0(m('d1')), f0(m('s1')), `${f2(m('s1') / m('d1'))}×`],
            ['random 4 KiB Range GETs, qd 8 (IOPS)', f0(m('d8')), f0(m('s8')), `${f2(m('s8') / m('d8'))}×`],
            ['whole blob, one GET (MB/s)', f0(m('wd')), f0(m('ws')), `${f2(m('ws') / m('wd'))}×`],
          ],
        ),
        '',
        table(
          ['through the same proxy', 'obd', 'curl --socks5-hostname', 'obd / curl'],
          [
            ['4 KiB Range GETs one after another, one connection (per s)', f0(m('s1')), f0(m('c1')), `${f2(m('s1') / m('c1'))}×`],
            ['whole blob, one GET (MB/s)', f0(m('ws')), f0(m('wc')), `${f2(m('ws') / m('wc'))}×`],
          ],
        ),
        '',
        'A 4 KiB request through microsocks takes ~50 ms whoever sends it (curl the same): microsocks relays',
        'through a 1 KiB buffer without TCP_NODELAY, so the reply\'s last piece waits for a delayed ACK;',
        'at queue depth 8 the waits overlap. For whole blobs its small writes arrive as ~21 KiB reads',
        'instead of 64 KiB, and every read is a Node event: a raw socket through the same proxy, with',
        'no HTTP parser, already gets about half the direct rate. Both are the proxy\'s shape, not',
        'the client\'s; a proxy that relays in larger writes narrows the gap.',
        '',
      ].join('\n'),
    );
  } finally {
    await socks.stop();
    await reg.stop();
  }
}

await main();
