/**
 * ZFile benchmark: compress / decompress throughput of a 256 MiB semi-compressible file
 * (zinput-8m tiled 32×, on /dev/shm) for lz4 and zstd at 4 KiB and 32 KiB blocks, one thread
 * and with workers (the reference tool side by side is in bench/reference.ts); plus random
 * 4 KiB read IOPS from a compressed layer vs the same bytes uncompressed, side by side.
 *
 *   node bench/zfile.ts [--reps N] [--size-mib N]     (writes bench/results/zfile.md)
 *
 * MB/s = 10^6 bytes of uncompressed data per second, best of N runs (page cache is tmpfs).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileSource } from '../src/io/file.ts';
import type { ByteSource } from '../src/io/types.ts';
import { ZFileReader } from '../src/zfile/reader.ts';
import { compressFile, decompressFile } from '../src/zfile/writer.ts';
import type { Algorithm } from '../src/zfile/format.ts';
import { zinput8m } from '../test/helpers/recipes.ts';
import { median, writeResults } from './util.ts';

const args = process.argv.slice(2);
const argNum = (name: string, dflt: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const REPS = argNum('--reps', 3);
const SIZE_MIB = argNum('--size-mib', 256);
const THREADS = Math.max(2, os.availableParallelism());


const CONFIGS: [Algorithm, number][] = [
  ['lz4', 4096],
  ['zstd', 4096],
  ['lz4', 32768],
  ['zstd', 32768],
];

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

async function best(fn: () => Promise<unknown>): Promise<number> {
  let t = Infinity;
  for (let i = 0; i < REPS; i++) t = Math.min(t, await timed(fn));
  return t;
}

/** Random aligned 4 KiB reads at queue depth `qd` for `ms` milliseconds; returns reads/s. */
async function iops(src: ByteSource, qd: number, ms: number, seed: number): Promise<number> {
  const blocks = Math.floor(src.size / 4096);
  let x = seed >>> 0 || 1;
  const rand = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % blocks;
  };
  let count = 0;
  const deadline = performance.now() + ms;
  const worker = async () => {
    const buf = Buffer.allocUnsafe(4096);
    while (performance.now() < deadline) {
      for (let i = 0; i < 64; i++) {
        await src.read(buf, rand() * 4096);
        count++;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: qd }, worker));
  return count / ((performance.now() - t0) / 1000);
}

const fmt = (v: number) => v.toFixed(0);
const ratio = (a: number, b: number) => (a / b).toFixed(2);

const ROUNDS = 3;

/** Reads/s at qd1 and qd16 for each variant (null = the raw file), rounds alternated A B A B. */
async function measureIops(raw: string, variants: [string, string | null][]): Promise<[string, { qd1: number[]; qd16: number[] }][]> {
  const open = async (z: string | null): Promise<ByteSource> => (z ? ZFileReader.open(await FileSource.open(z)) : FileSource.open(raw));
  const results = new Map<string, { qd1: number[]; qd16: number[] }>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, z] of variants) {
      const src = await open(z);
      const r = results.get(name) ?? { qd1: [], qd16: [] };
      r.qd1.push(await iops(src, 1, 700, 17 + round));
      r.qd16.push(await iops(src, 16, 700, 31 + round));
      results.set(name, r);
      await src.close();
    }
  }
  return [...results];
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'obd-zfile-bench-'));
  try {
    const input = path.join(dir, 'input.bin');
    const tile = zinput8m();
    const total = SIZE_MIB << 20;
    const data = Buffer.allocUnsafe(total);
    for (let off = 0; off < total; off += tile.length) tile.copy(data, off, 0, Math.min(tile.length, total - off));
    await writeFile(input, data);
    const mb = total / 1e6;

    const lines: string[] = [];
    lines.push(`## ZFile (bench/zfile.ts)`);
    lines.push('');
    lines.push(`Load average at start: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} (the machine is shared; figures are noisy).`);
    lines.push('');
    lines.push(
      `${SIZE_MIB} MiB semi-compressible input (zinput-8m tiled) on ${dir.startsWith('/dev/shm') ? 'tmpfs /dev/shm' : 'the temp dir'}, ` +
        `Node ${process.version}, ${os.cpus().length} vCPU, best of ${REPS}; MB/s of uncompressed data, whole-file ` +
        `conversions through the library (read, compress, write). The reference tool side by side, same run: see the section of bench/reference.ts.`,
    );
    lines.push('');
    lines.push(`| config | size ratio | compress 1 thread | compress ${THREADS} threads | × 1 thread | decompress |`);
    lines.push('|---|---|---|---|---|---|');
    for (const [algorithm, blockSize] of CONFIGS) {
      const key = `${algorithm}/${blockSize / 1024}K`;
      const out = path.join(dir, `out-${algorithm}-${blockSize}.zfile`);
      const back = path.join(dir, 'back.bin');
      // One thread and N threads alternate (A B A B …) so both see the same machine load.
      let c1 = Infinity;
      let cN = Infinity;
      for (let i = 0; i < REPS; i++) {
        c1 = Math.min(c1, await timed(() => compressFile(input, out, { algorithm, blockSize, threads: 1 })));
        cN = Math.min(cN, await timed(() => compressFile(input, out, { algorithm, blockSize, threads: THREADS })));
      }
      const size = (await stat(out)).size;
      const d = await best(() => decompressFile(out, back));
      await rm(back);
      const row = [key, `${((100 * size) / total).toFixed(1)} %`, fmt(mb / c1), fmt(mb / cN), ratio(c1, cN), fmt(mb / d)];
      lines.push(`| ${row.join(' | ')} |`);
      process.stderr.write(`${key}: ${row.slice(1).join(' ')}\n`);
    }

    // Random 4 KiB reads: a 64 MiB slice as the "layer", raw vs zfile, alternated A B A B.
    const layerSize = Math.min(64 << 20, total);
    const raw = path.join(dir, 'layer.raw');
    await writeFile(raw, data.subarray(0, layerSize));
    const variants: [string, string | null][] = [['raw file', null]];
    for (const [algorithm, blockSize] of [
      ['lz4', 4096],
      ['zstd', 4096],
      ['lz4', 32768],
      ['zstd', 32768],
    ] as const) {
      const z = path.join(dir, `layer-${algorithm}-${blockSize}.zfile`);
      await compressFile(raw, z, { algorithm, blockSize });
      variants.push([`zfile ${algorithm}/${blockSize / 1024}K`, z]);
    }
    // Pinned to one CPU (JS thread and libuv pool together) so queue-depth-1 latency does not
    // depend on cross-CPU wake-ups (docs/benchmarking.md §2).
    const child = spawnSync('taskset', ['-c', '0', process.execPath, fileURLToPath(import.meta.url), '--iops', raw, ...variants.map(([n, z]) => `${n}=${z ?? ''}`)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pinned = child.status === 0;
    const measured = pinned ? (JSON.parse(child.stdout) as [string, { qd1: number[]; qd16: number[] }][]) : await measureIops(raw, variants);
    const results = new Map(measured);
    const base = results.get('raw file')!;
    lines.push('');
    lines.push(
      `Random aligned 4 KiB reads in process (${layerSize >> 20} MiB layer = the first ${layerSize >> 20} MiB of the input, on tmpfs; ` +
        `ZFileReader with its default 2 MiB block cache vs FileSource on the raw bytes; median of ${ROUNDS} alternated rounds of 0.7 s` +
        `${pinned ? ', process pinned to CPU 0' : ''}).`,
    );
    lines.push('');
    lines.push('| source | qd1 reads/s | × raw | qd16 reads/s | × raw |');
    lines.push('|---|---|---|---|---|');
    for (const [name, r] of results) {
      const q1 = median(r.qd1);
      const q16 = median(r.qd16);
      lines.push(`| ${name} | ${fmt(q1)} | ${ratio(q1, median(base.qd1))} | ${fmt(q16)} | ${ratio(q16, median(base.qd16))} |`);
    }
    await writeResults('zfile', lines.join('\n'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (args[0] === '--iops') {
  const variants = args.slice(2).map((a): [string, string | null] => {
    const eq = a.lastIndexOf('=');
    return [a.slice(0, eq), a.slice(eq + 1) || null];
  });
  process.stdout.write(JSON.stringify(await measureIops(args[1]!, variants)));
} else {
  await main();
}
